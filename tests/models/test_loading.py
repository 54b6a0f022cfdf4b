"""load_pretrained's fit check on a tiny BERT folder: what it forgives and what it refuses."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from hfssl.models.loading import load_pretrained


def _add_to_checkpoint(folder, name, tensor):
    weights = load_file(folder / "model.safetensors")
    weights[name] = tensor
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_saved_copy_of_a_buffer_the_model_makes_itself_is_not_a_misfit(bert_dir):
    # all-MiniLM-L6-v2 holds embeddings.position_ids, saved by an old transformers; 5.4 reports it as unexpected
    _add_to_checkpoint(bert_dir, "embeddings.position_ids", torch.arange(32).unsqueeze(0))
    model = load_pretrained(AutoModel, str(bert_dir))
    torch.testing.assert_close(model.embeddings.position_ids[0, :32], torch.arange(32))


def test_a_weight_that_fits_nowhere_in_the_model_is_refused(bert_dir):
    _add_to_checkpoint(bert_dir, "encoder.layer.7.output.dense.weight", torch.zeros(32, 32))
    with pytest.raises(ValueError, match=r"do not fit BertModel .*1 unexpected \(encoder\.layer\.7"):
        load_pretrained(AutoModel, str(bert_dir))
