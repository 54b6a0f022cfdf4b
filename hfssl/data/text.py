"""Text corpora for causal-LM pretraining: loading, byte-level BPE tokenizers, block packing.

A corpus spec is one of
- a built-in corpus name (`stdlib_docstrings`, see `hfssl.data.builtin`), the default;
- a local file or folder of .txt / .jsonl / .json / .csv / .tsv / .parquet files;
- a Hub dataset name (with optional config name and split), loaded by `datasets.load_dataset`.
"""

import logging
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import datasets
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..models.helpers import ensure_pad_token
from ..run.errors import InputError, MissingFileError
from .builtin import BUILTIN_TEXT_DATASETS, builtin_text_file
from .sources import as_text, check_data_file, load_hub_dataset, looks_like_path

logger = logging.getLogger(__name__)

# local file suffix -> datasets builder (and its extra options)
_BUILDERS = {
    ".txt": ("text", {}),
    ".text": ("text", {}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".parquet": ("parquet", {}),
}

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def _local_data_files(path: Path) -> tuple[str, dict, list[str]]:
    """(builder name, builder options, sorted data files) for a local file or folder."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _BUILDERS)
        if not files:
            raise MissingFileError(
                f"No data files in folder {path}: expected files ending in {', '.join(sorted(_BUILDERS))}."
            )
    suffixes = {p.suffix.lower() for p in files}
    builders = {_BUILDERS[s][0] if s in _BUILDERS else None for s in suffixes}
    if None in builders:
        raise InputError(
            f"Unsupported file type {path.suffix!r} for {path}: use one of {', '.join(sorted(_BUILDERS))}."
        )
    if len(builders) > 1:
        raise InputError(f"Folder {path} mixes file types {sorted(suffixes)}: keep one type per data set.")
    builder, options = _BUILDERS[files[0].suffix.lower()]
    return builder, dict(options), [str(p) for p in files]


def _as_text_column(ds: datasets.Dataset, name: str, column: str) -> datasets.Dataset:
    """Column "text" as strings: numbers become their digits (JSON `5`), nulls stay (dropped with empty text), and
    anything else (a list, an object, true/false) is an InputError naming the data, the column and the row."""
    feature = ds.features["text"]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return ds  # strings and nulls only: nothing to convert

    def to_text(batch, indices):
        values = zip(batch["text"], indices, strict=True)
        return {"text": [None if t is None else as_text(t, name, column, i + 1) for t, i in values]}

    features = datasets.Features({"text": datasets.Value("string")})
    return ds.map(to_text, batched=True, with_indices=True, features=features, desc="Reading numbers as text")


def load_text_dataset(
    spec: str | None = None,
    *,
    config_name: str | None = None,
    split: str = "train",
    text_column: str = "text",
    sample_by: str = "paragraph",
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Load a corpus as a `datasets.Dataset` with one non-empty document per row in column `text`.

    Args:
        spec: built-in name, local file/folder, or Hub dataset name (None: the built-in default).
        config_name / split: Hub dataset configuration and split.
        text_column: column holding the text (renamed to "text").
        sample_by: for .txt files, what one document is: "line", "paragraph" (blank-line separated) or "document".
    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: a missing text column, a value in it that is neither text nor a number (numbers become their
            digits), or a corpus with no non-empty text.
    """
    spec = spec or BUILTIN_TEXT_DATASETS[0]
    files: list[str] = []  # the local files read, when the corpus is local
    if spec in BUILTIN_TEXT_DATASETS:
        ds = datasets.load_dataset("json", data_files=str(builtin_text_file(spec)), split="train", cache_dir=cache_dir)
        name = f"built-in corpus {spec}"
    elif Path(spec).expanduser().exists():
        builder, options, files = _local_data_files(Path(spec).expanduser())
        if builder == "text":  # utf-8-sig: a byte-order mark is not part of a file's first document
            options.update(sample_by=sample_by, encoding="utf-8-sig")
        name = str(spec)
        for file in files:
            check_data_file(Path(file))  # empty, or not UTF-8: say so by name before datasets fails inside
        try:
            ds = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir, **options)
        except ValueError as err:  # datasets' wording for files with no rows at all
            if "corresponds to no data" in str(err):
                raise InputError(f"{name} contains no non-empty text.") from err
            raise InputError(f"{name} could not be read as {builder} data: {str(err).splitlines()[0]}") from None
        except datasets.exceptions.DatasetGenerationError as err:
            raise InputError(f"{name} could not be read as {builder} data: {err.__cause__ or err}") from None
    elif looks_like_path(spec, _BUILDERS):
        raise MissingFileError(f"Dataset file or folder not found: {spec}")
    else:
        name = f"Hub dataset {spec}"
        ds = load_hub_dataset(spec, config_name, split)
    if text_column not in ds.column_names:
        raise InputError(
            f"{name} has no column {text_column!r}; its columns are {ds.column_names}. "
            "Pass the right one with --text_column."
        )
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    ds = _as_text_column(
        ds, name if len(files) < 2 else f"{name} (rows counted across its files in name order)", text_column
    )
    ds = ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
    if len(ds) == 0:
        raise InputError(f"{name} contains no non-empty text in column {text_column!r}.")
    return ds


def train_bpe_tokenizer(texts: Iterator[str] | list[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 style: any byte sequence is encodable, nothing is <unk>).

    Special tokens: id 0 `<|endoftext|>` (bos = eos, separates documents), id 1 `<|pad|>`.
    """
    if vocab_size < 256 + 2:
        raise InputError(f"vocab_size must be at least 258 (256 bytes + 2 special tokens), got {vocab_size}.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


def load_tokenizer(name_or_path) -> PreTrainedTokenizerFast:
    """An existing tokenizer (Hub id or local folder); a pad token is added as eos if it has none."""
    from ..models.loading import load_tokenizer as load_any_tokenizer

    tokenizer = load_any_tokenizer(name_or_path)
    if tokenizer.eos_token is None:
        raise InputError(f"Tokenizer {name_or_path} has no eos token, which separates documents when packing.")
    return ensure_pad_token(tokenizer)


def iter_texts(ds: datasets.Dataset, batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of documents from column "text", for tokenizer training."""
    for start in range(0, len(ds), batch_size):
        yield ds[start : start + batch_size]["text"]


def pack_into_blocks(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, block_size: int, num_proc: int | None = None
) -> datasets.Dataset:
    """Tokenize documents, append EOS to each, concatenate and cut into blocks of `block_size` tokens.

    Returns a dataset with one column `input_ids` (lists of exactly `block_size` ints). The tail of each
    map batch shorter than a block is dropped (as in transformers' run_clm). `datasets` caches both maps.
    Raises ValueError if the corpus is shorter than one block.
    """
    eos = tokenizer.eos_token_id

    def tokenize(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] for x in ids]}

    def group(batch):
        flat = list(chain.from_iterable(batch["input_ids"]))
        usable = len(flat) // block_size * block_size
        return {"input_ids": [flat[i : i + block_size] for i in range(0, usable, block_size)]}

    tokens = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=num_proc, desc="Tokenizing")
    blocks = tokens.map(group, batched=True, batch_size=1000, num_proc=num_proc, desc=f"Packing into {block_size}")
    if len(blocks) == 0:
        n_tokens = sum(len(x) for x in tokens["input_ids"])
        raise InputError(
            f"The corpus has {n_tokens} tokens, fewer than one block of block_size={block_size}: "
            "use more text or a smaller --block_size."
        )
    return blocks
