"""Configuration of the hfssl SimCLR contrastive vision encoder."""

from transformers import PretrainedConfig

_AUTO_MAP = {
    "AutoConfig": "configuration_simclr.SimCLRConfig",
    "AutoModel": "modeling_simclr.SimCLRModel",
    "AutoModelForImageClassification": "modeling_simclr.SimCLRForImageClassification",
}


class SimCLRConfig(PretrainedConfig):
    r"""Every architectural hyperparameter of [`SimCLRModel`]: encoder phi, projection head g, temperature.

    Args:
        backbone: "resnet" (default) or "vit".
        num_channels / image_size: input images are (num_channels, image_size, image_size).
        stem: ResNet stem, "cifar" (3x3 conv, stride 1, no max-pool: for images of ~32 px) or "imagenet"
            (7x7 conv, stride 2, max-pool).
        resnet_layers: residual basic blocks per stage ([2, 2, 2, 2] is ResNet-18).
        resnet_widths: channels per stage; the feature size is the last one.
        patch_size / vit_hidden_size / vit_layers / vit_heads / vit_mlp_ratio: the small ViT backbone.
        projection_dims: widths of the projection head g after the feature size; every layer but the last
            is Linear -> BatchNorm -> ReLU (SimCLR's MLP head). [2048, 128] as in the paper; [] for none.
        contrastive_temperature: tau of the NT-Xent loss (not "temperature": transformers reserves that for generation).
    """

    model_type = "hfssl_simclr"

    def __init__(
        self,
        backbone: str = "resnet",
        num_channels: int = 3,
        image_size: int = 32,
        stem: str = "cifar",
        resnet_layers: list[int] | None = None,
        resnet_widths: list[int] | None = None,
        patch_size: int = 4,
        vit_hidden_size: int = 192,
        vit_layers: int = 6,
        vit_heads: int = 3,
        vit_mlp_ratio: float = 4.0,
        projection_dims: list[int] | None = None,
        contrastive_temperature: float = 0.5,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if backbone not in ("resnet", "vit"):
            raise ValueError(f"backbone must be 'resnet' or 'vit', got {backbone!r}.")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}.")
        resnet_layers = list(resnet_layers) if resnet_layers is not None else [2, 2, 2, 2]
        resnet_widths = list(resnet_widths) if resnet_widths is not None else [64, 128, 256, 512]
        if len(resnet_layers) != len(resnet_widths):
            raise ValueError(
                f"resnet_layers {resnet_layers} and resnet_widths {resnet_widths} need one entry per stage."
            )
        if backbone == "vit":
            if image_size % patch_size:
                raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size}).")
            if vit_hidden_size % vit_heads:
                raise ValueError(f"vit_hidden_size ({vit_hidden_size}) must be divisible by vit_heads ({vit_heads}).")
        if contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature must be positive, got {contrastive_temperature}.")
        self.backbone = backbone
        self.num_channels = num_channels
        self.image_size = image_size
        self.stem = stem
        self.resnet_layers = resnet_layers
        self.resnet_widths = resnet_widths
        self.patch_size = patch_size
        self.vit_hidden_size = vit_hidden_size
        self.vit_layers = vit_layers
        self.vit_heads = vit_heads
        self.vit_mlp_ratio = vit_mlp_ratio
        self.projection_dims = list(projection_dims) if projection_dims is not None else [2048, 128]
        self.contrastive_temperature = contrastive_temperature
        self.initializer_range = initializer_range
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        """Size of the features h = phi(x)."""
        return self.resnet_widths[-1] if self.backbone == "resnet" else self.vit_hidden_size


__all__ = ["SimCLRConfig"]
