"""Every fine-tuning method on tiny models, table-driven over (method x model): what trains and what must not."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hfssl.adapt.classifier import Batcher, head_inputs, load_classifier
from hfssl.adapt.finetune import FinetuneArguments, _prepare_trainable, run_finetune
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe
from hfssl.adapt.task import load_task
from hfssl.models.helpers import classification_head
from tests.conftest import import_script

finetune = import_script("finetune")


def _args(kind, method, tmp_path, gpt_dir, simclr_dir, sentiment_file, **extra):
    model, data = (gpt_dir, sentiment_file) if kind == "gpt" else (simclr_dir, "digits")
    base = dict(
        model_name_or_path=str(model),
        dataset=str(data),
        output_dir=str(tmp_path / f"{kind}-{method}"),
        method=method,
        num_labels_per_class=4,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
    )
    return FinetuneArguments(**{**base, **extra})


# (model, method) -> which parameters may change
CASES = [
    ("gpt", "full"),
    ("gpt", "lp-ft"),
    ("gpt", "surgical"),
    ("gpt", "lora"),
    ("simclr", "full"),
    ("simclr", "lp-ft"),
    ("simclr", "surgical"),
    ("simclr", "lora"),
]


@pytest.mark.parametrize("kind, method", CASES)
def test_methods_train_exactly_what_they_should(
    kind, method, tmp_path, gpt_dir, simclr_dir, sentiment_file, monkeypatch
):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    args = _args(kind, method, tmp_path, gpt_dir, simclr_dir, sentiment_file)
    result = run_finetune(args)
    changed = set(result.changed_parameters)
    head = {"score.weight", "score.bias"} if kind == "gpt" else {"classifier.weight", "classifier.bias"}
    assert 0.0 <= result.accuracy <= 1.0 and result.num_train == (8 if kind == "gpt" else 40)
    if method in ("full", "lp-ft"):
        assert head <= changed and len(changed) > len(head)  # body and head moved
    elif method == "surgical":  # only the last block and the head
        block = "model.layers.1." if kind == "gpt" else "encoder.stages.1."
        assert head <= changed and any(n.startswith(block) for n in changed)
        assert all(n in head or n.startswith(block) for n in changed), changed
    else:  # lora: the base weights are untouched; only adapters and the (saved) head train
        assert changed == set(), changed
        assert result.trainable_parameters < 0.5 * result.total_parameters
        out = Path(args.output_dir)
        assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
        saved = load_file(str(out / "adapter_model.safetensors"))
        assert any("lora_A" in k for k in saved) and any(k.split(".")[-2] in ("score", "classifier") for k in saved)
    assert json.loads((Path(args.output_dir) / "metrics.json").read_text())["method"] == method


@pytest.mark.parametrize("kind", ["gpt", "simclr"])
def test_lp_ft_starts_from_the_probed_head(kind, tmp_path, gpt_dir, simclr_dir, sentiment_file):
    args = _args(kind, "lp-ft", tmp_path, gpt_dir, simclr_dir, sentiment_file)
    from transformers import AutoConfig

    task = load_task(args, AutoConfig.from_pretrained(args.model_name_or_path))
    model = load_classifier(args, task)
    batcher = Batcher(args, task, model)
    model = _prepare_trainable(args, model, batcher, task)
    features = head_inputs(model, batcher, task.train_x, args.per_device_eval_batch_size)
    probe = fit_linear_probe(features, task.train_y, len(task.names), LinearProbeConfig(seed=args.seed))
    head = classification_head(model)
    torch.testing.assert_close(head.weight, probe.weight)
    torch.testing.assert_close(head.bias, probe.bias)


def test_surgical_by_name_and_bad_block(tmp_path, gpt_dir, simclr_dir, sentiment_file, capsys):
    args = _args("gpt", "surgical", tmp_path, gpt_dir, simclr_dir, sentiment_file, surgical_blocks=["model.layers.0"])
    result = run_finetune(args)
    assert all(n.startswith("model.layers.0.") or n.startswith("score.") for n in result.changed_parameters)
    argv = [
        "--model_name_or_path",
        str(gpt_dir),
        "--dataset",
        str(sentiment_file),
        "--method",
        "surgical",
        "--surgical_blocks",
        "7",
        "--output_dir",
        str(tmp_path / "x"),
        "--num_train_epochs",
        "1",
    ]
    assert finetune.main(argv) == 2
    assert "Block 7 does not exist" in capsys.readouterr().err


def test_lora_merged_model_reloads(tmp_path, gpt_dir, simclr_dir, sentiment_file):
    from transformers import AutoModelForSequenceClassification

    args = _args("gpt", "lora", tmp_path, gpt_dir, simclr_dir, sentiment_file, merge_lora=True)
    run_finetune(args)
    merged = AutoModelForSequenceClassification.from_pretrained(args.output_dir)
    assert not any("lora" in n for n, _ in merged.named_parameters())


@pytest.mark.parametrize("method", ["full", "lp-ft", "lora"])
def test_any_transformers_model(method, tmp_path, gpt2_dir, sentiment_file):
    """GPT2ForSequenceClassification (bias-free head that scores every position) goes through the same code."""
    args = FinetuneArguments(
        model_name_or_path=str(gpt2_dir),
        dataset=str(sentiment_file),
        method=method,
        output_dir=str(tmp_path / method),
        num_labels_per_class=4,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
    )
    result = run_finetune(args)
    changed = set(result.changed_parameters)
    if method == "lora":
        assert changed == set() and (tmp_path / method / "adapter_model.safetensors").is_file()
    else:
        assert "score.weight" in changed and any(n.startswith("transformer.h.") for n in changed)


def test_text_longer_than_the_context_is_an_error(tmp_path, gpt_dir, capsys):
    long_file = tmp_path / "long.txt"
    long_file.write_text(
        "1 short and fine\n0 "
        + "the king forgets the song " * 40
        + "\n" * 1
        + "".join(f"{i % 2} words {i}\n" for i in range(20))
    )
    argv = [
        "--model_name_or_path",
        str(gpt_dir),
        "--dataset",
        str(long_file),
        "--eval_dataset",
        str(long_file),
        "--method",
        "full",
        "--num_train_epochs",
        "1",
        "--output_dir",
        str(tmp_path / "o"),
    ]
    assert finetune.main(argv) == 2
    assert "more than the model's context window (64)" in capsys.readouterr().err


def test_cli_rejects_unknown_method(tmp_path, gpt_dir, sentiment_file, capsys):
    argv = ["--model_name_or_path", str(gpt_dir), "--dataset", str(sentiment_file), "--method", "magic"]
    assert finetune.main(argv) == 2
    assert "--method must be one of" in capsys.readouterr().err
