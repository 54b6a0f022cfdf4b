"""Zero-shot image classification as a task: labelled images, class names in caption templates, accuracy per class
and throughput (`scripts/zero_shot_image.py`). The math (prompt ensembling, scaled cosine logits) lives with the
model, in `hfssl.models.dual_encoder`; class embeddings are computed once for all images.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.caption_templates import read_templates
from ..data.vision import ImageData, Normalize, load_images
from ..models.dual_encoder import check_class_names, class_embeddings, zero_shot_logits
from ..run.errors import InputError


@dataclass
class ZeroShotResult:
    """Accuracy over `num_images` held-out images; per-class accuracy by name; throughput of the image side alone
    (the class embeddings, computed once, are timed apart)."""

    accuracy: float
    num_images: int
    class_names: list[str]
    num_templates: int
    per_class_accuracy: dict[str, float]
    images_per_second: float
    class_embedding_seconds: float


@torch.no_grad()
def evaluate_zero_shot(
    model,
    tokenizer,
    images: ImageData,
    normalize: Normalize,
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 128,
) -> ZeroShotResult:
    """Zero-shot accuracy of `model` on labelled `images` (labels index `class_names`), uint8 pixels normalised by
    `normalize` (the model's image processor's mean and std)."""
    if images.labels is None:
        raise InputError(f"{images.name} has no labels: zero-shot accuracy needs them.")
    model.eval()
    started = time.perf_counter()
    classes = class_embeddings(model, tokenizer, class_names, templates)
    text_seconds = time.perf_counter() - started
    device = next(model.parameters()).device
    normalize = normalize.to(device)
    predictions = []
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        pixels = normalize(images.pixels[start : start + batch_size].to(device))
        predictions.append(zero_shot_logits(model, pixels, classes).argmax(dim=-1).cpu())
    image_seconds = time.perf_counter() - started
    predicted = torch.cat(predictions)
    correct = predicted == images.labels
    names = check_class_names(class_names)
    per_class = {
        name: float(correct[images.labels == c].float().mean())
        for c, name in enumerate(names)
        if bool((images.labels == c).any())
    }
    return ZeroShotResult(
        accuracy=float(correct.float().mean()),
        num_images=len(images),
        class_names=names,
        num_templates=len(templates),
        per_class_accuracy=per_class,
        images_per_second=len(images) / max(image_seconds, 1e-9),
        class_embedding_seconds=text_seconds,
    )


@dataclass(kw_only=True)
class ZeroShotImageArguments:
    """`scripts/zero_shot_image.py`: zero-shot accuracy of a dual encoder on labelled images."""

    model_name_or_path: str = field(
        metadata={
            "help": "A saved dual encoder (hfssl's, or a transformers CLIP) with its tokenizer and image processor."
        }
    )
    dataset: str = field(
        default="digits",
        metadata={
            "help": "Labelled images: parquet, image folder, CSV / JSON Lines of paths, a Hub name, or 'digits'."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column of class labels."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Names of the classes in label order, instead of the data set's own."}
    )
    classes: list[str] | None = field(
        default=None, metadata={"help": "Classify only the images of these classes, among these names (default: all)."}
    )
    templates: str = field(
        default="cifar",
        metadata={"help": "photo (1), cifar (18), simple (7), openai (80), or a file with one template per line."},
    )
    ensemble: bool = field(
        default=True, metadata={"help": "Average the embeddings of every template (False: the first template only)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "A seeded subset of the images (None: all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the --max_eval_samples subset."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Images per forward pass."})
    output_file: str | None = field(default=None, metadata={"help": "Write the result here as JSON."})


def _image_geometry(processor) -> tuple[int, list[float], list[float]]:
    """(side S, mean, std) of an image processor: the crop of a CLIP-style one, else its size."""
    size = getattr(processor, "crop_size", None) or processor.size
    side = size.get("height") or size.get("shortest_edge")
    return int(side), list(processor.image_mean), list(processor.image_std)


def _restricted(images: ImageData, names: list[str], chosen: list[str]) -> tuple[ImageData, list[str]]:
    """The images of the `chosen` classes, relabelled 0 .. len(chosen) - 1 in that order."""
    missing = [name for name in chosen if name not in names]
    if missing:
        raise InputError(f"--classes names {', '.join(missing)}, which are not among the classes: {', '.join(names)}.")
    return images.of_classes([names.index(name) for name in chosen], relabel=True), chosen


def run_zero_shot_image(args: ZeroShotImageArguments) -> ZeroShotResult:
    """Load the model and the images, classify them zero-shot, write --output_file when given."""
    from transformers import AutoModelForZeroShotImageClassification

    from ..models.loading import load_image_processor, load_pretrained, load_tokenizer

    templates = read_templates(args.templates)
    templates = templates if args.ensemble else templates[:1]
    model = load_pretrained(AutoModelForZeroShotImageClassification, args.model_name_or_path)
    tokenizer = load_tokenizer(args.model_name_or_path)
    side, mean, std = _image_geometry(load_image_processor(args.model_name_or_path))
    images = load_images(
        args.dataset,
        image_size=side,
        split=args.dataset_split,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    if images.labels is None or not images.label_names:
        raise InputError(f"{images.name} has no label column {args.label_column!r}: zero-shot accuracy needs labels.")
    names = check_class_names(args.class_names or images.label_names)
    if len(names) != len(images.label_names):
        raise InputError(
            f"--class_names gives {len(names)} names; {images.name} has {len(images.label_names)} classes."
        )
    if args.classes:
        images, names = _restricted(images, names, check_class_names(args.classes))
    if args.max_eval_samples is not None and args.max_eval_samples < len(images):
        generator = torch.Generator().manual_seed(args.seed)
        images = images.subset(torch.randperm(len(images), generator=generator)[: args.max_eval_samples])
    result = evaluate_zero_shot(
        model, tokenizer, images, Normalize(mean, std), names, templates, args.per_device_eval_batch_size
    )
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_file).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result
