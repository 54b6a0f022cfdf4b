"""The contrastive objective (SimCLR): two augmentations of each image are a positive pair.

loss = NT-Xent over the global batch (see `hfssl.losses.NTXentLoss`); evaluation = kNN accuracy of the
encoder's features (`hfssl.training.knn`), bank from labelled training images, queries held out.

Gradient accumulation is refused: accumulating k micro-batches would contrast each image against the
negatives of its own micro-batch only (a k-times smaller pool), which is not the large-batch SimCLR
the flag suggests. Use a larger per-device batch or more processes instead.
"""

import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from transformers import AutoModel, ViTImageProcessor

from ..data.splits import held_out_split
from ..data.vision import ImageData, ImageTensorDataset, Normalize, SimCLRAugmentation, channel_stats, load_images
from ..losses import NTXentLoss
from ..models.simclr import SimCLRConfig, SimCLRModel
from .arguments import DataArguments, ModelArguments, PretrainArguments, VisionArguments
from .knn import knn_accuracy
from .objectives import PretrainingSetup, register_objective

logger = logging.getLogger(__name__)


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


@register_objective
class ContrastiveObjective:
    name = "contrastive"

    def __init__(
        self,
        model_args: ModelArguments,
        data_args: DataArguments,
        train_args: PretrainArguments,
        vision_args: VisionArguments | None = None,
    ):
        self.model_args, self.data_args, self.train_args = model_args, data_args, train_args
        self.vision = vision_args or VisionArguments()
        self.loss = NTXentLoss(self.vision.temperature, gather_distributed=True)
        self.augment = self.normalize = None
        self.memory_format = torch.contiguous_format
        self.bank: ImageData | None = None
        self.bank_loader = None

    def _validate(self, accelerator: Accelerator) -> None:
        t = self.train_args
        if t.gradient_accumulation_steps > 1:
            raise ValueError(
                "--objective contrastive does not support --gradient_accumulation_steps > 1: accumulation would "
                "contrast each image only against its own micro-batch. Raise --per_device_train_batch_size or "
                "use more processes to get more negatives."
            )
        if t.per_device_train_batch_size * accelerator.num_processes < 2:
            raise ValueError(
                "Contrastive pretraining needs at least 2 images per global batch (with 1 there are no "
                "negatives): raise --per_device_train_batch_size."
            )

    def _load(self, spec):
        v = self.vision
        return load_images(
            spec,
            image_size=v.image_size,
            split=self.data_args.dataset_split,
            image_column=v.image_column,
            label_column=v.label_column,
        )

    def _model(self, label_names) -> nn.Module:
        v = self.vision
        if self.model_args.model_name_or_path:
            return AutoModel.from_pretrained(self.model_args.model_name_or_path)
        config = SimCLRConfig(
            backbone=v.backbone,
            image_size=v.image_size,
            resnet_layers=v.resnet_layers,
            resnet_widths=v.resnet_widths,
            projection_dims=v.projection_dims,
            contrastive_temperature=v.temperature,
        )
        if label_names:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {name: i for i, name in config.id2label.items()}
        return SimCLRModel(config)

    def setup(self, accelerator: Accelerator, resuming: bool = False) -> PretrainingSetup:
        self._validate(accelerator)
        d, t, v = self.data_args, self.train_args, self.vision
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
        self.memory_format = torch.channels_last if model.config.backbone == "resnet" else torch.contiguous_format
        model = model.to(memory_format=self.memory_format)
        eval_dataset = ImageTensorDataset(held_out) if held_out is not None else None
        return PretrainingSetup(model, ImageTensorDataset(train), eval_dataset, _collate_images, companions=[processor])

    # ---- steps -------------------------------------------------------------------------------------
    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = batch["pixel_values"]
        view_1, view_2 = (
            self.augment(pixels).contiguous(memory_format=self.memory_format)  # per-image randomness
            for _ in range(2)
        )
        out = model(pixel_values=view_1, pixel_values_2=view_2, return_loss=False)
        z_1, z_2 = out.projections.chunk(2)
        return self.loss(z_1, z_2)

    def items_in_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["pixel_values"].shape[0]  # images (each seen in two views)

    @torch.no_grad()
    def _features(self, model: nn.Module, loader, accelerator: Accelerator) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
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
        num_classes = len(self.bank.label_names)
        return {
            f"knn_top1_k{k}": knn_accuracy(
                queries, query_labels, bank, bank_labels, num_classes, k, self.vision.knn_temperature
            )
            for k in self.vision.knn_k
        }

    def finish(self, model: nn.Module, output_dir: Path, accelerator: Accelerator) -> str:
        h = model.config.hidden_size
        return (
            f"SimCLR encoder ({model.config.backbone}, {h}-d features) saved with its image processor. Load it "
            "with AutoModel / AutoModelForImageClassification or pipeline('image-feature-extraction')."
        )
