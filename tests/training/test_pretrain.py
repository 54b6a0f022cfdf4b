"""scripts/pretrain.py end to end: smoke run, bad input, resume after a crash, non-finite loss, 2 processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfssl.training import causal_lm
from hfssl.training.loop import NonFiniteLossError
from tests.conftest import REPO, TINY_LM_FLAGS, import_script, why_failed, with_flags

SCRIPT = REPO / "scripts" / "pretrain.py"
CRASH_AT_STEP = REPO / "tests" / "helpers" / "crash_at_step.py"  # kills the run when a given step begins
pretrain = import_script("pretrain")

TINY = [
    *TINY_LM_FLAGS,
    *"--learning_rate 3e-3 --warmup_ratio 0.1 --logging_steps 1 --sample_max_new_tokens 8".split(),
    *"--eval_split_fraction 0.1".split(),
]
WARMUP = ["--icl_warmup_block_size", "8", "--icl_warmup_steps"]  # + the number of warm-up steps


def _args(corpus, out, *extra):
    return with_flags(["--dataset", str(corpus), "--output_dir", str(out), *TINY], *extra)


def _env():
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1"
    )
    return env


def _weights(out):
    return load_file(str(Path(out) / "model.safetensors"))


def test_smoke_run_produces_a_loadable_model(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    assert pretrain.main(_args(corpus_file, out, "--max_steps", "12", "--eval_steps", "6", "--save_steps", "6")) == 0
    printed = capsys.readouterr().out
    assert f"Model saved to {out}" in printed and "Sample:" in printed
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "hfssl_gpt" and model.config.vocab_size == len(tokenizer) == 300
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert len(losses) == 12 and losses[-1] < losses[0]  # it learned something
    assert {"eval_loss", "eval_perplexity"} <= set(metrics["final"])
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000006"]  # final step is the model itself
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["max_steps"] == 12 and run_args["num_processes"] == 1


def test_yaml_recipe_and_flag_override(tmp_path, corpus_file):
    from hfssl.training.arguments import parse_pretrain_args

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 7\nlearning_rate: 0.01\nhidden_size: 64\n")
    train = parse_pretrain_args(["--config", str(recipe), "--learning_rate", "0.02"])
    assert train.max_steps == 7 and train.learning_rate == 0.02
    recipe.write_text("max_stepz: 7\n")
    with pytest.raises(ValueError, match="max_stepz"):
        parse_pretrain_args(["--config", str(recipe)])


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_file", "not found"),
        ("empty_corpus", "no non-empty text"),
        ("missing_column", "no column 'text'"),
        ("block_too_long", "longer than max_position_embeddings"),
        ("corpus_too_small", "fewer than one block"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path, corpus_file, capsys, case, message):
    corpus, extra = corpus_file, []
    if case == "missing_file":
        corpus = tmp_path / "does_not_exist.txt"
    elif case == "empty_corpus":
        corpus = tmp_path / "empty.txt"
        corpus.write_text("\n\n")
    elif case == "missing_column":
        corpus = tmp_path / "c.jsonl"
        corpus.write_text(json.dumps({"body": "some text here"}) + "\n")
    elif case == "block_too_long":
        extra = ["--block_size", "128"]
    elif case == "corpus_too_small":
        corpus = tmp_path / "small.txt"
        corpus.write_text("One short line.\n")
        extra = ["--eval_split_fraction", "0"]
    assert pretrain.main(_args(corpus, tmp_path / "out", "--max_steps", "2", *extra)) == 2
    err = capsys.readouterr().err
    assert "error: " in err and message in err and "Traceback" not in err


def test_refuses_to_mix_runs_in_one_output_dir(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    assert pretrain.main(_args(corpus_file, out, "--max_steps", "4", "--save_steps", "2")) == 0
    assert pretrain.main(_args(corpus_file, out, "--max_steps", "4")) == 2
    assert "--resume_from_checkpoint latest" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, corpus_file, monkeypatch):
    calls = {"n": 0}
    real_loss = causal_lm.CausalLMObjective.training_loss

    def loss_that_explodes_at_step_5(self, model, batch):
        calls["n"] += 1
        loss = real_loss(self, model, batch)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(causal_lm.CausalLMObjective, "training_loss", loss_that_explodes_at_step_5)
    from hfssl.training.arguments import parse_pretrain_args
    from hfssl.training.loop import run_pretraining

    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step 5.*Last good checkpoint: .*step-000004"):
        run_pretraining(parse_pretrain_args(_args(corpus_file, out, "--max_steps", "10", "--save_steps", "2")))
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")) == [
        "step-000002",
        "step-000004",
    ]
    assert not (out / "model.safetensors").exists()  # nothing poisoned was saved as the final model


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_final_weights(tmp_path, corpus_file):
    """Run A goes straight through; run B is killed (os._exit, no cleanup) at step 6 and resumed.

    5 in-context warm-up steps come first: B resumes inside the warm-up (step 4) and crosses into the corpus.
    """
    common = [
        "--max_steps",
        "14",  # 5 warm-up + 9 corpus steps
        "--save_steps",
        "4",
        "--dropout",
        "0.1",
        "--gradient_accumulation_steps",
        "2",
        *WARMUP,
        "5",
    ]

    def run(out, *extra, crash_at=None):
        args = _args(corpus_file, out, *common, *extra)
        launcher = [str(CRASH_AT_STEP), str(crash_at)] if crash_at else []
        return subprocess.run(
            [sys.executable, *launcher, str(SCRIPT), *args], env=_env(), capture_output=True, text=True, cwd=REPO
        )

    straight = run(tmp_path / "a")
    assert straight.returncode == 0, why_failed(straight)
    crashed = run(tmp_path / "b", crash_at=6)
    assert crashed.returncode == 17, why_failed(crashed)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-000004"]
    resumed = run(tmp_path / "b", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, why_failed(resumed)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    hist_a = json.loads((tmp_path / "a" / "metrics.json").read_text())["log_history"]
    hist_b = json.loads((tmp_path / "b" / "metrics.json").read_text())["log_history"]
    losses = lambda h: [(e["step"], round(e["loss"], 5)) for e in h if "loss" in e]  # noqa: E731
    assert losses(hist_a) == losses(hist_b)  # the same data order and schedule, step by step


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, corpus_file):
    """2 gloo processes x batch 2 give the same losses and weights as 1 process x batch 4 (warm-up included)."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"

    def launch(out, launcher, batch):
        args = _args(
            corpus_file,
            out,
            "--max_steps",
            "8",  # 2 warm-up + 6 corpus steps
            "--eval_steps",
            "3",
            "--per_device_train_batch_size",
            str(batch),
            *WARMUP,
            "2",
        )
        result = subprocess.run(
            [*launcher, str(SCRIPT), *args], env=_env(), capture_output=True, text=True, cwd=REPO, timeout=600
        )
        assert result.returncode == 0, why_failed(result, 3000)
        return json.loads((out / "metrics.json").read_text()), json.loads((out / "run_args.json").read_text())

    one, one_args = launch(tmp_path / "one", [accelerate, "launch", "--num_processes", "1", "--cpu"], 4)
    two, two_args = launch(tmp_path / "two", [accelerate, "launch", "--multi_gpu", "--num_processes", "2"], 2)
    assert (one_args["num_processes"], two_args["num_processes"]) == (1, 2)
    loss = lambda m: [e["loss"] for e in m["log_history"] if "loss" in e]  # noqa: E731
    assert len(loss(one)) == 2 + 6
    torch.testing.assert_close(torch.tensor(loss(two)), torch.tensor(loss(one)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        torch.tensor(two["final"]["eval_loss"]), torch.tensor(one["final"]["eval_loss"]), rtol=1e-5, atol=1e-5
    )
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)


