"""The image-text objective (CLIP, Radford et al. 2021): an image and its caption are a positive pair.

loss = the symmetric InfoNCE loss over the global batch (`hfssl.losses.ImageTextContrastiveLoss`); evaluation =
zero-shot accuracy on held-out labelled images (`hfssl.models.dual_encoder`), from class names in templates.

Locked towers (open_clip's --lock-text; LiT, Zhai et al. 2022, locks the image tower): a locked tower is frozen, and
its outputs are computed once, before training, for every distinct caption (text) or every training image (image;
then without augmentation, as its features are fixed), so that it costs nothing per step.

With --gradient_accumulation_steps k, the loss is taken over all k micro-batches by gradient cache
(`hfssl.training.gradient_cache`): the same loss and gradients as one batch k times larger (BatchNorm aside).
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from transformers import AutoModel, ViTImageProcessor

from ..data.caption_templates import read_templates
from ..data.image_text import CaptionedImages, draw_captions, load_captioned_images
from ..data.splits import held_out_split
from ..data.vision import ImageData, ImageTensorDataset, Normalize, channel_stats, load_images
from ..models.dual_encoder import (
    build_dual_encoder,
    caption_length,
    check_class_names,
    class_embeddings,
    zero_shot_logits,
)
from ..models.encoders import DualEncoderModel
from ..models.loading import load_pretrained, load_tokenizer
from ..run.arguments import require_positive
from ..run.errors import InputError
from .arguments import ImageEncoderArguments, PretrainArguments
from .gradient_cache import gradient_cache_step
from .objectives import Objective, PretrainingSetup

logger = logging.getLogger(__name__)

# exp(logit_scale) near 1 has collapsed (all logits alike); at the clamp, it can grow no further (open_clip #815, #1123)
COLLAPSED_SCALE = 1.5


@dataclass(kw_only=True)
class ClipArguments(ImageEncoderArguments, PretrainArguments):
    """`--objective clip`: an image tower and a text tower trained to match images with their captions."""

    objective: str = field(default="clip", metadata={"help": "This objective: clip."})
    output_dir: str = field(default="outputs/clip-digits", metadata={"help": "Where checkpoints and the model go."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Images with captions: a parquet / CSV / JSON Lines file or an image folder with a caption column, "
            "or labelled images captioned from their class names (--templates); a Hub name; default the built-in "
            "'digits'."
        },
    )
    max_steps: int = field(default=300, metadata={"help": "Optimizer steps (overrides --num_train_epochs when > 0)."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak AdamW learning rate."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Image-caption pairs per process."})
    # ---- the towers ----
    text_model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "The text tower: a Hub id, a folder or a GGUF file (offline: python -m hfssl.reference fetch)."
        },
    )
    text_tower_init: str = field(
        default="pretrained", metadata={"help": "'pretrained' (its weights) or 'random' (its architecture, fresh)."}
    )
    text_pooling: str | None = field(
        default=None,
        metadata={"help": "cls, mean or last; default what the text model was trained for (mean for MiniLM)."},
    )
    image_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A saved SimCLR encoder whose backbone starts the image tower (default: a fresh one)."},
    )
    projection_dim: int = field(default=256, metadata={"help": "Size of the shared image-text embedding space."})
    logit_scale_init: float = field(
        default=math.log(1 / 0.07), metadata={"help": "Initial log inverse temperature (CLIP: log(1 / 0.07))."}
    )
    lock_text_tower: bool = field(
        default=False,
        metadata={"help": "Freeze the pretrained text tower (open_clip --lock-text); its caption features are cached."},
    )
    lock_image_tower: bool = field(
        default=False,
        metadata={
            "help": "Freeze the pretrained image tower (LiT): needs --image_model_name_or_path; its features are "
            "cached, so training images are not augmented."
        },
    )
    # ---- data ----
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    caption_column: str | None = field(
        default=None, metadata={"help": "Column of captions (default: 'caption' or 'text' if present)."}
    )
    label_column: str = field(default="label", metadata={"help": "Column of class labels (captions, zero-shot eval)."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Names of the classes in label order, instead of the data set's own."}
    )
    templates: str = field(
        default="cifar",
        metadata={
            "help": "Caption templates for class names, in training and in zero-shot evaluation: photo (1), cifar "
            "(18), simple (7), openai (80), or a file with one template per line."
        },
    )
    train_classes: list[str] | None = field(
        default=None,
        metadata={"help": "Train only on images of these classes; zero-shot evaluation reports the others as unseen."},
    )
    augment: bool = field(
        default=True, metadata={"help": "Random resized crops (scale 0.9-1) of training images, as open_clip's."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_image_encoder()
        require_positive(self, "projection_dim")
        if self.lock_image_tower and not self.image_model_name_or_path:
            raise InputError(
                "--lock_image_tower freezes a pretrained image tower: give one with --image_model_name_or_path (a "
                "saved SimCLR encoder)."
            )
        if self.lock_text_tower and self.text_tower_init == "random":
            raise InputError("--lock_text_tower with --text_tower_init random would freeze random weights.")
        if not 0 < math.exp(self.logit_scale_init) <= 100:
            raise InputError(
                f"--logit_scale_init {self.logit_scale_init} puts the scale exp(t) above its clamp of 100: use at most "
                f"log(100) = {math.log(100):.3f}."
            )
        if self.model_name_or_path and self.image_model_name_or_path:
            raise InputError("--model_name_or_path continues a saved dual encoder: drop --image_model_name_or_path.")


class PairDataset(torch.utils.data.Dataset):
    """Rows {"index", "pixel_values": uint8 (3, S, S), "caption_options": (K,) caption ids, "labels"} of
    CaptionedImages (labels -1 when unknown)."""

    def __init__(self, data: CaptionedImages):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        labels = self.data.images.labels
        return {
            "index": i,
            "pixel_values": self.data.images.pixels[i],
            "caption_options": self.data.options[i],
            "labels": int(labels[i]) if labels is not None else -1,
        }


def _collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Held-out images: {"pixel_values": uint8 (B, 3, S, S), "labels": (B,)}."""
    return {
        "pixel_values": torch.stack([ex["pixel_values"] for ex in examples]),
        "labels": torch.tensor([ex["labels"] for ex in examples], dtype=torch.long),
    }


