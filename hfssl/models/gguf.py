"""llama.cpp GGUF checkpoints: checking a file, its tokenizer, and one-line errors for what transformers' GGUF support
(dequantised to float32) cannot load. Where a `--model_name_or_path` / `--gguf_file` pair points is
`hfssl.run.model_source`; converting a GGUF once into a safetensors folder is `hfssl.models.convert`.
"""

import importlib.util
from pathlib import Path
from typing import cast

from ..run.errors import InputError, MissingDependencyError
from ..run.model_source import GGUF_SUFFIX, ModelSource, model_source


def require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("Loading a GGUF checkpoint needs the gguf package: pip install 'hfssl[gguf]'.")


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
        raise InputError(f"{path} is truncated or not a GGUF file ({str(err).splitlines()[0]}).") from None
    if end > path.stat().st_size:
        raise InputError(f"{path} is truncated: its tensors need {end} bytes, the file has {path.stat().st_size}.")
    return architecture


class GGUFMetadataError(InputError):
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
    from transformers.utils.hub import cached_file

    # a local file, or a Hub file cached now (from_pretrained reads it from the same cache); cached_file raises
    # rather than return None for a missing one
    path = cached_file(source.path, cast(str, source.gguf_file))  # a GGUF source names its file
    fields = gguf.GGUFReader(cast(str, path)).fields
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
        return InputError(
            f"{source}: transformers cannot load this GGUF ({message}). It dequantises llama.cpp checkpoints of the "
            "architectures and quantisations in its GGUF support list; convert others with llama.cpp first."
        )
    return InputError(f"{source} is truncated or not a GGUF file ({type(err).__name__}: {message}).")


# GGUF_SUFFIX, ModelSource and model_source live in hfssl.run.model_source and are re-exported here
__all__ = [
    "GGUF_SUFFIX",
    "GGUFMetadataError",
    "ModelSource",
    "check_gguf_file",
    "gguf_error",
    "load_gguf_tokenizer",
    "model_source",
    "require_gguf_package",
]
