"""Image-caption pairs for CLIP-style training: captions from a column beside the images, or made from class names.

A data set is any image spec of `hfssl.data.vision` (parquet, image folder with a `metadata.csv`, CSV / JSON Lines
of image paths, Hub name, the built-in digits). Its captions:
- a caption column (`--caption_column`, default the first of "caption" / "text" the table has): one string per
  image, or a list of strings (several captions of one image, as COCO has); training draws one per step;
- otherwise, class names in templates: every image of class c has the captions template_t(c) for each template
  (CLIP's prompts, `hfssl.data.caption_templates`), one drawn per step.

Captions are kept once each (`captions`), and every image lists the ids of its own (`options`, (N, K), -1 where an
image has fewer than K), so that a locked text tower embeds each distinct caption once.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..run.errors import InputError
from .vision import BUILTIN_IMAGE_DATASETS, ImageData, load_image_table, load_images

logger = logging.getLogger(__name__)

CAPTION_COLUMNS = ("caption", "text")  # looked for, in this order, when no --caption_column is given


@dataclass
class CaptionedImages:
    """images: pixels (N, 3, S, S) and class labels when known; captions: the distinct captions; options: (N, K)
    caption ids of each image, -1 padding; described: where the captions came from, for the log."""

    images: ImageData
    captions: list[str]
    options: torch.Tensor
    described: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> "CaptionedImages":
        indices = torch.as_tensor(indices, dtype=torch.long)
        return CaptionedImages(self.images.subset(indices), self.captions, self.options[indices], self.described)


def draw_captions(options: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One caption id per image, uniformly among its own: options rows (B, K), -1 padding -> (B,)."""
    counts = (options >= 0).sum(dim=1)  # every image has at least one
    picks = (torch.rand(options.shape[0], generator=generator, device=options.device) * counts).long()
    return options.gather(1, picks.unsqueeze(1)).squeeze(1)


def template_captions(images: ImageData, class_names: Sequence[str], templates: Sequence[str]) -> CaptionedImages:
    """Every image of class c captioned by each template filled with class_names[c]."""
    if images.labels is None:
        raise InputError(
            f"{images.name} has no caption column ({' or '.join(CAPTION_COLUMNS)}) and no class labels to make "
            "captions from: pass --caption_column, or a labelled data set."
        )
    unlabelled = int((images.labels < 0).sum())
    if unlabelled:
        raise InputError(
            f"{images.name} has {unlabelled} images without a label (-1): captions from class names need one for "
            "every image. Remove them, or give a caption column."
        )
    T = len(templates)
    captions = [template.format(name) for name in class_names for template in templates]  # class-major
    options = images.labels.unsqueeze(1) * T + torch.arange(T)  # (N, T)
    return CaptionedImages(images, captions, options, f"class names in {T} template(s)")


def column_captions(images: ImageData, values: list, column: str) -> CaptionedImages:
    """Captions from a column: a string, or a list of strings, per image. InputError naming the first row (from 1)
    with no caption, an empty one, or a value that is not text."""
    index: dict[str, int] = {}
    per_image: list[list[int]] = []
    for row, value in enumerate(values, start=1):
        texts = value if isinstance(value, list) else [value]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InputError(
                f"{images.name}, column {column!r}, row {row}: no caption ({value!r}). Give every image a caption, "
                "or remove that row."
            )
        per_image.append([index.setdefault(t.strip(), len(index)) for t in texts])
    width = max(len(ids) for ids in per_image)
    options = torch.full((len(per_image), width), -1, dtype=torch.long)
    for i, ids in enumerate(per_image):
        options[i, : len(ids)] = torch.tensor(ids)
    return CaptionedImages(images, list(index), options, f"column {column!r}")


def _caption_column(columns: list[str], requested: str | None, name: str) -> str | None:
    if requested is not None:
        if requested not in columns:
            raise InputError(f"{name} has no caption column {requested!r}; its columns are {columns}.")
        return requested
    return next((c for c in CAPTION_COLUMNS if c in columns), None)


def load_captioned_images(
    spec: str | None,
    *,
    templates: Sequence[str],
    image_size: int = 32,
    split: str = "train",
    image_column: str = "image",
    caption_column: str | None = None,
    label_column: str | None = "label",
    class_names: Sequence[str] | None = None,
) -> CaptionedImages:
    """The images of `spec` with their captions (module docstring). class_names: names to caption the classes with,
    in label order, instead of the data set's own (e.g. words for the digits' "0" .. "9")."""
    spec = spec or BUILTIN_IMAGE_DATASETS[0]
    images = load_images(spec, image_size=image_size, split=split, image_column=image_column, label_column=label_column)
    column = None
    if spec not in BUILTIN_IMAGE_DATASETS:
        table, name = load_image_table(spec, split)
        column = _caption_column(table.column_names, caption_column, name)
    elif caption_column is not None:
        raise InputError(f"The built-in {spec} has no caption column: drop --caption_column.")
    if column is not None:
        captioned = column_captions(images, list(table[column]), column)
    else:
        names = list(class_names) if class_names else images.label_names
        if class_names and images.label_names and len(class_names) != len(images.label_names):
            raise InputError(
                f"--class_names gives {len(class_names)} names; {images.name} has {len(images.label_names)} classes "
                f"({', '.join(images.label_names)})."
            )
        captioned = template_captions(images, names or [], templates)
    logger.info(
        "%s: %d images, %d distinct captions from %s",
        images.name,
        len(images),
        len(captioned.captions),
        captioned.described,
    )
    return captioned