def _collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "index": torch.tensor([ex["index"] for ex in examples], dtype=torch.long),
        "pixel_values": torch.stack([ex["pixel_values"] for ex in examples]),
        "caption_options": torch.stack([ex["caption_options"] for ex in examples]),
        "labels": torch.tensor([ex["labels"] for ex in examples], dtype=torch.long),
    }


def _class_ids(chosen: list[str], names: list[str], flag: str, where: str) -> list[int]:
    """Positions of `chosen` among the class names; InputError naming those that are not there."""
    missing = [name for name in chosen if name not in names]
    if missing:
        raise InputError(f"{flag} names {', '.join(missing)}, which {where} does not have: {', '.join(names)}.")
    return [names.index(name) for name in chosen]


def _held_out_labels(held_out: ImageData, training_names: list[str], class_names: list[str]) -> ImageData:
    """A separate held-out set's labels renumbered, by its class names, into the training set's order (whose names
    are `training_names`, shown as `class_names`)."""
    ids = _class_ids(held_out.label_names or [], training_names, "The held-out set", "the training set")
    assert held_out.labels is not None
    held_out.labels = torch.tensor(ids)[held_out.labels]
    held_out.label_names = list(class_names)
    return held_out


@torch.no_grad()
def _in_batches(fn, n: int, batch_size: int, device) -> torch.Tensor:
    """fn(slice) -> (b, d) for consecutive slices of range(n), concatenated: (n, d)."""
    return torch.cat([fn(slice(s, min(s + batch_size, n))).float() for s in range(0, n, batch_size)]).to(device)


