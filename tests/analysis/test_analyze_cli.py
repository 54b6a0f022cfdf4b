"""scripts/analyze.py induction on a tiny saved GPT, and prompt_eval.py --ablate_heads."""

import json

import pytest

from tests.conftest import import_script

ALL_HEADS = ",".join(f"{layer}.{head}" for layer in range(2) for head in range(4))  # the tiny GPT: 2 layers x 4 heads


def test_analyze_induction_writes_table_json_and_heatmap(gpt_dir, corpus_file, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "induction"
    argv = ["induction", "--model_name_or_path", str(gpt_dir), "--output_dir", str(out), "--seq_len", "12"]
    icl = ["--icl_dataset", str(corpus_file), "--icl_early", "4", "--icl_late", "30", "--num_bootstrap", "50"]
    assert import_script("analyze").main([*argv, "--top_k", "3", *icl]) == 0
    printed = capsys.readouterr().out
    assert "| rank | head (layer.head) | prefix matching | copying (direct, logit) |" in printed
    assert "In-context learning score" in printed
    record = json.loads((out / "induction.json").read_text())
    assert (record["num_layers"], record["num_heads"], record["seq_len"]) == (2, 4, 12)
    assert len(record["prefix_matching"]) == 2 and len(record["prefix_matching"][0]) == 4
    assert len(record["top_heads"]) == 3 and all(row["copying"] is not None for row in record["top_heads"])
    assert record["icl"]["late"] == 30 and record["icl"]["low"] <= record["icl"]["score"] <= record["icl"]["high"]
    assert (out / "induction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a random model: every head near uniform attention
    assert all(abs(v - record["chance"]) < 0.1 * record["chance"] for row in record["prefix_matching"] for v in row)


def test_analyze_bad_input_is_one_error_line(gpt_dir, tmp_path, capsys):
    main = import_script("analyze").main
    base = ["induction", "--model_name_or_path", str(gpt_dir), "--no_heatmap"]
    short = tmp_path / "short.txt"
    short.write_text("a few words\n")
    icl = ["--icl_dataset", str(short), "--icl_early", "5", "--icl_late", "30", "--seq_len", "5"]
    cases = [
        ([*base, "--output_dir", str(tmp_path / "e"), *icl], "fewer than one block"),
        ([*base, "--output_dir", str(tmp_path / "a"), "--seq_len", "40"], "longer than the model's context window"),
        ([*base, "--output_dir", str(tmp_path / "b"), "--copying_heads", "some"], "--copying_heads"),
        ([*base, "--output_dir", str(tmp_path / "b"), "--copying_method", "eigen"], "--copying_method"),
        (["--model_name_or_path", str(gpt_dir)], "name an analysis first"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main([*base, "--output_dir", str(tmp_path / "c"), "--copying_heads", "none", "--seq_len", "5"]) == 0
    record = json.loads((tmp_path / "c" / "induction.json").read_text())
    assert record["copying"] is None and not (tmp_path / "c" / "induction.png").exists()
    # ablation, for the 2 best heads only
    argv = [*base, "--output_dir", str(tmp_path / "d"), "--copying_method", "ablation", "--copying_heads", "2"]
    assert main([*argv, "--seq_len", "5"]) == 0
    assert "copying (ablation, nats)" in capsys.readouterr().out
    record = json.loads((tmp_path / "d" / "induction.json").read_text())
    assert sum(v is not None for row in record["copying"] for v in row) == 2


def _prompt_eval(gpt_dir, sentiment_file, out, *extra) -> dict:
    argv = ["--model_name_or_path", str(gpt_dir), "--dataset", str(sentiment_file), "--shots", "0,2"]
    code = import_script("prompt_eval").main([*argv, "--num_seeds", "1", "--output_file", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_prompt_eval_ablating_every_head_changes_the_scores(gpt_dir, sentiment_file, tmp_path):
    plain = _prompt_eval(gpt_dir, sentiment_file, tmp_path / "plain.json")
    ablated = _prompt_eval(gpt_dir, sentiment_file, tmp_path / "ablated.json", "--ablate_heads", ALL_HEADS)
    assert plain["args"]["ablate_heads"] is None and ablated["args"]["ablate_heads"] == ALL_HEADS
    runs = lambda result: [result["shots"][k][m]["runs"] for k in ("0", "2") for m in ("ece", "accuracy_norm")]  # noqa: E731
    assert runs(plain) != runs(ablated)


@pytest.mark.parametrize(("heads", "message"), [("0.1,0.1", "twice"), ("2.0", "does not exist"), ("0-1", "layer.head")])
def test_prompt_eval_bad_ablation_is_one_error_line(gpt_dir, sentiment_file, heads, message, capsys):
    argv = ["--model_name_or_path", str(gpt_dir), "--dataset", str(sentiment_file), "--ablate_heads", heads]
    assert import_script("prompt_eval").main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors


def test_a_model_that_returns_no_attentions_is_one_error_line(gpt_dir, tmp_path, capsys, monkeypatch):
    """`scripts/analyze.py` on a model whose forward drops output_attentions (as an hfssl GPT file from before the
    analysis did, loaded with trust_remote_code): one error line, exit code 2, nothing written."""
    from hfssl import GPTForCausalLM

    forward = GPTForCausalLM.forward
    monkeypatch.setattr(
        GPTForCausalLM, "forward", lambda self, *a, output_attentions=None, **kw: forward(self, *a, **kw)
    )
    out = tmp_path / "out"
    argv = ["induction", "--model_name_or_path", str(gpt_dir), "--output_dir", str(out), "--seq_len", "5"]
    assert import_script("analyze").main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "returned no attention probabilities" in err[-1]
    assert not (out / "induction.json").exists()
