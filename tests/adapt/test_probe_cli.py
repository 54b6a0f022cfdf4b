"""scripts/probe.py end to end on tiny saved models: text (GPT) and images (SimCLR)."""

import json

import pytest
import torch
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    ViTImageProcessor,
)

from hfssl import SimCLRConfig, SimCLRModel
from hfssl.adapt.features import text_features
from tests.conftest import import_script, with_flags

probe = import_script("probe")


def test_text_probe_saves_a_classifier_equal_to_the_probe(tmp_path, gpt_dir, sentiment_file, monkeypatch, capsys):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "probe"
    argv = [
        "--model_name_or_path",
        str(gpt_dir),
        "--dataset",
        str(sentiment_file),
        "--output_dir",
        str(out),
        "--num_labels_per_class",
        "8",
    ]
    assert probe.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] == 16 and metrics["labels"] == ["0", "1"] and metrics["feature_cache_hits"] == 0
    assert 0 <= metrics["accuracy"] <= 1 and metrics["saved"] == "GPTForSequenceClassification"
    # the saved classifier computes exactly probe(features): same c_T, same head
    classifier = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ["good and fine 3", "a dull bad film 1 and more words"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    logits = classifier(**enc).logits
    import safetensors.torch as st
    from transformers import AutoModel

    base = AutoModel.from_pretrained(gpt_dir)
    feats = text_features(base, tokenizer, texts)
    weights = st.load_file(str(out / "model.safetensors"))
    torch.testing.assert_close(logits, feats @ weights["score.weight"].T + weights["score.bias"], atol=1e-4, rtol=1e-4)
    assert classifier.config.id2label == {0: "0", 1: "1"}
    # a second run reuses both cached feature sets
    assert probe.main(with_flags(argv, "--output_dir", str(tmp_path / "probe2"))) == 0
    assert json.loads((tmp_path / "probe2" / "metrics.json").read_text())["feature_cache_hits"] == 2


def test_image_probe_on_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    model_dir, out = tmp_path / "simclr", tmp_path / "probe"
    torch.manual_seed(0)
    SimCLRModel(SimCLRConfig(image_size=8, resnet_layers=[1], resnet_widths=[8], projection_dims=[8])).save_pretrained(
        model_dir
    )
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.3] * 3, image_std=[0.4] * 3).save_pretrained(
        model_dir
    )
    assert (
        probe.main(
            [
                "--model_name_or_path",
                str(model_dir),
                "--dataset",
                "digits",
                "--output_dir",
                str(out),
                "--num_labels_per_class",
                "10",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] == 100 and metrics["accuracy"] > 0.3  # random conv features already beat 10% chance
    classifier = AutoModelForImageClassification.from_pretrained(out)
    assert classifier.config.num_labels == 10


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_labels_per_class", "1000"], "larger than class"),
        (["--label_column", "missing"], "no column 'missing'"),
    ],
)
def test_probe_bad_input(tmp_path, gpt_dir, sentiment_file, capsys, extra, message):
    argv = ["--model_name_or_path", str(gpt_dir), "--dataset", str(sentiment_file), "--output_dir", str(tmp_path / "o")]
    assert probe.main(argv + extra) == 2
    assert message in capsys.readouterr().err
