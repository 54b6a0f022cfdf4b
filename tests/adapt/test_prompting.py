"""Prompt building, demonstration selection, calibration, the PromptClassifier and scripts/prompt_eval.py."""

import json
import logging

import pytest
import torch

from hfssl import GPTForCausalLM
from hfssl.adapt.calibration import contextual_calibration, expected_calibration_error
from hfssl.adapt.prompt_classifier import PromptClassifier
from hfssl.adapt.prompts import PromptTemplate, get_template, select_demonstrations
from tests.conftest import import_script, tiny_gpt_config

SENTIMENT = get_template("sentiment")


def _classifier(tokenizer, template=SENTIMENT, names=("0", "1"), window=128, **kwargs):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(vocab_size=len(tokenizer), max_position_embeddings=window)).eval()
    return PromptClassifier(model, tokenizer, template, list(names), **kwargs)


def test_prompt_layout():
    demo = SENTIMENT.demonstration("a fine film", "1")
    assert demo == "Review: a fine film\nSentiment: positive"
    context = SENTIMENT.context([demo], "dull")
    assert context == "Review: a fine film\nSentiment: positive\n\nReview: dull\nSentiment:"
    assert SENTIMENT.continuation("negative") == " negative"
    trec = get_template("question_type")
    assert trec.verbalize("DESC:manner") == "description"
    with_instruction = get_template("sentiment", instruction="Classify.")
    assert with_instruction.context([], "x").startswith("Classify.\n\nReview: x")


def test_demonstration_selection():
    labels = [0] * 10 + [1] * 10 + [2] * 4
    a = select_demonstrations(labels, 6, strategy="balanced", seed=3, num_queries=2)
    assert a[0] == a[1] and len(set(a[0])) == 6
    assert sorted(labels[i] for i in a[0]) == [0, 0, 1, 1, 2, 2]
    assert a == select_demonstrations(labels, 6, strategy="balanced", seed=3, num_queries=2)
    assert a != select_demonstrations(labels, 6, strategy="balanced", seed=4, num_queries=2)
    assert select_demonstrations(labels, 0, strategy="random", seed=0, num_queries=3) == [[], [], []]
    pool = torch.eye(4)
    queries = torch.tensor([[0.0, 1.0, 0.2, 0.0], [0.0, 0.0, 0.1, 1.0]])
    nearest = select_demonstrations(
        [0, 1, 0, 1], 2, strategy="nearest", seed=0, pool_embeddings=pool, query_embeddings=queries, num_queries=2
    )
    assert nearest == [[2, 1], [2, 3]]  # most similar last, next to the query
    with pytest.raises(ValueError, match="pool is empty"):
        select_demonstrations([], 2, strategy="random", seed=0)


def test_contextual_calibration_formula():
    probs = torch.tensor([[0.7, 0.3], [0.9, 0.1]], dtype=torch.float64)
    content_free = torch.tensor([[0.8, 0.2], [0.6, 0.4]], dtype=torch.float64)  # mean (0.7, 0.3)
    out = contextual_calibration(probs, content_free)
    expected = torch.tensor(
        [[0.5, 0.5], [0.9 / 0.7 / (0.9 / 0.7 + 0.1 / 0.3), 0.1 / 0.3 / (0.9 / 0.7 + 0.1 / 0.3)]], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected)


def test_expected_calibration_error_by_hand():
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0])
    # bins: (0.9, 1] holds 2 with accuracy 0.5, confidence 0.95; (0.5, 0.6] holds 2 with accuracy 0.5, confidence 0.6
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.1)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert expected_calibration_error(perfect, torch.tensor([0, 1])) == 0.0


def test_scores_equal_with_and_without_prefix_cache(tiny_tokenizer):
    demos = SENTIMENT.demonstration("the cat likes the song", "1"), SENTIMENT.demonstration("a dog forgets", "0")
    queries = ["the old man finds a letter", "my sister", "the river calls the ship"]
    cached = _classifier(tiny_tokenizer).score(queries, [list(demos)] * 3, calibrate=True)
    full = _classifier(tiny_tokenizer, use_prefix_cache=False).score(queries, [list(demos)] * 3, calibrate=True)
    torch.testing.assert_close(cached.loglik, full.loglik, atol=1e-4, rtol=0)
    torch.testing.assert_close(cached.calibrated, full.calibrated, atol=1e-4, rtol=0)
    assert cached.loglik.shape == (3, 2) and cached.num_demonstrations == [2, 2, 2]
    torch.testing.assert_close(cached.probs.sum(-1), torch.ones(3, dtype=torch.float64))
    assert not torch.allclose(cached.calibrated, cached.probs)


def test_too_long_prompts_drop_demonstrations_never_the_query(tiny_tokenizer, caplog):
    classifier = _classifier(tiny_tokenizer, window=100)
    long_demo = SENTIMENT.demonstration("the cat likes the song and the dog", "1")
    with caplog.at_level(logging.WARNING):
        scores = classifier.score(["a dog"], [[long_demo] * 4])
    assert 0 < scores.num_demonstrations[0] < 4
    assert "dropping demonstrations" in caplog.text
    with pytest.raises(ValueError, match="even with no demonstrations"):
        classifier.score(["the cat sees the house " * 20], [[]])


