"""Small pure checks on what lies in a models folder, and whether the Hub may be asked: the helpers of `ModelStore`."""

import json
import os
from pathlib import Path

from ..models.helpers import is_image_model
from ..run.model_source import GGUF_SUFFIX


def read_config(config_file: Path) -> dict | None:
    """The parsed config.json, or None when it cannot be read or parsed (such a folder is not offered; loading it
    by name still reports the error)."""
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None


def is_causal_lm(config: dict) -> bool:
    """Whether a config names a causal-LM architecture (`...ForCausalLM`, `...LMHeadModel`)."""
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or [])


def is_vision_folder(config: dict, folder: Path) -> bool:
    """Whether a saved model is an image model saved with its image processor (what the vision tab loads)."""
    return is_image_model(config) and (folder / "preprocessor_config.json").is_file()


def is_dual_encoder(config: dict) -> bool:
    """Whether a config is an image-text dual encoder the zero-shot tab loads: hfssl's, or a transformers CLIP."""
    return config.get("model_type") == "hfssl_clip" or "CLIPModel" in (config.get("architectures") or [])


def is_gguf_file(path: Path) -> bool:
    """Whether `path` is a llama.cpp checkpoint file."""
    return path.is_file() and path.suffix.lower() == GGUF_SUFFIX


def is_saved_model(path: Path) -> bool:
    """A folder saved with `save_pretrained` (it has a config.json) or a .gguf file."""
    return (path / "config.json").is_file() or is_gguf_file(path)


def hub_offline() -> bool:
    """Whether this process may not reach the Hub (HF_HUB_OFFLINE, as huggingface_hub reads it or as set since)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").lower()
    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or flag in ("1", "true", "yes", "on")
