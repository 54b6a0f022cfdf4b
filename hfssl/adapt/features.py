"""Frozen features phi(x) for linear probes: extracted once (batched, no grad) and cached on disk.

The cache key combines a fingerprint of the model (its config and a digest of every weight) with a
fingerprint of the data and the pooling, so a changed model or data set never reuses stale features.
"""

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import nn

from ..models.encoders import pool_hidden_states
from ..models.helpers import cache_dir, check_fits_context, context_window, ensure_pad_token
from ..models.pooling import check_pooling
from ..run.errors import InputError

logger = logging.getLogger(__name__)


def model_fingerprint(model: nn.Module) -> str:
    """sha1 of the model's config and of every parameter and buffer (exact bytes)."""
    digest = hashlib.sha1()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cache_root(folder: str | os.PathLike | None) -> Path:
    return Path(folder) / "features" if folder else cache_dir("features")


def cached_features(
    model: nn.Module, data_key: str, compute: Callable[[], torch.Tensor], cache_dir: str | os.PathLike | None = None
) -> tuple[torch.Tensor, bool]:
    """Features for (model, data_key): loaded from the cache, or computed by `compute()` and stored.

    Returns (features (N, F), hit) where hit tells whether the cache answered.
    """
    key = hashlib.sha1(f"{model_fingerprint(model)}|{data_key}".encode()).hexdigest()[:20]
    path = _cache_root(cache_dir) / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True), True  # a cache file is data: never run a pickle
    features = compute().float().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(features, tmp)
    os.replace(tmp, path)  # readers never see half a file
    return features, False


def _default_pooling(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    architectures = getattr(config, "architectures", None) or []
    decoder_only = getattr(config, "is_decoder", False) or any("CausalLM" in a for a in architectures)
    return "last" if decoder_only or getattr(config, "model_type", "") == "hfssl_gpt" else "mean"


@torch.no_grad()
def text_features(
    model: nn.Module, tokenizer, texts: list[str], *, pooling: str | None = None, batch_size: int = 32
) -> torch.Tensor:
    """Sequence features of any transformers text model: (N, hidden).

    pooling: "last" (hidden state of the last real token c_T, the default for decoder-only models),
    "mean" (mean over real tokens, default otherwise) or "cls" ([CLS], the first position; "first" is its old
    name): `hfssl.models.encoders.pool_hidden_states`. Raises ValueError naming the first text longer than the
    model's context window (nothing is silently truncated).
    """
    pooling = check_pooling(pooling or _default_pooling(model), "pooling")
    window = context_window(model)
    ensure_pad_token(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt")
        check_fits_context(encoded["attention_mask"].sum(dim=1).tolist(), window, texts[start:], first_index=start)
        encoded = {k: v.to(device) for k, v in encoded.items()}
        outputs = model(**encoded, output_hidden_states=True)
        hidden = getattr(outputs, "last_hidden_state", None)
        if hidden is None:
            hidden = outputs.hidden_states[-1]  # (B, T, d)
        pooled = pool_hidden_states(hidden, encoded["attention_mask"], cast(str, pooling))
        out.append(pooled.float().cpu())
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def image_features(model: nn.Module, pixels: torch.Tensor, normalize: nn.Module, batch_size: int = 256) -> torch.Tensor:
    """Features of a vision encoder for uint8 images (N, C, S, S): (N, F).

    Uses `embeddings` (hfssl SimCLR), else `pooler_output`, else `last_hidden_state` or, for a classifier,
    the last of `hidden_states` (the head's input), averaged over positions when it has any.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pixels), batch_size):
        outputs = model(pixel_values=normalize(pixels[start : start + batch_size].to(device)))
        for name in ("embeddings", "pooler_output"):
            features = getattr(outputs, name, None)
            if features is not None:
                break
        else:
            hidden = getattr(outputs, "last_hidden_state", None)
            if hidden is None and getattr(outputs, "hidden_states", None):
                hidden = outputs.hidden_states[-1]
            if hidden is None:
                raise InputError(
                    f"{type(model).__name__} returns no features (embeddings, pooler_output or hidden states)."
                )
            if hidden.dim() == 4:  # (B, C, H, W) feature maps
                features = hidden.mean(dim=(2, 3))
            elif hidden.dim() == 3:  # (B, T, d) tokens
                features = hidden.mean(dim=1)
            else:  # (B, F) already pooled
                features = hidden
        out.append(features.reshape(features.shape[0], -1).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def data_key(*parts) -> str:
    """A stable string key for the data side of the cache (texts, pixels, settings)."""
    digest = hashlib.sha1()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()
