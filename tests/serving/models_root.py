"""A models root for the serving tests and the demo's: a tiny saved GPT with its tokenizer, and a folder beside it
that no model name may reach."""

from pathlib import Path

import torch

from hfssl import GPTForCausalLM
from tests.conftest import tiny_gpt_config

# a prompt form's fields besides the model, as the sentiment preset's template with two demonstrations
SENTIMENT_FORM = dict(
    preset="sentiment",
    instruction="",
    input_prefix="Review: ",
    output_prefix="Sentiment:",
    delimiter="\\n\\n",
    labels="negative, positive",
    demonstrations=[["a fine film", "positive"], ["a dull film", "negative"]],
    query="a good film",
)


def make_models_root(tmp_path: Path, tokenizer) -> Path:
    """tmp_path/models holding `gpt` (context window 256), and tmp_path/secret outside it."""
    root = tmp_path / "models"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tokenizer), max_position_embeddings=256)).save_pretrained(
        root / "gpt"
    )
    tokenizer.save_pretrained(root / "gpt")
    (tmp_path / "secret").mkdir()
    return root
