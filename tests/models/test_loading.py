"""load_pretrained's fit check on a tiny BERT folder: what it forgives and what it refuses."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForSequenceClassification, BertForSequenceClassification

from hfssl.models.loading import _check_fit, load_pretrained
from hfssl.run.model_source import ModelSource


def _add_to_checkpoint(folder, name, tensor):
    weights = load_file(folder / "model.safetensors")
    weights[name] = tensor
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_saved_copy_of_a_buffer_the_model_makes_itself_is_not_a_misfit(bert_dir):
    # all-MiniLM-L6-v2 holds embeddings.position_ids, saved by an old transformers; 5.4 reports it as unexpected
    # (5.24 drops it itself), so the check is also asked directly what it makes of such a report
    _add_to_checkpoint(bert_dir, "embeddings.position_ids", torch.arange(32).unsqueeze(0))
    model = load_pretrained(AutoModel, str(bert_dir))
    source = ModelSource(str(bert_dir))
    assert _check_fit(model, {"unexpected_keys": ["embeddings.position_ids"]}, source, new_head=False) == []
    # a persistent weight of the model is not a buffer it makes itself: reported as unexpected, it is refused
    with pytest.raises(ValueError, match=r"1 unexpected \(embeddings\.word_embeddings\.weight\)"):
        _check_fit(model, {"unexpected_keys": ["embeddings.word_embeddings.weight"]}, source, new_head=False)


def test_a_weight_that_fits_nowhere_in_the_model_is_refused(bert_dir):
    _add_to_checkpoint(bert_dir, "encoder.layer.7.output.dense.weight", torch.zeros(32, 32))
    with pytest.raises(ValueError, match=r"do not fit BertModel .*1 unexpected \(encoder\.layer\.7"):
        load_pretrained(AutoModel, str(bert_dir))


def test_a_head_of_another_size_is_replaced_when_a_new_one_is_asked_for_and_refused_otherwise(bert_dir, tmp_path):
    three_labels = tmp_path / "three-labels"
    BertForSequenceClassification.from_pretrained(bert_dir, num_labels=3).save_pretrained(three_labels)
    model = load_pretrained(AutoModelForSequenceClassification, str(three_labels), new_head=True, num_labels=2)
    assert model.classifier.weight.shape == (2, 32) and model.hfssl_new_modules == ["classifier"]
    with pytest.raises(ValueError, match=r"2 of another shape \(classifier\.bias, classifier\.weight\)"):
        load_pretrained(AutoModelForSequenceClassification, str(three_labels), num_labels=2)
