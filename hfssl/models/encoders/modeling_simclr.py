"""hfssl SimCLR: a contrastive vision encoder (ResNet or small ViT) written as a `transformers` model.

Shapes: B = batch, C = channels, S = image size, F = feature size (config.hidden_size), D = projection size.
h = phi(x) are the features used downstream; z = g(h) are the projections the contrastive loss sees.

This file imports only torch, transformers and its sibling configuration file, so that
`save_pretrained` can copy it next to the weights and `trust_remote_code=True` loads it anywhere.
The contrastive loss itself lives in `hfssl.losses` (it may gather across processes) and is imported
only when a two-view forward pass asks for it.
"""

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils.generic import ModelOutput

from .configuration_simclr import SimCLRConfig


@dataclass
class SimCLROutput(ModelOutput):
    """loss: NT-Xent (two views only); embeddings: h, (B, F) or (2B, F) for two views (view 1 rows first);
    projections: z = g(h), (B, D) or (2B, D); pooler_output: h, for transformers' feature-extraction pipeline."""

    loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    projections: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetStage(nn.Sequential):
    """A stage of basic blocks at one width: the unit FSDP shards (`_no_split_modules`)."""


class ResNetBackbone(nn.Module):
    """(B, C, S, S) -> (B, F): stem, stages of basic blocks (stride 2 from the second), global average pool."""

    def __init__(self, config: SimCLRConfig):
        super().__init__()
        width = config.resnet_widths[0]
        if config.stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(config.num_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(config.num_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        stages, in_channels = [], width
        for i, (depth, out_channels) in enumerate(zip(config.resnet_layers, config.resnet_widths)):
            blocks = [
                BasicBlock(in_channels if j == 0 else out_channels, out_channels, 2 if (i > 0 and j == 0) else 1)
                for j in range(depth)
            ]
            stages.append(ResNetStage(*blocks))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(pixel_values)).mean(dim=(2, 3))  # (B, F)


class ViTBackbone(nn.Module):
    """(B, C, S, S) -> (B, F): patch embedding, [CLS] + learned positions, pre-norm transformer, [CLS] out."""

    def __init__(self, config: SimCLRConfig):
        super().__init__()
        d = config.vit_hidden_size
        num_patches = (config.image_size // config.patch_size) ** 2
        self.patch_embed = nn.Conv2d(config.num_channels, d, config.patch_size, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches + 1, d))
        layer = nn.TransformerEncoderLayer(
            d,
            config.vit_heads,
            int(d * config.vit_mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.vit_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)  # (B, P, d)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position_embeddings
        return self.norm(self.encoder(x))[:, 0]  # (B, d)


class ProjectionHead(nn.Module):
    """g: (B, F) -> (B, D), layers described by `dims`; all but the last are Linear -> BatchNorm -> ReLU."""

    def __init__(self, in_dim: int, dims: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, out_dim in enumerate(dims):
            last = i == len(dims) - 1
            layers.append(nn.Linear(in_dim, out_dim, bias=last))
            if not last:
                layers += [nn.BatchNorm1d(out_dim), nn.ReLU()]
            in_dim = out_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)


class SimCLRPreTrainedModel(PreTrainedModel):
    config_class = SimCLRConfig
    config: SimCLRConfig
    base_model_prefix = "simclr"
    main_input_name = "pixel_values"
    _no_split_modules = ["ResNetStage", "TransformerEncoderLayer"]  # what FSDP wraps (shards) as one unit
    input_modalities = ("image",)  # type: ignore[assignment]  # a tuple, as transformers' own models

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Kaiming for convolutions, truncated normal for linear layers and ViT tokens, identity norms."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ViTBackbone):
            nn.init.trunc_normal_(module.cls_token, std=self.config.initializer_range)
            nn.init.trunc_normal_(module.position_embeddings, std=self.config.initializer_range)


def _backbone(config: SimCLRConfig) -> nn.Module:
    return ResNetBackbone(config) if config.backbone == "resnet" else ViTBackbone(config)


class SimCLRModel(SimCLRPreTrainedModel):
    """Encoder phi and projection head g.

    forward(pixel_values) -> features h (and their projections z);
    forward(pixel_values, pixel_values_2) -> the NT-Xent loss of the two views as well.
    """

    def __init__(self, config: SimCLRConfig):
        super().__init__(config)
        self.encoder = _backbone(config)
        self.projection_head = ProjectionHead(config.hidden_size, config.projection_dims)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_values_2: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> SimCLROutput:
        """pixel_values, pixel_values_2: (B, C, S, S) normalised images (two views of the same B images).

        return_loss: compute the loss when two views are given (default True): `contrastive_loss()` of the
        projections, which contrasts against the views of every process when several train together.
        """
        views = pixel_values if pixel_values_2 is None else torch.cat([pixel_values, pixel_values_2], dim=0)
        h = self.encoder(views)  # (B or 2B, F): one pass, so BatchNorm sees both views together
        z = self.projection_head(h)  # (B or 2B, D)
        loss = None
        if pixel_values_2 is not None and return_loss is not False:
            z_a, z_b = z.chunk(2)
            loss = self.contrastive_loss()(z_a, z_b)
        return SimCLROutput(loss=loss, embeddings=h, projections=z, pooler_output=h)

    def contrastive_loss(self) -> nn.Module:
        """The model's NT-Xent loss (`hfssl.losses.NTXentLoss`): temperature `config.contrastive_temperature`, its one
        source; negatives gathered from every process (with gradients) when several train together."""
        try:
            from hfssl.losses import NTXentLoss
        except ImportError as err:
            raise ImportError("The contrastive loss needs the hfssl package: pip install hfssl.") from err
        return NTXentLoss(self.config.contrastive_temperature, gather_distributed=True)


class SimCLRForImageClassification(SimCLRPreTrainedModel):
    """Encoder phi + a linear classifier on the features: logits = W h + b, (B, num_labels).

    Loss as in transformers: cross-entropy (single label), MSE (num_labels == 1), BCE (multi-label).
    Loading a pretrained SimCLRModel checkpoint keeps the encoder and adds a fresh head.
    """

    _keys_to_ignore_on_load_unexpected = [r"projection_head\."]  # pretraining-only head of SimCLRModel

    def __init__(self, config: SimCLRConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = _backbone(config)
        self.classifier = nn.Linear(config.hidden_size, cast(int, config.num_labels))  # PreTrainedConfig sets it
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        h = self.encoder(pixel_values)  # (B, F)
        logits = self.classifier(h)  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=(h,))


__all__ = ["SimCLRForImageClassification", "SimCLRModel", "SimCLROutput", "SimCLRPreTrainedModel"]
