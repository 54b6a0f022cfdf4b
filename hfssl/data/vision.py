"""Images for contrastive pretraining: loading (decoded once), and SimCLR augmentation of whole batches.

An image data set spec is one of
- `digits` (the default): scikit-learn's 1,797 handwritten 8x8 digits, shipped inside scikit-learn;
- a local parquet file (or folder of them) with an image column, or an image folder (`class/xxx.png`);
- a CSV or JSON Lines file whose image column holds image paths (relative ones from the file's folder);
- a .zip of image files whose class is their folder inside the archive (e.g. Omniglot's
  `alphabet/character/xxx.png`: class `alphabet/character`);
- a Hub dataset name, loaded by `datasets.load_dataset`.

Images are decoded once into a uint8 tensor (N, 3, S, S) — converted to RGB and resized to S x S — and
cached on disk keyed by the data set's fingerprint, so epochs never decode again. Augmentation runs on
the training device on whole batches with per-image random parameters (kornia; torchvision.transforms.v2
draws one set of parameters per call, i.e. the same crop for a whole batch, which is not SimCLR).
"""

import hashlib
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.nn import functional as F

from ..models.helpers import cache_dir as hfssl_cache_dir
from ..run.errors import InputError, MissingFileError
from .sources import check_data_file, label_ids, load_hub_dataset, looks_like_path

logger = logging.getLogger(__name__)

BUILTIN_IMAGE_DATASETS = ("digits",)
# part of the decoded-image cache key: raised whenever decoding gives other pixels for the same file, so a cache written
# by an earlier version is not reused (2: 16-bit grayscale is scaled to 8 bits, no longer clipped to white)
_DECODING = 2
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageData:
    """Decoded images and their labels.

    pixels: uint8 (N, 3, S, S); labels: int64 (N,) or None; label_names: class names or None.
    """

    pixels: torch.Tensor
    labels: torch.Tensor | None
    label_names: list[str] | None
    name: str

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def subset(self, indices) -> "ImageData":
        indices = torch.as_tensor(indices, dtype=torch.long)
        labels = self.labels[indices] if self.labels is not None else None
        return ImageData(self.pixels[indices], labels, self.label_names, self.name)

    def of_classes(self, ids, relabel: bool = False) -> "ImageData":
        """The images whose label is one of `ids` (in their order); with relabel, their labels become positions in
        `ids` (0 .. len(ids) - 1) and label_names the chosen names."""
        if self.labels is None:
            raise InputError(f"{self.name} has no labels to choose classes by.")
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        chosen = self.subset(torch.isin(self.labels, ids).nonzero().squeeze(1))
        if relabel:
            assert chosen.labels is not None
            chosen.labels = (chosen.labels.unsqueeze(1) == ids).long().argmax(dim=1)
            chosen.label_names = [self.label_names[i] for i in ids.tolist()] if self.label_names else None
        return chosen


