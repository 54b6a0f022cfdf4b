"""The contrastive objective (SimCLR): two augmentations of each image are a positive pair.

loss = NT-Xent over the global batch (see `hfssl.losses.NTXentLoss`); evaluation = kNN accuracy of the
encoder's features (`hfssl.training.knn`), bank from labelled training images, queries held out.

With --gradient_accumulation_steps k, the loss is NT-Xent over all k micro-batches by gradient cache
(`hfssl.training.gradient_cache`): the same loss and gradients as one batch k times larger (BatchNorm aside: its
statistics are per micro-batch), for one micro-batch's activation memory and one extra forward pass each.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from accelerate import Accelerator
from torch import nn
from transformers import AutoModel, ViTImageProcessor

from ..data.splits import held_out_split
from ..data.vision import ImageData, ImageTensorDataset, Normalize, SimCLRAugmentation, channel_stats, load_images
from ..models.encoders import SimCLRConfig, SimCLRModel
from ..models.loading import load_pretrained
from ..run.arguments import require_positive
from ..run.errors import InputError
from .arguments import ImageEncoderArguments, PretrainArguments
from .gradient_cache import gradient_cache_step
from .knn import knn_accuracy
from .objectives import Objective, PretrainingSetup

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ContrastiveArguments(ImageEncoderArguments, PretrainArguments):
    """`--objective contrastive`: a SimCLR image encoder, with a kNN monitor on held-out labelled images."""

    objective: str = field(default="contrastive", metadata={"help": "This objective: contrastive."})
    output_dir: str = field(default="outputs/simclr-digits", metadata={"help": "Where checkpoints and the model go."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Images: a parquet file, an image folder, a zip of images, a Hub name, or the built-in "
            "'digits' (scikit-learn, the default)."
        },
    )
    max_steps: int = field(default=500, metadata={"help": "Optimizer steps (overrides --num_train_epochs when > 0)."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    # ---- the encoder: ImageEncoderArguments' fields (a fresh one; --model_name_or_path keeps its own shape) ----
    projection_dims: list[int] = field(
        default_factory=lambda: [512, 128], metadata={"help": "Projection head widths (hidden ..., output)."}
    )
    # ---- the loss and the augmentations ----
    temperature: float | None = field(
        default=None,
        metadata={
            "help": "NT-Xent temperature tau, stored in the model's config (contrastive_temperature), the "
            "loss's one source. Default 0.5 for a fresh model (SimCLR used 0.5 on CIFAR-10; 0.1-0.2 for big "
            "batches), the loaded model's own with --model_name_or_path."
        },
    )
    blur: bool = field(
        default=False, metadata={"help": "Add Gaussian blur to the augmentations (helps on large images)."}
    )
    # ---- data columns and the kNN monitor ----
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(
        default="label", metadata={"help": "Column of class labels, used only by the kNN monitor."}
    )
    knn_k: list[int] = field(default_factory=lambda: [20, 200], metadata={"help": "k values of the kNN monitor."})
    knn_temperature: float = field(default=0.1, metadata={"help": "Vote temperature of the kNN monitor."})
    knn_bank_size: int = field(
        default=5000, metadata={"help": "Labelled training images in the kNN memory bank (a seeded subset)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_image_encoder()
        require_positive(
            self,
            "projection_dims",
            "temperature",
            "knn_k",
            "knn_temperature",
            "knn_bank_size",
        )
        if self.gradient_accumulation_steps > 1 and self.per_device_train_batch_size < 2:
            raise InputError(
                "--gradient_accumulation_steps with --per_device_train_batch_size 1: each micro-batch would hold one "
                "image, and its BatchNorm statistics would come from that image's two views alone. Use a "
                "per-device batch of at least 2."
            )


def _collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([ex["pixel_values"] for ex in examples]),  # uint8 (B, 3, S, S)
        "labels": torch.tensor([ex["labels"] for ex in examples], dtype=torch.long),  # (B,), -1 if unknown
    }


def _split(data: ImageData, fraction: float, seed: int) -> tuple[ImageData, ImageData | None]:
    if fraction <= 0 or len(data) < 2:
        return data, None
    train_idx, eval_idx = held_out_split(len(data), fraction, seed)
    return data.subset(train_idx), data.subset(eval_idx)


class ContrastiveObjective(Objective):
    name = "contrastive"
    arguments_class = ContrastiveArguments
    task = "image-feature-extraction"
    accumulates_groups = True  # NT-Xent over the whole accumulated batch (gradient cache)

    def __init__(self, args: ContrastiveArguments):
        super().__init__(args)
        self.augment: SimCLRAugmentation | None = None  # both set by setup()
        self.normalize: Normalize | None = None
        self.memory_format = torch.contiguous_format
        self.bank: ImageData | None = None
        self.bank_loader = None

    def _load(self, spec):
        a = self.args
        return load_images(
            spec,
            image_size=a.image_size,
            split=a.dataset_split,
            image_column=a.image_column,
            label_column=a.label_column,
        )

    def _model(self, label_names) -> nn.Module:
        """A fresh SimCLR encoder, or the given one; the loss's temperature is set in its config (its one source)."""
        a = self.args
        if a.model_name_or_path:
            model = load_pretrained(AutoModel, a.model_name_or_path)
            if a.temperature is not None:
                model.config.contrastive_temperature = a.temperature
            return model
        config = SimCLRConfig(
            backbone=a.backbone,
            image_size=a.image_size,
            resnet_layers=a.resnet_layers,
            resnet_widths=a.resnet_widths,
            projection_dims=a.projection_dims,
            contrastive_temperature=0.5 if a.temperature is None else a.temperature,
        )
        if label_names:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {name: i for i, name in config.id2label.items()}
        return SimCLRModel(config)

    def setup(self, accelerator: Accelerator, resuming: bool = False) -> PretrainingSetup:
        d = t = v = self.args
        if t.per_device_train_batch_size * accelerator.num_processes < 2:
            raise InputError(
                "Contrastive pretraining needs at least 2 images per global batch (with 1 there are no "
                "negatives): raise --per_device_train_batch_size."
            )
        with accelerator.main_process_first():  # the main process decodes and caches first
            train = self._load(d.dataset)
            held_out = self._load(d.eval_dataset) if d.eval_dataset else None
        if held_out is None:
            train, held_out = _split(train, d.eval_split_fraction, t.seed)
        mean, std = channel_stats(train.pixels)
        self.augment = SimCLRAugmentation(v.image_size, mean, std, blur=v.blur).to(accelerator.device)
        self.normalize = Normalize(mean, std).to(accelerator.device)
        if train.labels is not None and held_out is not None and held_out.labels is not None:
            generator = torch.Generator().manual_seed(t.seed)
            bank_index = torch.randperm(len(train), generator=generator)[: v.knn_bank_size]
            self.bank = train.subset(bank_index)
        else:
            logger.warning("No labels in %s: the kNN monitor is off.", train.name)
            held_out = None
        processor = ViTImageProcessor(
            size={"height": v.image_size, "width": v.image_size}, image_mean=mean, image_std=std
        )
        if self.bank is not None:  # prepared once, here: Accelerate checkpoints every prepared loader, in order
            self.bank_loader = accelerator.prepare(
                torch.utils.data.DataLoader(
                    ImageTensorDataset(self.bank), batch_size=t.per_device_eval_batch_size, collate_fn=_collate_images
                )
            )
        model = self._model(train.label_names)
        # convolutions run ~1.2-1.35x faster in channels-last layout on our CPUs (measured with ResNet-18)
        backbone = cast(SimCLRConfig, model.config).backbone
        self.memory_format = torch.channels_last if backbone == "resnet" else torch.contiguous_format
        model = model.to(memory_format=self.memory_format)
        eval_dataset = ImageTensorDataset(held_out) if held_out is not None else None
        return PretrainingSetup(model, ImageTensorDataset(train), eval_dataset, _collate_images, companions=[processor])

    # ---- steps -------------------------------------------------------------------------------------
    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = batch["pixel_values"]
        assert self.augment is not None, "setup() runs first"
        view_1, view_2 = (
            self.augment(pixels).contiguous(memory_format=self.memory_format)  # per-image randomness
            for _ in range(2)
        )
        return model(pixel_values=view_1, pixel_values_2=view_2).loss  # NT-Xent over the global batch

    def accumulated_step(self, model: nn.Module, batches: list[dict], accelerator: Accelerator) -> torch.Tensor:
        """With --gradient_accumulation_steps k: NT-Xent over all k micro-batches (and every process) by gradient
        cache (`hfssl.training.gradient_cache`); the parameters' gradients are those of one batch of k x B."""
        assert self.augment is not None, "setup() runs first"
        views = [
            tuple(self.augment(b["pixel_values"]).contiguous(memory_format=self.memory_format) for _ in range(2))
            for b in batches
        ]

        def embed(m, pair):
            return m(pixel_values=pair[0], pixel_values_2=pair[1], return_loss=False).projections.chunk(2)

        # accelerator.backward divides by the accumulation steps; the surrogates already carry the whole loss
        scale = self.args.gradient_accumulation_steps
        return gradient_cache_step(
            model,
            views,
            embed,
            accelerator.unwrap_model(model).contrastive_loss(),
            backward=lambda surrogate: accelerator.backward(surrogate * scale),
            micro_step=lambda i: accelerator.accumulate(model),
        )

    def items_in_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["pixel_values"].shape[0]  # images (each seen in two views)

    @torch.no_grad()
    def _features(self, model: nn.Module, loader, accelerator: Accelerator) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        assert self.normalize is not None, "setup() runs first"
        for batch in loader:
            x = self.normalize(batch["pixel_values"]).contiguous(memory_format=self.memory_format)
            h = model(pixel_values=x).embeddings
            h, y = accelerator.gather_for_metrics((h, batch["labels"]))
            feats.append(h.float())
            labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_loader, accelerator: Accelerator) -> dict[str, float]:
        """kNN accuracy (each k of --knn_k) of held-out images against the labelled memory bank."""
        model.eval()
        bank, bank_labels = self._features(model, self.bank_loader, accelerator)
        queries, query_labels = self._features(model, eval_loader, accelerator)
        model.train()
        assert self.bank is not None and self.bank.label_names is not None, "evaluated only with a labelled bank"
        num_classes = len(self.bank.label_names)
        return {
            f"knn_top1_k{k}": knn_accuracy(
                queries, query_labels, bank, bank_labels, num_classes, k, self.args.knn_temperature
            )
            for k in self.args.knn_k
        }

    def finish(self, model: nn.Module, output_dir: Path, accelerator: Accelerator) -> str:
        config = cast(SimCLRConfig, model.config)
        h = config.hidden_size
        return (
            f"SimCLR encoder ({config.backbone}, {h}-d features) saved with its image processor. Load it "
            "with AutoModel / AutoModelForImageClassification or pipeline('image-feature-extraction')."
        )
