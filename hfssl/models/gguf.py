"""llama.cpp GGUF checkpoints: where a `--model_name_or_path` / `--gguf_file` pair points, loading through
transformers' GGUF support (dequantised to float32), and converting a GGUF once into an ordinary safetensors folder
(weights, tokenizer with its chat template, generation config) so that later loads take a second, not a minute.

A GGUF is named either as a path ending in `.gguf`, or as a folder (or Hub repository) plus `gguf_file=` the file's
name inside it, transformers' own spelling.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: `path` (a folder or Hub id) and, for a GGUF checkpoint, the file inside it."""

    path: str
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def input_path(self) -> str:
        """What a run reads and must never write into: the GGUF file itself, else the folder (or Hub id)."""
        return str(Path(self.path) / self.gguf_file) if self.gguf_file else self.path

    def kwargs(self) -> dict:
        """The keyword arguments `from_pretrained` needs besides the path."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def __str__(self) -> str:
        return f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path


def model_source(name_or_path: str, gguf_file: str | None = None) -> ModelSource:
    """The source named by a --model_name_or_path (maybe a .gguf path) and an optional --gguf_file.

    FileNotFoundError when a local folder does not hold the named GGUF file.
    """
    if gguf_file is None and str(name_or_path).lower().endswith(GGUF_SUFFIX):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {name_or_path}")
        return ModelSource(str(path.parent), path.name)
    if gguf_file is not None:
        folder = Path(name_or_path).expanduser()
        if folder.is_dir() and not (folder / gguf_file).is_file():
            found = sorted(p.name for p in folder.glob(f"*{GGUF_SUFFIX}"))
            raise FileNotFoundError(
                f"--gguf_file {gguf_file}: no such file in {name_or_path}"
                + (f" (it holds {', '.join(found)})." if found else " (it holds no .gguf file).")
            )
        if folder.is_file():
            raise ValueError(f"--gguf_file names a file inside a folder; {name_or_path} is a file, not a folder.")
    return ModelSource(str(name_or_path), gguf_file)


def require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("Loading a GGUF checkpoint needs the gguf package: pip install 'hfssl[gguf]'.")


def check_gguf_file(path: Path) -> str:
    """The architecture a local GGUF file declares; ValueError naming the file when it is truncated or not GGUF.

    Reads the header and the tensor table only (`gguf.GGUFReader` maps the file): the last tensor must end where the
    file does.
    """
    require_gguf_package()
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode()
    except (ValueError, KeyError, IndexError, OSError) as err:
        raise ValueError(f"{path} is truncated or not a GGUF file ({str(err).splitlines()[0]}).") from None
    if end > path.stat().st_size:
        raise ValueError(f"{path} is truncated: its tensors need {end} bytes, the file has {path.stat().st_size}.")
    return architecture


class GGUFMetadataError(ValueError):
    """A GGUF that loads but whose metadata contradicts itself (the message names the field)."""


_SPECIAL_TOKEN_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def load_gguf_tokenizer(source: ModelSource):
    """The tokenizer a GGUF file defines (its vocabulary, merges, special tokens and chat template), the same on
    every transformers version in our range.

    `AutoTokenizer` picks a class from the GGUF's architecture, and transformers 5.4 maps llama to CodeLlamaTokenizer,
    which adds a BOS token and five FIM tokens that SmolLM2's GGUF does not have; later versions (and we, on every
    version) take the generic fast tokenizer. 5.4 also drops the padding token and takes the wrong end-of-sequence
    token (SmolLM2's <|im_start|> for <|im_end|>), so the special tokens are set from the file's
    `tokenizer.ggml.*_token_id` fields.
    """
    import gguf
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import cached_file

    # a local file, or a Hub file cached now (from_pretrained reads it from the same cache)
    fields = gguf.GGUFReader(cached_file(source.path, source.gguf_file)).fields
    vocabulary = len(fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in fields else None
    special = {}
    for name, key in _SPECIAL_TOKEN_KEYS.items():
        if key in fields:
            special[name] = int(fields[key].parts[fields[key].data[0]][0])
            if vocabulary is not None and not 0 <= special[name] < vocabulary:
                raise GGUFMetadataError(
                    f"{source}: {key} is {special[name]}, outside its vocabulary of {vocabulary} tokens."
                )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source.path, **source.kwargs())
    for name, token_id in special.items():
        setattr(tokenizer, name, tokenizer.convert_ids_to_tokens(token_id))
    return tokenizer


def gguf_error(source: ModelSource, err: Exception) -> Exception:
    """A one-line error for a GGUF that transformers cannot load: an architecture or quantisation it does not
    support, or a truncated or foreign file."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    lowered = message.lower()
    if "not supported" in lowered or "architecture" in lowered or "quant" in lowered:
        return ValueError(
            f"{source}: transformers cannot load this GGUF ({message}). It dequantises llama.cpp checkpoints of the "
            "architectures and quantisations in its GGUF support list; convert others with llama.cpp first."
        )
    return ValueError(f"{source} is truncated or not a GGUF file ({type(err).__name__}: {message}).")
