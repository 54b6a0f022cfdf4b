"""Tiny saved models and a tiny labelled text set shared by the adaptation tests."""

import pytest
import torch
from transformers import ViTImageProcessor

from hfssl import GPTForCausalLM, SimCLRConfig, SimCLRModel
from tests.conftest import tiny_gpt_config


@pytest.fixture
def gpt_dir(tmp_path, tiny_tokenizer):
    path = tmp_path / "gpt"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer))).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def simclr_dir(tmp_path):
    path = tmp_path / "simclr"
    torch.manual_seed(0)
    SimCLRModel(SimCLRConfig(image_size=8, resnet_layers=[1, 1], resnet_widths=[8, 8],
                             projection_dims=[8])).save_pretrained(path)
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.3] * 3, image_std=[0.4] * 3).save_pretrained(path)
    return path


@pytest.fixture
def sentiment_file(tmp_path):
    """`label text` lines: 24 positive and 24 negative sentences."""
    good = ["a fine good film", "good and fine", "the king likes the song", "good good good"]
    bad = ["a dull bad film", "bad and dull", "the king forgets the song", "bad bad bad"]
    lines = [f"1 {t} {i}" for i in range(6) for t in good] + [f"0 {t} {i}" for i in range(6) for t in bad]
    path = tmp_path / "sentiment.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
