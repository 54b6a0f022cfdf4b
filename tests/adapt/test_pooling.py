"""--pooling cls|mean|last: the pooled vector equals a hand computation over the real tokens, a fine-tuned classifier
saves its pooling and reloads (and serves in a pipeline) to identical logits, the default is what the model was
trained for, and bad input is one clear error."""

import json
import logging

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hfssl.adapt import finetune as finetune_module
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.adapt.task import load_task
from hfssl.meta.algorithms import features
from hfssl.meta.arguments import MetaArguments
from hfssl.meta.trainer import build_model
from hfssl.models.encoders import PooledModelForSequenceClassification, pool_hidden_states
from hfssl.models.pooling import load_text_classifier, resolve_pooling
from hfssl.run.errors import InputError
from hfssl.run.model_source import ModelSource
from tests.conftest import why_failed

HIDDEN = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # (B=2, T=4, d=3)


def test_pooling_equals_a_hand_computation_over_the_real_tokens():
    right = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    left = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    h0, h1 = HIDDEN[0], HIDDEN[1]
    assert torch.equal(pool_hidden_states(HIDDEN, right, "cls"), torch.stack([h0[0], h1[0]]))
    assert torch.equal(pool_hidden_states(HIDDEN, left, "cls"), torch.stack([h0[0], h1[2]]))  # the first real token
    assert torch.allclose(pool_hidden_states(HIDDEN, right, "mean"), torch.stack([h0.mean(0), (h1[0] + h1[1]) / 2]))
    assert torch.allclose(pool_hidden_states(HIDDEN, left, "mean"), torch.stack([h0.mean(0), (h1[2] + h1[3]) / 2]))
    assert torch.equal(pool_hidden_states(HIDDEN, right, "last"), torch.stack([h0[3], h1[1]]))
    assert torch.equal(pool_hidden_states(HIDDEN, left, "last"), torch.stack([h0[3], h1[3]]))
    assert torch.allclose(pool_hidden_states(HIDDEN, None, "mean"), HIDDEN.mean(1))  # no mask: every token is real


@pytest.mark.parametrize(
    "mask, message",
    [
        ([[1, 1, 0, 0], [0, 0, 1, 1]], "mixes left- and right-padded"),
        ([[1, 0, 1, 1], [1, 1, 1, 1]], "padding inside a sequence"),
    ],
)
def test_last_pooling_refuses_padding_on_both_sides(mask, message):
    with pytest.raises(ValueError, match=message):
        pool_hidden_states(HIDDEN, torch.tensor(mask), "last")


def _finetune(model_dir, data, out, **extra) -> FinetuneArguments:
    base = dict(
        model_name_or_path=str(model_dir),
        dataset=str(data),
        output_dir=str(out),
        num_labels_per_class=4,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
    )
    return FinetuneArguments(**{**base, **extra})


@pytest.mark.parametrize(
    "kind, method, pooling",
    [("bert", "full", "mean"), ("bert", "lora", "mean"), ("bert", "lp-ft", "last"), ("gpt", "surgical", "mean")],
)
def test_a_pooled_fine_tune_reloads_to_identical_logits_and_serves_in_a_pipeline(
    kind, method, pooling, tmp_path, bert_dir, gpt_dir, sentiment_file, monkeypatch
):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "adapted"
    args = _finetune(bert_dir if kind == "bert" else gpt_dir, sentiment_file, out, method=method, pooling=pooling)
    trained = []  # the model in memory when the run predicts (a LoRA one before it is merged)
    predict = finetune_module.predict
    monkeypatch.setattr(finetune_module, "predict", lambda model, *rest: trained.append(model) or predict(model, *rest))
    result = run_finetune(args)
    assert result.saved == "model"  # LoRA is merged: its base is the pooled classifier, no folder to name
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert isinstance(model, PooledModelForSequenceClassification) and model.config.pooling == pooling
    assert json.loads((out / "config.json").read_text())["pooling"] == pooling
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = list(load_task(args, model.config).eval_x)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits
        hidden = model.encoder(**encoded).last_hidden_state
    # by hand: the head on the pooled real tokens
    if pooling == "mean":
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    else:
        pooled = hidden[torch.arange(len(texts)), encoded["attention_mask"].sum(1) - 1]
    assert torch.allclose(logits, model.classifier(pooled), atol=1e-5)
    # the recorded accuracy is the reloaded model's, and the pipeline serves the same predictions
    predictions = logits.argmax(-1)
    gold = load_task(args, model.config).eval_y
    assert (predictions == gold).float().mean().item() == pytest.approx(result.accuracy)
    served = pipeline("text-classification", model=str(out))(texts[:4])
    assert [s["label"] for s in served] == [model.config.id2label[int(p)] for p in predictions[:4]]
    with torch.no_grad():  # the saved folder gives the logits of the model the run trained
        torch.testing.assert_close(trained[0].eval()(**encoded).logits, logits, rtol=1e-5, atol=1e-5)


def _as_sentence_transformer(folder, mode: str = "pooling_mode_mean_tokens"):
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, mode: True}))


