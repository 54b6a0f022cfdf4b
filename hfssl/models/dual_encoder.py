"""A CLIP-style dual encoder: building one from pretrained (or fresh) towers (any text model hfssl loads: a Hub id, a
folder, a GGUF file; hfssl's image encoder, fresh or the backbone of a saved SimCLR encoder), and classifying images
zero-shot with one (Radford et al. 2021, sec. 3.1.4).

Prompt ensembling (CLIP sec. 3.1.4): the embedding of class c is the normalised mean of its templates' normalised
text embeddings, w_c = normalize( 1/T sum_t normalize(W_t g(template_t(c))) ); the logits of an image are
s * normalize(W_i f(image)) w_c. The zero-shot functions work with hfssl's `DualEncoderModel` and with
transformers' CLIP-like models (`get_text_features` / `get_image_features`, which transformers 5 returns as an
output whose `pooler_output` is the embedding).
"""

import logging
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel

from ..run.errors import InputError
from ..run.model_source import ModelSource
from .encoders import DualEncoderConfig, DualEncoderModel, SimCLRConfig, SimCLRModel
from .helpers import context_window, ensure_pad_token
from .loading import as_source, load_config, load_pretrained, load_tokenizer
from .pooling import check_pooling, resolve_pooling

logger = logging.getLogger(__name__)


def _plain(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}


def _image_encoder(image_model: str | None, image_config: SimCLRConfig | None) -> tuple[dict, SimCLRModel | None]:
    """(the image tower's config, the saved SimCLR encoder whose backbone it takes, if any)."""
    if image_model is None:
        return _plain(image_config or SimCLRConfig()), None
    saved = load_pretrained(AutoModel, image_model)
    if not isinstance(saved, SimCLRModel):
        raise InputError(
            f"--image_model_name_or_path {image_model} is a {type(saved).__name__}; the image tower is hfssl's SimCLR "
            "encoder (a folder scripts/pretrain.py --objective contrastive saved)."
        )
    return _plain(saved.config), saved


def build_dual_encoder(
    text_model: "str | ModelSource",
    *,
    text_init: str = "pretrained",
    text_pooling: str | None = None,
    image_model: str | None = None,
    image_config: SimCLRConfig | None = None,
    projection_dim: int = 256,
    logit_scale_init_value: float | None = None,
) -> tuple[DualEncoderModel, object]:
    """(dual encoder, the text tower's tokenizer). The text tower: `text_model`'s weights (text_init "pretrained") or
    its architecture freshly initialised ("random"), pooled by `text_pooling` (default: what the model was trained
    for, as `hfssl.models.pooling.resolve_pooling` decides); the image tower: the backbone of the SimCLR encoder
    saved at `image_model`, else a fresh one shaped by `image_config`. The projections are fresh."""
    if text_init not in ("pretrained", "random"):
        raise InputError(f"--text_tower_init must be 'pretrained' or 'random', got {text_init!r}.")
    source = as_source(text_model)
    text_config = load_config(source)
    pooling, why = resolve_pooling(check_pooling(text_pooling, "--text_pooling"), source, text_config)
    logger.info("Text tower %s (%s weights), pooling: %s (%s)", source, text_init, pooling, why)
    image_dict, saved_image = _image_encoder(image_model, image_config)
    extra = {} if logit_scale_init_value is None else {"logit_scale_init_value": logit_scale_init_value}
    config = DualEncoderConfig(
        image_encoder_config=image_dict,
        text_encoder_config=_plain(text_config),
        text_pooling=pooling,
        projection_dim=projection_dim,
        **extra,
    )
    try:
        model = DualEncoderModel(config)
    except ValueError as err:  # a tower whose feature size cannot be read
        raise InputError(str(err)) from None
    if text_init == "pretrained":
        model.text_encoder = load_pretrained(AutoModel, source, dtype=torch.float32)  # the projections' dtype
    if saved_image is not None:
        cast(nn.Module, model.image_encoder.encoder).load_state_dict(saved_image.encoder.state_dict())
    tokenizer = ensure_pad_token(load_tokenizer(source), model.text_encoder)
    return model, tokenizer


def check_class_names(names: Sequence[str]) -> list[str]:
    """The class names, stripped; InputError for fewer than two, an empty one, or duplicates."""
    names = [str(name).strip() for name in names]
    if len(names) < 2:
        raise InputError(f"Zero-shot classification needs at least 2 class names, got {len(names)}: {names}.")
    if not all(names):
        raise InputError(f"A class name is empty: {names}.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"Class names must differ; given more than once: {', '.join(duplicates)}.")
    return names


def _embedding(output) -> torch.Tensor:
    """An embedding tensor (B, D) from `get_*_features`: hfssl's return it; transformers 5's return an output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _device(model) -> torch.device:
    return next(model.parameters()).device


def caption_length(model, tokenizer) -> int:
    """The most tokens a caption keeps: the tokenizer's limit, or the text tower's context window when smaller (a
    tokenizer saved without one says ~1e30)."""
    text_tower = getattr(model, "text_encoder", None) or getattr(model, "text_model", None)
    window = context_window(text_tower) if text_tower is not None else None
    return min(tokenizer.model_max_length, window or tokenizer.model_max_length)


@torch.no_grad()
def class_embeddings(
    model, tokenizer, class_names: Sequence[str], templates: Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    """w, (C, D): each class's prompt-ensemble embedding (module docstring), unit norm. One template: no ensemble."""
    names = check_class_names(class_names)
    if not templates:
        raise InputError("Zero-shot classification needs at least one caption template.")
    texts = [template.format(name) for name in names for template in templates]  # class-major: (C x T)
    longest = caption_length(model, tokenizer)
    embeddings = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=longest, return_tensors="pt")
        encoded = {key: value.to(_device(model)) for key, value in encoded.items()}
        embeddings.append(F.normalize(_embedding(model.get_text_features(**encoded)).float(), dim=-1))
    per_template = torch.cat(embeddings).view(len(names), len(templates), -1)  # (C, T, D)
    return F.normalize(per_template.mean(dim=1), dim=-1)


def logit_scale(model) -> torch.Tensor:
    """s, the model's inverse temperature: hfssl's clamped value, or exp(logit_scale) of a transformers CLIP."""
    if hasattr(model, "logit_scale_value"):
        return model.logit_scale_value().float()
    return model.logit_scale.exp().float()


@torch.no_grad()
def zero_shot_logits(model, pixel_values: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(B, C) logits s * u w^T of normalised images (B, C_in, S, S) against class embeddings (C, D)."""
    image = F.normalize(_embedding(model.get_image_features(pixel_values=pixel_values)).float(), dim=-1)
    return logit_scale(model) * image @ classes.T
