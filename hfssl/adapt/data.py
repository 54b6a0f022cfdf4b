"""Labelled data for adaptation: text classification files, few-shot subsets, label names.

Text sources: a Hub dataset name, a local .csv / .tsv / .jsonl / .json / .parquet file, or a .txt file of
`label<space>text` lines (the format of ../shared/data/sst2/train.txt and trec/train.txt). Labels become
ids 0..C-1 with names kept (ClassLabel names when the source has them, else the sorted distinct values).
"""

import json
from pathlib import Path

import datasets
import torch

_TABLE_BUILDERS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


def _label_space_text(path: Path) -> datasets.Dataset:
    labels, texts = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        if not text:
            raise ValueError(f"{path}, line {n}: expected 'label<space>text', got {line[:60]!r}.")
        labels.append(label)
        texts.append(text)
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


def load_text_classification(
    spec: str,
    *,
    split: str = "train",
    config_name: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> tuple[datasets.Dataset, list[str]]:
    """Load a text classification set: (dataset with columns text: str, label: int, label names).

    Raises FileNotFoundError for a missing local path, ValueError for missing columns, an empty set or a
    single class.
    """
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".txt":
        ds, name = _label_space_text(path), str(path)
    elif path.is_file() and path.suffix.lower() in _TABLE_BUILDERS:
        builder, options = _TABLE_BUILDERS[path.suffix.lower()]
        ds, name = datasets.load_dataset(builder, data_files=str(path), split="train", **options), str(path)
    elif spec.startswith((".", "/", "~")) or path.suffix.lower() in {*_TABLE_BUILDERS, ".txt"}:
        raise FileNotFoundError(f"Dataset file not found: {spec}")
    else:
        name = f"Hub dataset {spec}"
        try:
            ds = datasets.load_dataset(spec, config_name, split=split)
        except (ConnectionError, FileNotFoundError) as err:
            raise FileNotFoundError(f"Could not load {name} (split {split!r}): {err}") from err
    for column, flag in ((text_column, "--text_column"), (label_column, "--label_column")):
        if column not in ds.column_names:
            raise ValueError(f"{name} has no column {column!r}; its columns are {ds.column_names}. Pass {flag}.")
    if len(ds) == 0:
        raise ValueError(f"{name} is empty.")
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        ids = list(ds[label_column])
    else:
        raw = [str(v) for v in ds[label_column]]
        names = sorted(set(raw))
        index = {n: i for i, n in enumerate(names)}
        ids = [index[v] for v in raw]
    if len(set(ids)) < 2:
        raise ValueError(f"{name} has a single class ({names[ids[0]]!r}): classification needs at least two.")
    out = datasets.Dataset.from_dict({"text": [str(t) for t in ds[text_column]], "label": ids})
    return out, names


def few_shot_indices(labels: list[int] | torch.Tensor, k: int, seed: int) -> list[int]:
    """Seeded class-balanced subset: k example indices of every class, in a shuffled order.

    Raises ValueError if a class has fewer than k examples (naming it).
    """
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in sorted(set(labels.tolist())):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            raise ValueError(f"--num_labels_per_class {k} is larger than class {c}, which has {len(members)} examples.")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    picked = torch.cat(chosen)
    return picked[torch.randperm(len(picked), generator=generator)].tolist()


def save_label_names(path: Path, names: list[str]) -> None:
    path.write_text(json.dumps(names) + "\n")