def test_the_default_pooling_is_what_the_model_was_trained_for(bert_dir, gpt_dir, caplog):
    head = dict(num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    bert = ModelSource(str(bert_dir))
    config = AutoModel.from_pretrained(bert_dir).config
    assert resolve_pooling(None, bert, config) == ("cls", "its own [CLS] pooler")
    model, pooling = load_text_classifier(bert, None, config, **head)
    assert pooling == "cls" and type(model).__name__ == "BertForSequenceClassification"
    gpt_config = AutoModel.from_pretrained(gpt_dir).config
    assert resolve_pooling(None, ModelSource(str(gpt_dir)), gpt_config)[0] == "last"
    _as_sentence_transformer(bert_dir)
    with caplog.at_level(logging.INFO, logger="hfssl.models.pooling"):
        model, pooling = load_text_classifier(bert, None, config, **head)
    assert pooling == "mean" and isinstance(model, PooledModelForSequenceClassification)
    assert "Pooling: mean (the pooling its sentence-transformers config names)" in caplog.text
    # the body is the pretrained one, not the random one the config built
    pretrained = AutoModel.from_pretrained(bert_dir).state_dict()
    assert all(torch.equal(pretrained[k], v) for k, v in model.encoder.state_dict().items())


def test_meta_learning_features_are_the_chosen_pooling(bert_dir, sentiment_file):
    args = MetaArguments(
        model_name_or_path=str(bert_dir), dataset=str(sentiment_file), ways=2, pooling="mean", output_dir="unused"
    )
    model = build_model(args).eval()
    assert isinstance(model, PooledModelForSequenceClassification)
    pad = model.config.pad_token_id
    x = torch.tensor([[5, 6, 7, pad], [8, 9, pad, pad]])
    with torch.no_grad():
        hidden = model.encoder(input_ids=x, attention_mask=(x != pad).long()).last_hidden_state
        expected = torch.stack([hidden[0, :3].mean(0), hidden[1, :2].mean(0)])
        assert torch.allclose(features(model, x), expected, atol=1e-6)


def test_bad_pooling_input_is_one_clear_error(tmp_path, bert_dir, simclr_dir, sentiment_file):
    with pytest.raises(InputError, match="--pooling must be one of cls, mean, last"):
        _finetune(bert_dir, sentiment_file, tmp_path / "a", pooling="max")
    with pytest.raises(InputError, match="takes images: drop it"):
        run_finetune(_finetune(simclr_dir, "digits", tmp_path / "b", pooling="mean"))
    with pytest.raises(InputError, match="add --model_name_or_path"):
        MetaArguments(dataset=str(sentiment_file), pooling="mean")
    # a tokenizer that returns no attention mask cannot say which tokens to average
    config = json.loads((bert_dir / "tokenizer_config.json").read_text())
    (bert_dir / "tokenizer_config.json").write_text(json.dumps({**config, "model_input_names": ["input_ids"]}))
    with pytest.raises(InputError, match="returns no attention_mask"):
        run_finetune(_finetune(bert_dir, sentiment_file, tmp_path / "c", pooling="mean"))


def test_a_saved_pooling_is_kept_or_refused_by_name(tmp_path, bert_dir, sentiment_file, monkeypatch):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    saved = tmp_path / "saved"
    run_finetune(_finetune(bert_dir, sentiment_file, saved, pooling="mean", num_train_epochs=1))
    with pytest.raises(InputError, match="saved with pooling 'mean'; it cannot read 'last'"):
        run_finetune(_finetune(saved, sentiment_file, tmp_path / "again", pooling="last"))
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "pooling": "max"}))
    with pytest.raises(Exception, match=r"saved.*pooling 'max' is not one hfssl knows") as caught:
        run_finetune(_finetune(saved, sentiment_file, tmp_path / "third"))
    assert "\n" not in str(caught.value)


def test_a_pooled_classifier_loads_without_hfssl_through_trust_remote_code(tmp_path, bert_dir):
    """A saved pooled classifier over a transformers body loads in a process that never imports hfssl."""
    import subprocess
    import sys
    import textwrap

    head = dict(num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    config = AutoModel.from_pretrained(bert_dir).config
    model, _ = load_text_classifier(ModelSource(str(bert_dir)), "mean", config, **head)
    model.eval().save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "modeling_pooled.py").is_file()
    x = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = (x != 0).long()
    with torch.no_grad():
        torch.save({"x": x, "mask": mask, "logits": model(input_ids=x, attention_mask=mask).logits}, tmp_path / "e.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
        assert "hfssl" not in sys.modules, "hfssl was imported"
        expected = torch.load({str(tmp_path / "e.pt")!r})
        with torch.no_grad():
            logits = model.eval()(input_ids=expected["x"], attention_mask=expected["mask"]).logits
        torch.testing.assert_close(logits, expected["logits"])
        print("OK")
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, why_failed(result, 3000)


@pytest.mark.parametrize(
    "pooling_config, expected",
    [
        ({"pooling_mode": "mean"}, "mean"),  # sentence-transformers 6
        ({"pooling_mode": "lasttoken"}, "last"),
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),  # older flags
        ({"pooling_mode_max_tokens": True}, None),  # a mode hfssl does not have: the model's kind decides
    ],
)
def test_a_sentence_transformers_pooling_is_read_in_either_spelling(tmp_path, pooling_config, expected):
    from hfssl.models.pooling import sentence_transformers_pooling

    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    assert sentence_transformers_pooling(ModelSource(str(tmp_path))) == expected


def test_a_bfloat16_body_gets_a_head_of_its_dtype(tmp_path, bert_dir):
    body = AutoModel.from_pretrained(bert_dir).to(torch.bfloat16)
    body.save_pretrained(tmp_path / "bf16")
    head = dict(num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    model, _ = load_text_classifier(ModelSource(str(tmp_path / "bf16")), "mean", body.config, **head)
    assert model.classifier.weight.dtype == next(model.encoder.parameters()).dtype
    assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.shape == (1, 2)
