"""What the experiments on the real reference models share beyond benchmarks/common.py: the fetched reference
folders and random-init copies of them (exp_adaptation_real.py, exp_icl_real.py, exp_meta_text.py)."""

from pathlib import Path

import torch

from hfssl.models.loading import load_tokenizer
from hfssl.reference import reference_model_path


def reference(key: str) -> Path:
    """The fetched reference model's folder; SystemExit with the fetch command when it is absent."""
    folder = reference_model_path(key)
    if folder is None:
        raise SystemExit(f"error: the reference model {key!r} is not fetched: run `python -m hfssl.reference fetch`.")
    return folder


def random_init_copy(pretrained: Path, target: Path, auto_class) -> Path:
    """The pretrained model's config and tokenizer with fresh weights (torch seed 0), saved once in `target`."""
    from transformers import AutoConfig

    if not (target / "config.json").is_file():
        torch.manual_seed(0)
        auto_class.from_config(AutoConfig.from_pretrained(pretrained)).save_pretrained(target)
        load_tokenizer(str(pretrained)).save_pretrained(target)
    return target
