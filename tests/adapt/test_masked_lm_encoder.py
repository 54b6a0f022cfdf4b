"""Adaptation on an encoder saved by `--objective masked_lm` (a BertForMaskedLM with no pooler): probe with mean and
[CLS] pooling, every fine-tuning method (LoRA with peft's default targets for BERT), meta-learning, the model card."""

import json

import pytest
from transformers import AutoModelForSequenceClassification

from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.hub.card import build_model_card
from tests.conftest import import_script

TINY_MLM = (
    "--objective masked_lm --vocab_size 300 --hidden_size 32 --num_hidden_layers 2 --num_attention_heads 4 "
    "--max_position_embeddings 64 --block_size 16 --per_device_train_batch_size 4 --report_to none --max_steps 4 "
    "--pll_samples 1"
).split()


@pytest.fixture
def mlm_dir(tmp_path, corpus_file):
    out = tmp_path / "bert-mlm"
    assert import_script("pretrain").main(["--dataset", str(corpus_file), "--output_dir", str(out), *TINY_MLM]) == 0
    return out


@pytest.mark.parametrize("pooling, recorded", [("mean", "mean"), ("cls", "cls"), ("first", "cls")])  # first: old name
def test_probe_reads_the_encoder_with_mean_or_cls_pooling(mlm_dir, sentiment_file, tmp_path, pooling, recorded):
    out = tmp_path / f"probe-{pooling}"
    argv = ["--model_name_or_path", str(mlm_dir), "--dataset", str(sentiment_file), "--output_dir", str(out)]
    assert import_script("probe").main([*argv, "--pooling", pooling, "--num_labels_per_class", "4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["args"]["pooling"] == recorded


@pytest.mark.parametrize("method", ["full", "lp-ft", "surgical", "lora"])
def test_every_fine_tuning_method_trains_the_encoder(mlm_dir, sentiment_file, tmp_path, method, caplog):
    """[CLS] pooling through BERT's pooler, which the masked-LM checkpoint lacks: it is new, like the classifier."""
    args = FinetuneArguments(
        model_name_or_path=str(mlm_dir),
        dataset=str(sentiment_file),
        method=method,
        output_dir=str(tmp_path / method),
        num_labels_per_class=4,
        num_train_epochs=1,
        surgical_blocks=["last"],
    )
    with caplog.at_level("INFO"):
        result = run_finetune(args)
    assert any("holds no weights for bert.pooler, classifier" in r.getMessage() for r in caplog.records)
    changed = set(result.changed_parameters)
    if method == "lora":  # peft's default targets for BERT: the query and value projections
        adapter = json.loads((tmp_path / method / "adapter_config.json").read_text())
        assert set(adapter["target_modules"]) == {"query", "value"} and changed == set()
        assert {"classifier", "bert.pooler"} <= set(adapter["modules_to_save"])  # the new pooler trains too
    elif method == "surgical":
        assert changed and all(n.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier.")) for n in changed)
        assert "bert.pooler.dense.weight" in changed  # a new pooler is trained, not left random
    else:
        assert "classifier.weight" in changed and any(n.startswith("bert.encoder.layer.0.") for n in changed)
    if method != "lora":
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / method)
        assert reloaded.config.num_labels == 2


def test_meta_learning_on_the_encoder(mlm_dir, tmp_path):
    subjects = ["the cat", "a dog", "my sister", "our king", "the ship"]
    lines = [f"c{c} {subject} {verb} the house" for c, subject in enumerate(subjects) for verb in ("sees", "finds")]
    data = tmp_path / "topics.txt"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "meta"
    flags = "--max_steps 2 --ways 2 --shots 1 --queries 1 --meta_batch_size 2 --test_shots 1 --test_episodes 20"
    argv = ["--algorithm", "protonet", "--model_name_or_path", str(mlm_dir), "--dataset", str(data), *flags.split()]
    assert (
        import_script("meta_train").main([*argv, "--output_dir", str(out), "--class_split", "0.4", "0.2", "0.4"]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["args"]["model_name_or_path"] == str(mlm_dir)


def test_the_model_card_records_the_objective(mlm_dir):
    card = str(build_model_card(mlm_dir, "someone/bert-mlm", base_model=None))
    assert "self-supervised pretraining (`--objective masked_lm`)" in card and "pipeline_tag: fill-mask" in card


def test_pretraining_pushes_at_the_end(tmp_path, corpus_file, monkeypatch):
    from hfssl import hub
    from tests.test_hub import TOKEN, RecordingApi

    api = RecordingApi()
    monkeypatch.setattr(hub.upload, "HfApi", lambda token: api)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "pushed"
    argv = ["--dataset", str(corpus_file), "--output_dir", str(out), *TINY_MLM, "--push_to_hub"]
    assert import_script("pretrain").main([*argv, "--hub_model_id", "someone/bert-mlm"]) == 0
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert {"model.safetensors", "metrics.json", "README.md", "tokenizer.json"} <= set(api.calls[1][1])