def test_unreachable_hub_dataset_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert pretrain.main(["--dataset", "someone/no_such_corpus", "--output_dir", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "Could not load Hub dataset someone/no_such_corpus" in err and "Traceback" not in err


def test_bf16_mixed_precision_runs(tmp_path, corpus_file):
    out = tmp_path / "run"
    assert pretrain.main(_args(corpus_file, out, "--max_steps", "3", "--mixed_precision", "bf16")) == 0
    assert (out / "model.safetensors").is_file()


def test_continue_pretraining_any_causal_lm_with_its_tokenizer(tmp_path, corpus_file, gpt2_dir, tiny_tokenizer):
    """--model_name_or_path takes any AutoModelForCausalLM (here GPT-2) and its tokenizer."""
    base = gpt2_dir
    out = tmp_path / "run"
    assert pretrain.main(_args(corpus_file, out, "--max_steps", "3", "--model_name_or_path", str(base))) == 0
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "gpt2"
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tiny_tokenizer.get_vocab()


def test_existing_tokenizer_is_reused(tmp_path, corpus_file, tiny_tokenizer):
    tokenizer_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tokenizer_dir)
    out = tmp_path / "run"
    assert (
        pretrain.main(
            _args(
                corpus_file,
                out,
                "--max_steps",
                "2",
                "--tokenizer_name_or_path",
                str(tokenizer_dir),
                "--vocab_size",
                "999",
            )
        )
        == 0
    )
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tiny_tokenizer.get_vocab()
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == 300


def test_shipped_recipe_parses():
    from hfssl.training.arguments import parse_pretrain_args

    args = parse_pretrain_args(["--config", str(REPO / "recipes" / "gpt_small.yaml"), "--max_steps", "10"])
    assert (args.hidden_size, args.block_size, args.gradient_accumulation_steps, args.max_steps) == (384, 256, 2, 10)


def test_in_context_warmup_comes_first_with_its_own_batches_and_schedule(tmp_path, corpus_file, monkeypatch):
    """3 warm-up steps of key -> value blocks (8 tokens, batch 4 x 16 / 8 = 8), then 5 corpus steps of 16 x 4."""
    from hfssl.training.arguments import parse_pretrain_args
    from hfssl.training.loop import run_pretraining

    seen = []
    original = causal_lm.CausalLMObjective.training_loss

    def recording_loss(self, model, batch):
        seen.append((tuple(batch["input_ids"].shape), self.tokenizer.decode(batch["input_ids"][0])))
        return original(self, model, batch)

    monkeypatch.setattr(causal_lm.CausalLMObjective, "training_loss", recording_loss)
    out = tmp_path / "run"
    result = run_pretraining(
        parse_pretrain_args(
            _args(corpus_file, out, "--max_steps", "8", "--save_steps", "0", "--warmup_ratio", "0.4", *WARMUP, "3")
        )
    )
    assert result.global_step == 3 + 5
    assert [shape for shape, _ in seen] == [(8, 8)] * 3 + [(4, 16)] * 5
    from hfssl.data.synthetic import VALUES

    assert all(any(v in text for v in VALUES) for _, text in seen[:3])  # `key value` lines
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    rates = [e["learning_rate"] for e in history if "learning_rate" in e]
    peak = 3e-3
    # warm-up phase: ramp over int(0.4 * 3) = 1 step, then the peak; corpus: ramp over int(0.4 * 5) = 2 steps
    # (rates are logged after the step, i.e. the next step's rate)
    assert rates[:3] == pytest.approx([peak, peak, 0.0])
    assert rates[3] == pytest.approx(peak / 2) and rates[4] == pytest.approx(peak)
    assert rates[-1] == pytest.approx(0.0) and rates[5] < peak


def test_in_context_defaults_and_bad_settings():
    from hfssl.training.arguments import parse_pretrain_args

    args = parse_pretrain_args([])  # the main command: 2,500 warm-up steps of a 5,000-step run
    assert (args.icl_warmup_steps, args.max_steps, args.learning_rate) == (2500, 5000, 1e-3)
    args = parse_pretrain_args(["--model_name_or_path", "gpt2"])  # continuing a trained model: no warm-up
    assert args.icl_warmup_steps == 0
    args = parse_pretrain_args(["--objective", "contrastive"])
    assert (getattr(args, "icl_warmup_steps", 0), args.max_steps, args.learning_rate) == (0, 500, 2e-3)
    for flags, message in [
        (["--objective", "contrastive", "--icl_warmup_steps", "5"], "causal_lm only"),
        (["--icl_mix_fraction", "1"], "icl_mix_fraction"),
        (["--icl_warmup_block_size", "512"], "icl_warmup_block_size"),
        (["--icl_warmup_steps", "-1"], ">= 0"),
        (["--icl_warmup_ratio", "1.5"], "icl_warmup_ratio"),
        (["--max_steps", "6", "--icl_warmup_steps", "6"], "leaves no step of --max_steps 6 for the corpus"),
        (["--max_steps", "0", "--num_train_epochs", "1", "--icl_warmup_ratio", "0.5"], "give the warm-up as"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_pretrain_args(flags)


def test_max_steps_counts_the_whole_run_warm_up_included():
    """--max_steps 6 on a fresh GPT is a 6-step run (it was 2,506: the warm-up came on top); the warm-up is part of
    it: the default count (at most half), a share, or the count given."""
    from hfssl.training.arguments import parse_pretrain_args

    assert parse_pretrain_args(["--max_steps", "6"]).icl_warmup_steps == 3  # at most half the run by default
    assert parse_pretrain_args(["--max_steps", "8000"]).icl_warmup_steps == 2500  # more steps: the same warm-up
    epochs = parse_pretrain_args(["--max_steps", "0", "--num_train_epochs", "1"])
    assert epochs.icl_warmup_steps == 2500  # by epochs: the warm-up comes before them
    assert parse_pretrain_args(["--max_steps", "10", "--icl_warmup_ratio", "0.2"]).icl_warmup_steps == 2
    assert (
        parse_pretrain_args(
            ["--max_steps", "10", "--icl_warmup_steps", "7", "--icl_warmup_ratio", "0.2"]
        ).icl_warmup_steps
        == 7
    )


def test_mixed_in_documents_make_up_the_requested_share(corpus_docs):
    import datasets

    from hfssl.training.arguments import parse_pretrain_args

    objective = causal_lm.CausalLMObjective(parse_pretrain_args(["--icl_mix_fraction", "0.25"]))
    corpus = datasets.Dataset.from_dict({"text": corpus_docs})
    mixed = objective._mix_in_key_value(corpus)
    synthetic_chars = sum(len(t) for t in list(mixed["text"])[len(corpus) :])
    corpus_chars = sum(len(t) for t in corpus_docs)
    assert list(mixed["text"])[: len(corpus)] == list(corpus_docs)
    assert synthetic_chars / (synthetic_chars + corpus_chars) == pytest.approx(0.25, abs=0.02)
