"""The one loader of labelled data (text or images) that adaptation, meta-learning, prompting, the Hub card and the
demo share, and seeded few-shot subsets of it.

Text sources: a Hub dataset name, a local .csv / .tsv / .jsonl / .json / .parquet file, or a .txt file of
`label<space>text` lines (the format of ../shared/data/sst2/train.txt and trec/train.txt). Image sources: whatever
`hfssl.data.vision.load_images` takes. Labels become ids 0..C-1 with their names kept (a ClassLabel's names when the
source has them, else the sorted distinct values).
"""

from dataclasses import dataclass
from pathlib import Path

import datasets
import torch

from ..run.errors import InputError, MissingFileError
from .sources import as_text, check_data_file, label_ids, load_hub_dataset, looks_like_path
from .vision import load_images

_TABLE_BUILDERS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


@dataclass
class LabelledData:
    """inputs: list of texts, or uint8 images (N, 3, S, S); labels: int64 (N,); names: the C class names;
    rationales: a worked reasoning per text (chain-of-thought demonstrations), when the source has that column."""

    inputs: list[str] | torch.Tensor
    labels: torch.Tensor
    names: list[str]
    name: str  # where the data came from, for messages
    rationales: list[str] | None = None  # "" where a row has none

    @property
    def is_image(self) -> bool:
        return isinstance(self.inputs, torch.Tensor)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "LabelledData":
        indices = torch.as_tensor(indices, dtype=torch.long)
        inputs = (
            self.inputs[indices]
            if isinstance(self.inputs, torch.Tensor)
            else [self.inputs[i] for i in indices.tolist()]
        )
        rationales = [self.rationales[i] for i in indices.tolist()] if self.rationales is not None else None
        return LabelledData(inputs, self.labels[indices], self.names, self.name, rationales)

    def merged_by_key(self, separator: str) -> "LabelledData":
        """The classes merged by the part of their names before `separator`: TREC's 'DESC:manner' and 'DESC:def' are
        both 'DESC'. Names are sorted; a name without the separator is its own key."""
        keys = [name.split(separator)[0] for name in self.names]
        names = sorted(set(keys))
        to_merged = torch.tensor([names.index(key) for key in keys], dtype=torch.long)
        return LabelledData(self.inputs, to_merged[self.labels], names, self.name, self.rationales)


def _label_space_text(path: Path) -> datasets.Dataset:
    labels, texts = [], []
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first label
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        if not text:
            raise InputError(f"{path}, line {n}: expected 'label<space>text', got {line[:60]!r}.")
        labels.append(label)
        texts.append(text)
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


def read_text_table(spec: str, split: str = "train", config_name: str | None = None) -> tuple[datasets.Dataset, str]:
    """(rows, where they came from) of a .csv / .tsv / .json(l) / .parquet / `label text` .txt file or Hub dataset;
    a missing or unreadable file is named."""
    path = Path(spec).expanduser()
    if path.is_file():
        check_data_file(path)  # empty, or not UTF-8: say so by name
    if path.is_file() and path.suffix.lower() == ".txt":
        return _label_space_text(path), str(path)
    if path.is_file() and path.suffix.lower() in _TABLE_BUILDERS:
        builder, options = _TABLE_BUILDERS[path.suffix.lower()]
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", **options), str(path)
        except datasets.exceptions.DatasetGenerationError as err:
            raise InputError(f"{path} could not be read as {builder} data: {err.__cause__ or err}") from None
    if looks_like_path(spec, {*_TABLE_BUILDERS, ".txt"}):
        raise MissingFileError(f"Dataset file not found: {spec}")
    return load_hub_dataset(spec, config_name, split), f"Hub dataset {spec}"


def _labelled_text(
    spec, split, config_name, text_column: str, label_column: str, rationale_column: str | None
) -> LabelledData:
    ds, name = read_text_table(spec, split, config_name)
    for column, flag in ((text_column, "--text_column"), (label_column, "--label_column")):
        if column not in ds.column_names:
            raise InputError(f"{name} has no column {column!r}; its columns are {ds.column_names}. Pass {flag}.")
    if len(ds) == 0:
        raise InputError(f"{name} is empty.")
    ids, names = label_ids(ds, label_column)
    texts = [as_text(t, name, text_column, row) for row, t in enumerate(ds[text_column], start=1)]
    rationales = (
        [
            "" if r is None else as_text(r, name, rationale_column, row).strip()
            for row, r in enumerate(ds[rationale_column], start=1)
        ]
        if rationale_column and rationale_column in ds.column_names
        else None
    )
    return LabelledData(texts, torch.tensor(ids, dtype=torch.long), names, name, rationales)


def _labelled_images(spec, split, image_size: int, image_column: str, label_column: str) -> LabelledData:
    images = load_images(spec, image_size=image_size, split=split, image_column=image_column, label_column=label_column)
    if images.labels is None or images.label_names is None:  # both or neither
        raise InputError(f"{images.name} has no label column {label_column!r}: pass --label_column.")
    return LabelledData(images.pixels, images.labels, images.label_names, images.name)


def load_labelled(
    spec: str,
    *,
    image_size: int | None = None,
    split: str = "train",
    config_name: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    image_column: str = "image",
    rationale_column: str | None = None,
) -> LabelledData:
    """Labelled texts, or (with image_size) labelled images resized to image_size x image_size.

    With `rationale_column`, texts carry that column's values as `rationales` when the source has it (else None:
    whoever needs them says so).

    Raises FileNotFoundError for a missing local path or an unreachable Hub dataset, ValueError for a missing
    column, a text that is neither a string nor a number (null, a list: named by row), an empty set or a single class.
    """
    if image_size is None:
        data = _labelled_text(spec, split, config_name, text_column, label_column, rationale_column)
    else:
        data = _labelled_images(spec, split, image_size, image_column, label_column)
    present = sorted(set(data.labels.tolist()))
    if len(present) < 2:
        raise InputError(f"{data.name} has a single class ({data.names[present[0]]!r}): classification needs two.")
    return data


def few_shot_indices(
    labels: list[int] | torch.Tensor, k: int, seed: int, names: list[str] | None = None, where: str = ""
) -> list[int]:
    """Seeded class-balanced subset: k example indices of every class, in a shuffled order.

    Raises InputError if a class has fewer than k examples, naming it as the data does (`names[id]`, e.g. 'positive';
    its id without `names`) with its count, and `where` those examples were counted (e.g. " after holding out ...").
    """
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in sorted(set(labels.tolist())):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            label = repr(names[c]) if names is not None else str(c)
            count = f"{len(members)} example{'' if len(members) == 1 else 's'}"
            raise InputError(f"--num_labels_per_class {k} is larger than class {label}, which has {count}{where}.")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    picked = torch.cat(chosen)
    return picked[torch.randperm(len(picked), generator=generator)].tolist()
