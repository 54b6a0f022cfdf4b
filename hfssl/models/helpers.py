"""What hfssl asks of any transformers model (ours, a Hub model, a GGUF one), in one place: its context window, its
classification head, its modality, a pad token, the KV-cache argument name, and where hfssl caches derived data.

The KV cache is passed and returned under the installed transformers' name: `cache` from 5.24, `past_key_values`
before (hfssl's own model files accept both; transformers' models warn on the old name from 5.24 on).
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from torch import nn

from ..run.errors import InputError
from .gpt.modeling_gpt import CACHE_NAME

if TYPE_CHECKING:
    from transformers import PretrainedConfig

_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length")
_HEAD_NAMES = ("score", "classifier", "classifier.out_proj", "classifier.dense_out", "head", "fc")


def cache_dir(kind: str) -> Path:
    """hfssl's cache folder for one kind of derived data (features, images, corpora, reference models):
    $HFSSL_CACHE/kind, by default ~/.cache/hfssl/kind."""
    return Path(os.environ.get("HFSSL_CACHE") or Path.home() / ".cache" / "hfssl") / kind


def cache_kwargs(cache) -> dict:
    """Keyword arguments that hand `cache` to a model's forward: {"cache": cache} or {"past_key_values": cache}."""
    return {CACHE_NAME: cache}


def output_cache(outputs):
    """The KV cache a forward pass returned (None when it returned none)."""
    return outputs.get(CACHE_NAME)


def context_window(model_or_config) -> int | None:
    """The longest input in tokens a text model accepts, from its config; None if the config does not say."""
    config = getattr(model_or_config, "config", model_or_config)
    for name in _CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def check_fits_context(lengths: Sequence[int], window: int | None, texts: Sequence[str], first_index: int = 0) -> None:
    """Raise ValueError naming the first of `texts` (numbered from `first_index`) whose token count exceeds `window`.

    lengths: tokens of each text. Nothing in hfssl truncates an input silently: a too-long input is the user's to
    shorten.
    """
    if window is None:
        return
    for i, length in enumerate(lengths):
        if length > window:
            raise InputError(
                f"Text {first_index + i} has {int(length)} tokens, more than the model's context window ({window}): "
                f"{texts[i][:80]!r}... Shorten it (nothing is truncated silently)."
            )


def is_image_model(config) -> bool:
    """Whether a model (by its config, or a config.json dict) takes images: it declares channels and an image size."""
    if isinstance(config, dict):
        return "num_channels" in config and "image_size" in config
    return hasattr(config, "num_channels") and hasattr(config, "image_size")


def ensure_pad_token(tokenizer, model: nn.Module | None = None):
    """Give a tokenizer without a pad token its end-of-text token as one, and the model's config the matching id.

    Batching needs padding; decoder-only tokenizers (GPT-2's, SmolLM2's) often have no pad token. Returns tokenizer.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InputError(f"{type(tokenizer).__name__} has neither a pad token nor an end-of-text token to pad.")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        cast("PretrainedConfig", model.config).pad_token_id = tokenizer.pad_token_id
    return tokenizer


def classification_head(model: nn.Module) -> nn.Linear:
    """The final Linear layer that produces a classifier's logits (score / classifier / classifier.out_proj ...)."""
    num_labels = cast("PretrainedConfig", model.config).num_labels
    for name in _HEAD_NAMES:
        module: nn.Module | None = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Linear) and module.out_features == num_labels:
            return module
    raise InputError(
        f"Cannot find the classification head of {type(model).__name__}: expected a Linear layer "
        f"named score or classifier with {num_labels} outputs."
    )


def classification_head_name(model: nn.Module) -> str:
    """The module path of `classification_head(model)`, e.g. "score"."""
    head = classification_head(model)
    return next(name for name, module in model.named_modules() if module is head)
