"""hfssl's CLIP-style dual encoder (Radford et al. 2021), written as a `transformers` model.

An image tower f (hfssl's SimCLR backbone, or any transformers vision model) and a text tower g (any transformers
text model, pooled by a stated rule) are each followed by a linear projection into one D-dimensional space:

    u = normalize(W_i f(image)),   v = normalize(W_t pool(g(text))),   logits_per_image = s * u v^T,

with s = exp(logit_scale), a learned inverse temperature clamped to at most `config.max_logit_scale` (CLIP: 100).
Shapes: B_i images, B_t texts, T tokens, d the towers' widths, D = config.projection_dim.

A locked (frozen) tower's output need not be computed again every step: `forward` and `get_*_features` take the
tower's pooled output (`image_tower_features`, `text_tower_features`, (B, d)) in place of its inputs, so a trainer
can cache it once.

This file imports only torch, transformers and its sibling files, so that `save_pretrained` can copy them next to
the weights and `trust_remote_code=True` loads the model without hfssl (a text tower of hfssl's own GPT needs hfssl).
The loss lives in `hfssl.losses` (it may gather across processes) and is imported only when asked for.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils.generic import ModelOutput

from .configuration_clip import DualEncoderConfig
from .configuration_simclr import SimCLRConfig
from .modeling_pooled import encode_and_pool
from .modeling_simclr import SimCLRModel


@dataclass
class DualEncoderOutput(ModelOutput):
    """loss: the symmetric InfoNCE loss (return_loss=True); logits_per_image: s u v^T, (B_i, B_t); logits_per_text:
    its transpose; image_embeds, text_embeds: the normalised u (B_i, D) and v (B_t, D); logit_scale: s, a scalar."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


def _build_tower(config: dict) -> PreTrainedModel:
    """The tower a config dict describes: hfssl's SimCLR backbone (its own projection head left out: the dual encoder
    projects) or any model type transformers' AutoModel knows."""
    body = dict(config)
    model_type = body.pop("model_type")
    if model_type == SimCLRConfig.model_type:
        body["projection_dims"] = []  # the backbone's features h only
        return SimCLRModel(SimCLRConfig(**body))
    return AutoModel.from_config(AutoConfig.for_model(model_type, **body))


def tower_width(tower: PreTrainedModel) -> int:
    """The size d of a tower's pooled output: its config's hidden_size (SimCLR, ViT, BERT, GPT) or the last of its
    hidden_sizes (transformers' ResNet, ConvNeXt); ValueError when the config has neither."""
    config = tower.config
    width = getattr(config, "hidden_size", None)
    if width is None and getattr(config, "hidden_sizes", None):
        width = config.hidden_sizes[-1]
    if not isinstance(width, int):
        raise ValueError(
            f"Cannot read the feature size of a {type(tower).__name__} (model_type {config.model_type!r}): its config "
            "has no hidden_size or hidden_sizes."
        )
    return width


class DualEncoderModel(PreTrainedModel):
    """Image tower + text tower + two projections + a learned temperature; see the module docstring for the math."""

    config_class = DualEncoderConfig
    config: DualEncoderConfig
    base_model_prefix = "clip"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")  # type: ignore[assignment]  # a tuple, as transformers' own models
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def __init__(self, config: DualEncoderConfig):
        super().__init__(config)
        if config.text_encoder_config is None:
            raise ValueError("DualEncoderConfig needs text_encoder_config: the text tower's config as a dict.")
        self.image_encoder = _build_tower(config.image_encoder_config)
        self.text_encoder = _build_tower(config.text_encoder_config)
        self.image_projection = nn.Linear(tower_width(self.image_encoder), config.projection_dim, bias=False)
        self.text_projection = nn.Linear(tower_width(self.text_encoder), config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The projections: N(0, d^-1/2) as CLIP's; the learned temperature: its initial value. The towers keep their
        own initialisation (or their weights)."""
        if module is getattr(self, "image_projection", None) or module is getattr(self, "text_projection", None):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
        elif module is self:
            self.logit_scale.fill_(self.config.logit_scale_init_value)

    # ---- the towers' pooled outputs (what a locked tower's cache holds) ----------------------------------------------
    def image_tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) normalised images -> (B, d): the image tower's pooled output (before projection)."""
        outputs = self.image_encoder(pixel_values=pixel_values)
        pooled = outputs.pooler_output
        if pooled is None:  # a ViT without its pooling layer: the [CLS] token
            return outputs.last_hidden_state[:, 0]
        return pooled.flatten(1)  # transformers' ResNet pools to (B, d, 1, 1)

    def text_tower_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """(B, T) token ids (and their mask) -> (B, d): the text tower's hidden states pooled by config.text_pooling
        over the real tokens (before projection). Extra tokenizer outputs (token_type_ids) pass to the tower."""
        return encode_and_pool(self.text_encoder, input_ids, attention_mask, self.config.text_pooling, **kwargs)[1]

    # ---- the projected embeddings, as transformers' CLIPModel names them ----------------------------------------
    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, image_tower_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """W_i f(image), (B, D), not normalised: from images (B, C, S, S) or from the tower's cached output (B, d)."""
        if image_tower_features is None:
            if pixel_values is None:
                raise ValueError("get_image_features needs pixel_values or image_tower_features.")
            image_tower_features = self.image_tower_features(pixel_values)
        return self.image_projection(image_tower_features)

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_tower_features: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """W_t pool(g(text)), (B, D), not normalised: from token ids (B, T) or from the tower's cached output (B, d)."""
        if text_tower_features is None:
            if input_ids is None:
                raise ValueError("get_text_features needs input_ids or text_tower_features.")
            text_tower_features = self.text_tower_features(input_ids, attention_mask, **kwargs)
        return self.text_projection(text_tower_features)

    def logit_scale_value(self) -> torch.Tensor:
        """s = exp(logit_scale), clamped to at most config.max_logit_scale (CLIP's 100): a scalar tensor."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        image_tower_features: torch.Tensor | None = None,
        text_tower_features: torch.Tensor | None = None,
        **kwargs,
    ) -> DualEncoderOutput:
        """Images and texts -> their similarity logits (B_i, B_t); with return_loss=True (B_i = B_t, pair i = row i
        of each) the symmetric InfoNCE loss as well (`contrastive_loss()`), contrasted against the pairs of every
        process when several train together. Either tower's input may be replaced by its cached output."""
        image_embeds = F.normalize(self.get_image_features(pixel_values, image_tower_features), dim=-1)
        text_embeds = F.normalize(
            self.get_text_features(input_ids, attention_mask, text_tower_features, **kwargs), dim=-1
        )
        scale = self.logit_scale_value()
        logits_per_image = scale * image_embeds @ text_embeds.T  # (B_i, B_t)
        loss = self.contrastive_loss()(image_embeds, text_embeds, scale) if return_loss else None
        return DualEncoderOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.T,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            logit_scale=scale,
        )

    def contrastive_loss(self) -> nn.Module:
        """The symmetric image-text InfoNCE loss (`hfssl.losses.ImageTextContrastiveLoss`), gathering the pairs of
        every process (with gradients) when several train together."""
        try:
            from hfssl.losses import ImageTextContrastiveLoss
        except ImportError as err:
            raise ImportError("The contrastive loss needs the hfssl package: pip install hfssl.") from err
        return ImageTextContrastiveLoss(gather_distributed=True)


__all__ = ["DualEncoderModel", "DualEncoderOutput", "tower_width"]