class ClipObjective(Objective):
    name = "clip"
    arguments_class = ClipArguments
    task = "zero-shot-image-classification"
    accumulates_groups = True  # the loss over the whole accumulated batch (gradient cache)

    def __init__(self, args: ClipArguments):
        super().__init__(args)
        self.templates = read_templates(args.templates)
        self.tokenizer: Any = None  # the rest is set by setup()
        self.tokens: list[list[int]] = []
        self.text_cache: torch.Tensor | None = None
        self.image_cache: torch.Tensor | None = None
        self.normalize: Normalize | None = None
        self.augment: nn.Module | None = None
        self.class_names: list[str] = []
        self.unseen: list[int] = []

    # ---- setup -------------------------------------------------------------------------------------------------------
    def _model(self) -> DualEncoderModel:
        a = self.args
        if a.model_name_or_path:
            model = load_pretrained(AutoModel, a.model_name_or_path)
            if not isinstance(model, DualEncoderModel):
                raise InputError(f"--model_name_or_path {a.model_name_or_path} is not an hfssl dual encoder.")
            self.tokenizer = load_tokenizer(a.model_name_or_path)
            return model
        model, self.tokenizer = build_dual_encoder(
            a.text_model_name_or_path,
            text_init=a.text_tower_init,
            text_pooling=a.text_pooling,
            image_model=a.image_model_name_or_path,
            image_config=self._fresh_image_config(),
            projection_dim=a.projection_dim,
            logit_scale_init_value=a.logit_scale_init,
        )
        return model

    def _fresh_image_config(self):
        from ..models.encoders import SimCLRConfig

        a = self.args
        return SimCLRConfig(
            backbone=a.backbone, image_size=a.image_size, resnet_layers=a.resnet_layers, resnet_widths=a.resnet_widths
        )

    def _data(self, accelerator: Accelerator) -> tuple[CaptionedImages, ImageData | None]:
        """(training pairs, held-out labelled images for zero-shot evaluation, or None): the class names (renamed by
        --class_names), the training classes (--train_classes, the others unseen), a seeded --max_eval_samples."""
        a = self.args
        with accelerator.main_process_first():  # the main process decodes and caches first
            data = load_captioned_images(
                a.dataset,
                templates=self.templates,
                image_size=a.image_size,
                split=a.dataset_split,
                image_column=a.image_column,
                caption_column=a.caption_column,
                label_column=a.label_column,
                class_names=a.class_names,
            )
            held_out = (
                load_images(
                    a.eval_dataset, image_size=a.image_size, image_column=a.image_column, label_column=a.label_column
                )
                if a.eval_dataset
                else None
            )
        if held_out is None and a.eval_split_fraction > 0 and len(data) >= 2:
            train_idx, eval_idx = held_out_split(len(data), a.eval_split_fraction, a.seed)
            data, held_out = data.subset(train_idx), data.images.subset(eval_idx)
        names = list(a.class_names or data.images.label_names or [])
        if names:
            self.class_names = check_class_names(names)
        if a.train_classes:
            where = data.images.name + (" (--class_names)" if a.class_names else "")
            seen = _class_ids(check_class_names(a.train_classes), self.class_names, "--train_classes", where)
            labels = data.images.labels
            if labels is None:
                raise InputError(f"--train_classes chooses images by class: {data.images.name} has no labels.")
            data = data.subset(torch.isin(labels, torch.tensor(seen)).nonzero().squeeze(1))
            self.unseen = [i for i in range(len(self.class_names)) if i not in seen]
        if held_out is not None and (held_out.labels is None or not self.class_names):
            logger.warning("No class labels in the held-out images: zero-shot evaluation is off.")
            return data, None
        if held_out is not None and a.eval_dataset:
            held_out = _held_out_labels(held_out, data.images.label_names or [], self.class_names)
        if held_out is not None and a.max_eval_samples is not None and len(held_out) > a.max_eval_samples:
            order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(a.seed))
            held_out = held_out.subset(order[: a.max_eval_samples])
        return data, held_out

    def setup(self, accelerator: Accelerator, resuming: bool = False) -> PretrainingSetup:
        a = self.args
        if a.per_device_train_batch_size * accelerator.num_processes < 2:
            raise InputError(
                "Image-text pretraining needs at least 2 pairs per global batch (with 1 there are no negatives): raise "
                "--per_device_train_batch_size."
            )
        train, held_out = self._data(accelerator)
        mean, std = channel_stats(train.images.pixels)
        self.normalize = Normalize(mean, std).to(accelerator.device)
        if a.augment and not a.lock_image_tower:
            import kornia.augmentation as K

            self.augment = K.RandomResizedCrop((a.image_size, a.image_size), scale=(0.9, 1.0)).to(accelerator.device)
        model = self._model().to(accelerator.device)
        assert self.tokenizer is not None, "_model sets it"
        longest = caption_length(model, self.tokenizer)
        self.tokens = self.tokenizer(train.captions, truncation=True, max_length=longest)["input_ids"]
        self._lock(model, train, accelerator.device)
        processor = ViTImageProcessor(
            size={"height": a.image_size, "width": a.image_size}, image_mean=mean, image_std=std
        )
        eval_dataset = ImageTensorDataset(held_out) if held_out is not None else None
        return PretrainingSetup(
            model,
            PairDataset(train),
            eval_dataset,
            _collate,
            companions=[processor, self.tokenizer],
            eval_collate_fn=_collate_images,
        )

    def _lock(self, model: DualEncoderModel, train: CaptionedImages, device) -> None:
        """Freeze the locked towers and cache their outputs; freeze a text pooler the pooling never reads (BERT's),
        whose parameters would otherwise get no gradient (an error under DistributedDataParallel)."""
        a = self.args
        batch = self.args.per_device_eval_batch_size
        for name, parameter in model.text_encoder.named_parameters():
            if name.startswith("pooler."):
                parameter.requires_grad_(False)
        model.eval()
        if a.lock_text_tower:
            model.text_encoder.requires_grad_(False)
            self.text_cache = _in_batches(
                lambda s: model.text_tower_features(**self._padded(self.tokens[s], device)),
                len(self.tokens),
                batch,
                device,
            )
            logger.info("Text tower locked: %d caption features cached", len(self.tokens))
        if a.lock_image_tower:
            model.image_encoder.requires_grad_(False)
            assert self.normalize is not None
            pixels = train.images.pixels
            self.image_cache = _in_batches(
                lambda s: model.image_tower_features(self.normalize(pixels[s].to(device))), len(pixels), batch, device
            )
            logger.info("Image tower locked: %d image features cached (no augmentation)", len(pixels))
        model.train()

    # ---- steps -------------------------------------------------------------------------------------------------------
    def _padded(self, token_lists, device) -> dict[str, torch.Tensor]:
        """Token id lists -> input_ids and attention_mask (B, T), padded to the longest."""
        assert self.tokenizer is not None
        encoded = self.tokenizer.pad({"input_ids": token_lists}, return_tensors="pt")
        return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}

    def _pair_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's inputs for a batch: each image's caption drawn among its own (torch's global generator, saved
        with checkpoints), a locked tower's cached outputs in place of its inputs."""
        device = batch["pixel_values"].device
        caption_ids = draw_captions(batch["caption_options"])
        inputs: dict[str, torch.Tensor] = {}
        if self.image_cache is not None:
            inputs["image_tower_features"] = self.image_cache[batch["index"]]
        else:
            assert self.normalize is not None
            pixels = batch["pixel_values"]
            if self.augment is not None:  # on [0, 1] images; Normalize takes the 0-255 scale
                pixels = self.augment(pixels.float() / 255) * 255
            inputs["pixel_values"] = self.normalize(pixels)
        if self.text_cache is not None:
            inputs["text_tower_features"] = self.text_cache[caption_ids]
        else:
            inputs.update(self._padded([self.tokens[i] for i in caption_ids.tolist()], device))
        return inputs

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**self._pair_inputs(batch), return_loss=True).loss

    def accumulated_step(self, model: nn.Module, batches: list[dict], accelerator: Accelerator) -> torch.Tensor:
        """With --gradient_accumulation_steps k: the loss over all k micro-batches (and every process) by gradient
        cache; the scale s rides along as a (b, 1) column so that its gradient is cached too."""
        inputs = [self._pair_inputs(b) for b in batches]  # drawn once: both passes see the same pairs

        def embed(m, x):
            out = m(**x)
            return out.image_embeds, out.text_embeds, out.logit_scale.expand(out.image_embeds.shape[0], 1)

        loss = accelerator.unwrap_model(model).contrastive_loss()
        scale = self.args.gradient_accumulation_steps  # accelerator.backward divides by it; the surrogates do not
        return gradient_cache_step(
            model,
            inputs,
            embed,
            lambda u, v, s: loss(u, v, s[0, 0]),
            backward=lambda surrogate: accelerator.backward(surrogate * scale),
            micro_step=lambda i: accelerator.accumulate(model),
        )

    def items_in_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["pixel_values"].shape[0]  # image-caption pairs

    # ---- evaluation --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_loader, accelerator: Accelerator) -> dict[str, float]:
        """Zero-shot top-1 accuracy of held-out images among all class names (and, with --train_classes, of the unseen
        classes' images among the unseen names only); the learned scale s, with a warning when it has collapsed
        toward 1 or sits at its clamp."""
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.eval()
        classes = class_embeddings(unwrapped, self.tokenizer, self.class_names, self.templates)  # (C, D), once
        assert self.normalize is not None
        predicted: list[torch.Tensor] = []
        unseen_predicted: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        for batch in eval_loader:
            logits = zero_shot_logits(unwrapped, self.normalize(batch["pixel_values"]), classes)  # (B, C)
            unseen = torch.tensor(self.unseen or [0], device=logits.device)
            best_unseen = unseen[logits[:, unseen].argmax(dim=1)]
            gathered = accelerator.gather_for_metrics((logits.argmax(dim=1), best_unseen, batch["labels"]))
            for kept, value in zip((predicted, unseen_predicted, labels), gathered):
                kept.append(value.cpu())
        unwrapped.train()
        y, y_hat, y_unseen = torch.cat(labels), torch.cat(predicted), torch.cat(unseen_predicted)
        scale = float(unwrapped.logit_scale_value())
        metrics = {"zero_shot_top1": float((y_hat == y).float().mean()), "logit_scale": scale}
        is_unseen = torch.isin(y, torch.tensor(self.unseen or [-1]))
        if is_unseen.any() and not is_unseen.all():
            metrics["zero_shot_top1_unseen"] = float((y_unseen[is_unseen] == y[is_unseen]).float().mean())
            metrics["zero_shot_top1_seen"] = float((y_hat[~is_unseen] == y[~is_unseen]).float().mean())
        self._check_scale(scale, unwrapped.config.max_logit_scale)
        return metrics

    @staticmethod
    def _check_scale(scale: float, clamp: float) -> None:
        if scale < COLLAPSED_SCALE:
            logger.warning(
                "The logit scale exp(t) = %.3f has collapsed toward 1: every pair scores alike. Lower the learning "
                "rate, or raise --logit_scale_init.",
                scale,
            )
        elif scale >= clamp * 0.999:
            logger.warning(
                "The logit scale sits at its clamp (%.1f): the model wants a lower temperature than allowed; on small "
                "data this often means it memorises the batch. Lower the learning rate or add data.",
                clamp,
            )

    def finish(self, model: nn.Module, output_dir: Path, accelerator: Accelerator) -> str:
        return (
            f"Dual encoder saved with its image processor and tokenizer. Classify images zero-shot with "
            f"pipeline('zero-shot-image-classification', model='{output_dir}') or scripts/zero_shot_image.py."
        )