def test_bad_verbalizers(tiny_tokenizer):
    with pytest.raises(ValueError, match="missing from the verbalizer"):
        _classifier(tiny_tokenizer, names=("0", "2"))
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        _classifier(tiny_tokenizer, template=PromptTemplate(verbalizer={"0": "no", "1": ""}))
    with pytest.raises(ValueError, match="same answer word"):
        _classifier(tiny_tokenizer, template=PromptTemplate(verbalizer={"0": "yes", "1": "yes"}))


def test_open_answer_presets_use_each_label_as_its_own_word():
    qa = get_template("question_answer")
    assert qa.verbalize("1001") == "1001" and qa.demonstration("12 + 3?", "15") == "Q: 12 + 3?\nA: 15"
    assert get_template("key_value").verbalize("w") == "w"
    assert get_template("question_answer", verbalizer={"yes": "Yes"}).verbalize("yes") == "Yes"  # a verbalizer wins
    with pytest.raises(ValueError, match="missing from the verbalizer"):
        get_template("sentiment").verbalize("1001")


def test_parse_and_generate(tiny_tokenizer):
    classifier = _classifier(tiny_tokenizer)
    assert classifier.parse_answer(" Positive, clearly") == 1
    assert classifier.parse_answer("negative") == 0
    assert classifier.parse_answer(" maybe") == -1
    # an answer that is a sentence: the label word it names first, as a whole word
    assert classifier.parse_answer("The sentiment of this review is positive.") == 1
    assert classifier.parse_answer("Not positive at all: negative") == 1
    assert classifier.parse_answer("nonnegative") == -1
    texts, predictions = classifier.generate(["a dog", "the cat likes the song"], [[], []], max_new_tokens=3)
    assert len(texts) == 2 and all(p in (-1, 0, 1) for p in predictions)
    assert predictions == [classifier.parse_answer(t) for t in texts]


@pytest.mark.parametrize("extra", [["--calibrate"], ["--strategy", "nearest"], ["--mode", "generate"]])
def test_prompt_eval_cli(gpt_dir, sentiment_file, tmp_path, capsys, extra):
    out = tmp_path / "results.json"
    code = import_script("prompt_eval").main(
        [
            "--model_name_or_path",
            str(gpt_dir),
            "--dataset",
            str(sentiment_file),
            "--shots",
            "0,2",
            "--num_seeds",
            "2",
            "--output_file",
            str(out),
            "--per_device_eval_batch_size",
            "8",
            *extra,
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results["shots"]) == {"0", "2"}
    assert results["num_queries"] == 24 and results["num_pool"] == 24
    assert len(results["shots"]["0"]["accuracy"]["runs"]) == 1
    assert len(results["shots"]["2"]["accuracy"]["runs"]) == (1 if "nearest" in extra else 2)
    if "--calibrate" in extra:
        assert "accuracy_calibrated" in results["shots"]["2"] and "ece_calibrated" in results["shots"]["2"]
    assert "| k |" in capsys.readouterr().out


def test_prompt_eval_cli_errors(gpt_dir, sentiment_file, tmp_path, capsys):
    main = import_script("prompt_eval").main
    assert main(["--model_name_or_path", str(gpt_dir), "--dataset", str(sentiment_file), "--verbalizer", "0=bad"]) == 2
    assert "missing from the verbalizer" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert (
        main(["--model_name_or_path", str(gpt_dir), "--dataset", str(sentiment_file), "--demos_dataset", str(empty)])
        == 2
    )
    assert "error:" in capsys.readouterr().err
    assert main(["--model_name_or_path", str(tmp_path / "nothing"), "--dataset", str(sentiment_file)]) == 2
    assert "Could not load" in capsys.readouterr().err


def test_question_type_preset_merges_trec_fine_labels(gpt_dir, tmp_path):
    """TREC files label 'DESC:manner', 'DESC:def', ...: the question_type preset scores the 6 coarse classes."""
    fine = ["ABBR:exp", "DESC:def", "DESC:manner", "ENTY:animal", "HUM:ind", "LOC:city", "NUM:date", "NUM:count"]
    data = tmp_path / "trec.txt"
    data.write_text("\n".join(f"{label} what is question {i} ?" for i in range(4) for label in fine) + "\n")
    out = tmp_path / "results.json"
    argv = ["--model_name_or_path", str(gpt_dir), "--dataset", str(data), "--preset", "question_type", "--shots", "0,2"]
    assert import_script("prompt_eval").main([*argv, "--output_file", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["num_queries"] == 16 and set(results["shots"]) == {"0", "2"}
    assert merged_names(data) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def merged_names(path) -> list[str]:
    from hfssl.data.labelled import load_labelled

    data = load_labelled(str(path)).merged_by_key(":")
    assert len(data) == 32 and data.labels.max().item() == 5
    return data.names
