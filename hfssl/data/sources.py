"""Where a data set comes from: a local path or a Hub dataset name, and the label ids of a labelled column.

Every loader in hfssl (text corpora, labelled text, images) decides "local or Hub?" and reports an unreachable
Hub dataset the same way, here.
"""

import math
from pathlib import Path

import datasets

from ..run.errors import InputError, MissingFileError


def looks_like_path(spec: str, suffixes=()) -> bool:
    """A spec meant as a local path (Hub names look like `name` or `owner/name`, with no file suffix)."""
    return spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in set(suffixes)


def load_hub_dataset(spec: str, config_name: str | None = None, split: str = "train") -> datasets.Dataset:
    """One split of a Hub dataset. FileNotFoundError naming it when it cannot be reached (offline, misspelt,
    private, no such split); ValueError when the split argument leaves several splits."""
    try:
        ds = datasets.load_dataset(spec, config_name, split=split)
    except (ConnectionError, FileNotFoundError) as err:
        raise MissingFileError(
            f"Could not load Hub dataset {spec} (config {config_name!r}, split {split!r}): {err}. Check the name, "
            "the network (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and access rights; local paths must exist."
        ) from None
    except ValueError as err:  # datasets' wording for an unknown split or config
        raise InputError(
            f"Hub dataset {spec} has no config {config_name!r} / split {split!r} ({str(err).splitlines()[0]}): check "
            "--dataset_config_name and --dataset_split."
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise InputError(f"Hub dataset {spec} has splits {list(ds)}; pass one with --dataset_split.")
    return ds


def label_ids(ds: datasets.Dataset, column: str) -> tuple[list[int], list[str]]:
    """(label id of every row, label names): a ClassLabel column's own names, else the sorted distinct values."""
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(ds[column]), list(feature.names)
    values = list(ds[column])
    for row, value in enumerate(values, start=1):  # str(None) would make a class called "None"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise InputError(
                f"Label column {column!r}, row {row}: the label is null (an empty cell). Give every row a label, or "
                "remove that row."
            )
    raw = [str(v) for v in values]
    names = sorted(set(raw))
    index = {name: i for i, name in enumerate(names)}
    return [index[v] for v in raw], names


def as_text(value, name: str, column: str, row: int) -> str:
    """One value of a text column as a string: a string as it is, a number (JSON `5`, a csv column of digits) as its
    digits. Anything else (null, an empty csv cell, NaN, true/false, a list, an object) is an InputError naming the
    data set, the column, the row (from 1) and the value: turned into text silently, it would train on "None" or "['a',
    'b']"."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    ):
        return str(value)
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    kind = "null (an empty cell)" if value is None else type(value).__name__
    raise InputError(
        f"{name}, column {column!r}, row {row}: the text is {shown}, a {kind}, not a string or a number. "
        "Give that row its text, or remove it."
    )


TEXT_SUFFIXES = {".txt", ".text", ".json", ".jsonl", ".csv", ".tsv"}


def check_data_file(path: Path) -> None:
    """ValueError naming `path` when it is empty, or is a text format (.txt/.json/.jsonl/.csv/.tsv) that is not UTF-8
    (Latin-1 text, a binary file), saying where: the first undecodable byte's line and column."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes).")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line, column = 1, 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                done = decoder.decode(chunk[: err.start]) if err.start else ""
                line += done.count("\n")
                column = len(done) - done.rfind("\n") if "\n" in done else column + len(done)
                raise InputError(
                    f"{path} is not UTF-8 text: byte 0x{chunk[err.start]:02x} at line {line}, column {column} "
                    f"cannot be decoded ({err.reason}). Re-save it as UTF-8 (from Latin-1: iconv -f latin1 -t utf-8)."
                ) from None
            line += text.count("\n")
            column = len(text) - text.rfind("\n") if "\n" in text else column + len(text)
