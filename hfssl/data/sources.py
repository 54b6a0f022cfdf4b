"""Where a data set comes from: a local path or a Hub dataset name, and the label ids of a labelled column.

Every loader in hfssl (text corpora, labelled text, images) decides "local or Hub?" and reports an unreachable
Hub dataset the same way, here.
"""

from pathlib import Path

import datasets


def looks_like_path(spec: str, suffixes=()) -> bool:
    """A spec meant as a local path (Hub names look like `name` or `owner/name`, with no file suffix)."""
    return spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in set(suffixes)


def load_hub_dataset(spec: str, config_name: str | None = None, split: str = "train") -> datasets.Dataset:
    """One split of a Hub dataset. FileNotFoundError naming it when it cannot be reached (offline, misspelt,
    private, no such split); ValueError when the split argument leaves several splits."""
    try:
        ds = datasets.load_dataset(spec, config_name, split=split)
    except (ConnectionError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"Could not load Hub dataset {spec} (config {config_name!r}, split {split!r}): {err}. Check the name, "
            "the network (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and access rights; local paths must exist."
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"Hub dataset {spec} has splits {list(ds)}; pass one with --dataset_split.")
    return ds


def label_ids(ds: datasets.Dataset, column: str) -> tuple[list[int], list[str]]:
    """(label id of every row, label names): a ClassLabel column's own names, else the sorted distinct values."""
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(ds[column]), list(feature.names)
    raw = [str(v) for v in ds[column]]
    names = sorted(set(raw))
    index = {name: i for i, name in enumerate(names)}
    return [index[v] for v in raw], names
