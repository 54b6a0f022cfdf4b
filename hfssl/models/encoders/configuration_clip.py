"""Configuration of hfssl's CLIP-style dual encoder: an image tower, a text tower, a projection each, a temperature."""

import math

from transformers import PretrainedConfig

from .configuration_pooled import POOLINGS
from .configuration_simclr import SimCLRConfig

_AUTO_MAP = {
    "AutoConfig": "configuration_clip.DualEncoderConfig",
    "AutoModel": "modeling_clip.DualEncoderModel",
    "AutoModelForZeroShotImageClassification": "modeling_clip.DualEncoderModel",
}


def _as_dict(config: "dict | PretrainedConfig | None", name: str) -> dict | None:
    if isinstance(config, PretrainedConfig):
        config = config.to_dict()
    if config is not None and "model_type" not in config:
        raise ValueError(f"{name} needs its model_type (pass config.to_dict() of the tower's config).")
    return config


class DualEncoderConfig(PretrainedConfig):
    r"""An image-text dual encoder (Radford et al. 2021, CLIP): two towers, a linear projection each into one space.

    Args:
        image_encoder_config: the image tower's config as a dict (`model_type` included): hfssl's SimCLR encoder
            (`hfssl_simclr`, its backbone only: ResNet or ViT; the default, a ResNet-18 for 32 px images) or any
            transformers vision model whose output has a `pooler_output` (ViT, ResNet, DINOv2, ...).
        text_encoder_config: the text tower's config as a dict: any transformers text model (all-MiniLM-L6-v2's BERT,
            hfssl's GPT when hfssl is installed). Required to build the model.
        text_pooling: how the text tower's hidden states (B, T, d) become one vector: "mean" (sentence-transformers'
            pooling, MiniLM's), "cls" (the first token's hidden state) or "last" (a causal LM's last token).
        projection_dim: D, the size of the shared embedding space.
        logit_scale_init_value: the initial log of the inverse temperature, log(1 / 0.07) as in CLIP.
        max_logit_scale: the scale exp(logit_scale) is clamped to at most this (CLIP: 100).
        initializer_range: kept for transformers' conventions; the projections are initialised as CLIP's, N(0, d^-1/2).

    Named `*_encoder_config`, not `text_config` / `vision_config`: transformers reads those two names as nested config
    objects of its own composite models.
    """

    model_type = "hfssl_clip"

    def __init__(
        self,
        image_encoder_config: "dict | PretrainedConfig | None" = None,
        text_encoder_config: "dict | PretrainedConfig | None" = None,
        text_pooling: str = "mean",
        projection_dim: int = 256,
        logit_scale_init_value: float = math.log(1 / 0.07),
        max_logit_scale: float = 100.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if text_pooling not in POOLINGS:
            raise ValueError(f"text_pooling {text_pooling!r} is not one hfssl knows: {', '.join(POOLINGS)}.")
        if projection_dim < 1:
            raise ValueError(f"projection_dim must be positive, got {projection_dim}.")
        if max_logit_scale <= 1 or not 0 < math.exp(logit_scale_init_value) <= max_logit_scale:
            raise ValueError(
                f"Need 1 < max_logit_scale and 0 < exp(logit_scale_init_value) <= max_logit_scale, got "
                f"{max_logit_scale} and exp({logit_scale_init_value})."
            )
        self.image_encoder_config = _as_dict(image_encoder_config, "image_encoder_config") or SimCLRConfig().to_dict()
        self.text_encoder_config = _as_dict(text_encoder_config, "text_encoder_config")
        self.text_pooling = text_pooling
        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.max_logit_scale = max_logit_scale
        self.initializer_range = initializer_range
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        super().__init__(**kwargs)


__all__ = ["DualEncoderConfig"]
