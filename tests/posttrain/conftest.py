"""Tiny causal LMs for post-training tests: hfssl's GPT with room for the built-in instructions (256 positions)."""

import json

import pytest
import torch

from hfssl import GPTForCausalLM, GPTForSequenceClassification
from tests.conftest import tiny_gpt_config


def save_lm(path, tokenizer, seed: int = 0, head: str = "lm"):
    """A tiny GPT (causal LM, or a one-output reward model with head="reward") and its tokenizer, saved to `path`."""
    torch.manual_seed(seed)
    config = tiny_gpt_config(vocab_size=len(tokenizer), max_position_embeddings=256)
    if head == "reward":
        config.num_labels = 1
        GPTForSequenceClassification(config).save_pretrained(path)
    else:
        GPTForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory, tiny_tokenizer):
    return save_lm(tmp_path_factory.mktemp("lm") / "gpt", tiny_tokenizer)


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


PAIRS = [
    {"prompt": "the cat sat", "chosen": "on the mat.", "rejected": "far away."},
    {"prompt": "a dog ran", "chosen": "in the park.", "rejected": "the cat."},
    {"prompt": "birds sing", "chosen": "at dawn.", "rejected": "ran away."},
    {"prompt": "the sun", "chosen": "rose early.", "rejected": "sat on a mat."},
]