class ImageTensorDataset(torch.utils.data.Dataset):
    """Rows {"pixel_values": uint8 (3, S, S), "labels": int} of an ImageData (labels -1 when unknown)."""

    def __init__(self, data: ImageData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        label = int(self.data.labels[i]) if self.data.labels is not None else -1
        return {"pixel_values": self.data.pixels[i], "labels": label}


def _digits(image_size: int) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    gray = F.interpolate(gray, size=(image_size, image_size), mode="bilinear", align_corners=False)
    pixels = (gray.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    return ImageData(pixels, labels, [str(i) for i in range(10)], "built-in digits")


def _to_rgb(image: Image.Image) -> Image.Image:
    """An image in 8-bit RGB: grayscale, palette, RGBA, CMYK by PIL; 16-bit grayscale (a 16-bit PNG opens as mode
    'I;16', or 'I' in older Pillow) scaled by 255 / 65535 first, which PIL's own conversion does not do: it clips every
    value above 255 to white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.float64).clip(0, 65535)
        image = Image.fromarray((values / 257).round().astype(np.uint8))  # 2-D uint8: mode L
    return image.convert("RGB")


def _decode(value, image_size: int, where: str) -> np.ndarray:
    """One image (datasets Image dict, PIL image or path) -> uint8 (S, S, 3). Raises ValueError naming `where`."""
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = Image.open(value["path"])
        elif isinstance(value, (str, os.PathLike)):
            image = Image.open(value)
        else:
            raise InputError(f"unsupported image value of type {type(value).__name__}")
        image = _to_rgb(image)
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"Corrupt or unreadable image {where}: {err}") from err


def _load_zip(path: Path) -> datasets.Dataset:
    """Images inside a zip archive; label = folder path below the folder all images share."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(m for m in archive.namelist() if Path(m).suffix.lower() in _IMAGE_SUFFIXES)
            if not members:
                raise InputError(f"{path} contains no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}).")
            images = [{"bytes": archive.read(m), "path": f"{path}:{m}"} for m in members]
    except zipfile.BadZipFile as err:
        raise InputError(f"{path} is not a readable zip archive: {err}") from err
    folders = [Path(m).parent.parts for m in members]
    shared = 0
    while all(len(f) > shared for f in folders) and len({f[shared] for f in folders}) == 1:
        shared += 1
    labels = ["/".join(f[shared:]) or "." for f in folders]
    return datasets.Dataset.from_dict({"image": images, "label": labels})


_TABLE_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json"}


def _load_table(path: Path) -> datasets.Dataset:
    """A CSV or JSON Lines file whose image column holds file paths; relative paths are read from the file's
    folder (resolved in `load_images`)."""
    check_data_file(path)
    try:
        return datasets.load_dataset(_TABLE_BUILDERS[path.suffix.lower()], data_files=str(path), split="train")
    except datasets.exceptions.DatasetGenerationError as err:
        raise InputError(f"{path} could not be read: {err.__cause__ or err}") from None


def load_image_table(spec: str, split: str = "train") -> tuple[datasets.Dataset, str]:
    """(rows, name) of an image data set spec (module docstring; also a CSV / JSON Lines file of image paths), not
    decoded: for the columns beside the images (captions)."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".zip":
        return _load_zip(path), str(spec)
    if path.is_file() and path.suffix.lower() in _TABLE_BUILDERS:
        return _load_table(path), str(spec)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        if any(p.suffix.lower() == ".parquet" for p in files):
            parquet = [p for p in files if p.suffix.lower() == ".parquet"]
            for file in parquet:
                check_data_file(file)
            try:
                ds = datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train")
            except datasets.exceptions.DatasetGenerationError as err:
                raise InputError(f"{spec} could not be read as parquet: {err.__cause__ or err}") from None
            return ds, str(spec)
        if any(p.suffix.lower() in _IMAGE_SUFFIXES for p in files) and path.is_dir():
            return datasets.load_dataset("imagefolder", data_dir=str(path), split="train"), str(spec)
        raise InputError(
            f"{spec}: expected a parquet file, a folder of parquet files, an image folder or a CSV / JSON Lines file."
        )
    if looks_like_path(spec, {".parquet", ".zip", *_TABLE_BUILDERS}):
        raise MissingFileError(f"Dataset file or folder not found: {spec}")
    return load_hub_dataset(spec, split=split), f"Hub dataset {spec}"


def _labels(ds: datasets.Dataset, label_column: str | None) -> tuple[torch.Tensor | None, list[str] | None]:
    if not label_column or label_column not in ds.column_names:
        return None, None
    ids, names = label_ids(ds, label_column)
    return torch.tensor(ids, dtype=torch.long), names


def load_images(
    spec: str | None = None,
    *,
    image_size: int = 32,
    split: str = "train",
    image_column: str = "image",
    label_column: str | None = "label",
    cache_dir: str | os.PathLike | None = None,
) -> ImageData:
    """Load and decode a labelled (or unlabelled) image data set; see the module docstring for `spec`.

    Raises FileNotFoundError for a missing path, ValueError for a missing image column, an empty data set
    or a corrupt image (named by file path or row).
    """
    spec = spec or BUILTIN_IMAGE_DATASETS[0]
    if spec in BUILTIN_IMAGE_DATASETS:
        return _digits(image_size)
    ds, name = load_image_table(spec, split)
    if image_column not in ds.column_names:
        raise InputError(
            f"{name} has no image column {image_column!r}; its columns are {ds.column_names}. "
            "Pass the right one with --image_column."
        )
    if len(ds) == 0:
        raise InputError(f"{name} contains no images.")
    labels, label_names = _labels(ds, label_column)

    cache = Path(cache_dir) / "images" if cache_dir else hfssl_cache_dir("images")
    source = Path(spec).expanduser()
    # a zip's in-memory table has no stable fingerprint: key it on the archive file instead
    identity = (
        f"{source.resolve()}|{source.stat().st_size}|{source.stat().st_mtime_ns}"
        if source.suffix.lower() == ".zip"
        else ds._fingerprint
    )
    key = hashlib.sha1(f"{identity}|{image_column}|{image_size}|{_DECODING}".encode()).hexdigest()[:16]
    cached = cache / f"{key}.pt"
    if cached.is_file():
        pixels = torch.load(cached, weights_only=True)  # a cache file is data: never run a pickle
    else:
        if isinstance(ds.features[image_column], datasets.Image):
            ds = ds.cast_column(image_column, datasets.Image(decode=False))  # decode here, naming bad files
        arrays = []
        folder = source.parent if source.is_file() else source  # relative image paths of a table start here
        for i, value in enumerate(ds[image_column]):
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                value = folder / value
            where = value["path"] if isinstance(value, dict) and value.get("path") else f"at row {i} of {name}"
            arrays.append(_decode(value, image_size, where))
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        torch.save(pixels, tmp)
        os.replace(tmp, cached)
    logger.info(
        "%s: %d images of %dx%d%s",
        name,
        len(pixels),
        image_size,
        image_size,
        f", {len(label_names)} classes" if label_names else ", no labels",
    )
    return ImageData(pixels, labels, label_names, name)


def channel_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, S, S), on the [0, 1] scale."""
    x = pixels.float().div_(255)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


class Normalize(nn.Module):
    """uint8 (B, C, S, S) -> float (x / 255 - mean) / std."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() / 255 - self.mean) / self.std


class SimCLRAugmentation(nn.Module):
    """The SimCLR recipe on a batch, with independent random parameters per image.

    uint8 (B, C, S, S) on any device -> float normalised (B, C, S, S): random resized crop (scale
    0.08-1), horizontal flip (p 0.5), colour jitter (0.4, 0.4, 0.4, 0.1 with p 0.8), random grayscale
    (p 0.2), optional Gaussian blur (p 0.5, sigma 0.1-2), then normalisation. Randomness comes from
    torch's global generator: seeded by the run's seed and restored on resume with the checkpoint.
    """

    def __init__(self, image_size: int, mean: list[float], std: list[float], blur: bool = False):
        super().__init__()
        import kornia.augmentation as K

        steps = [
            K.RandomResizedCrop((image_size, image_size), scale=(0.08, 1.0)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
        ]
        if blur:
            kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # ~10% of the image, odd
            steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5))
        self.augment = nn.Sequential(*steps)
        self.normalize = K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float() / 255  # (B, C, S, S) in [0, 1]
        return self.normalize(self.augment(x).clamp(0, 1))
