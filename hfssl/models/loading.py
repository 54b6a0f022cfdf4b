"""One way in for models: every entry point and the demo load a pretrained model and its tokenizer through these
functions, from a saved folder, a Hub id, or a llama.cpp GGUF checkpoint (`hfssl.models.gguf`).

`load_pretrained` refuses a load that would silently leave weights at their random initialisation: weights the model
needs but the checkpoint lacks (other than a new classification head, when one was asked for), weights of the
checkpoint that fit nowhere (other than a pretraining head the loaded class drops, such as an LM head), or weights
of the wrong shape. A `config.json` whose model_type names another architecture than the weights' is caught so.
A truncated or corrupt weights file is reported by folder, not by a deep safetensors error. A GGUF checkpoint is
dequantised to float32 and handed back as an ordinary model (it can be trained and `save_pretrained`).
"""

import contextlib
import copy
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..run.errors import InputError, MissingFileError, StorageError
from ..run.model_source import ModelSource, model_source
from .gguf import GGUFMetadataError, check_gguf_file, gguf_error, load_gguf_tokenizer, require_gguf_package
from .helpers import classification_head_name
from .kinds import is_text_encoder

logger = logging.getLogger(__name__)

_SHOWN = 4  # weight names quoted in an error
# transformers logs a table of every missing / unexpected weight; load_pretrained says what matters in one line
# (and its tensor-parallel check warns about "layers that were not sharded" on a plain CPU load of a GGUF)
_LOAD_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.distributed.tensor_parallel")


@contextlib.contextmanager
def _quiet_load_report():
    reports = [logging.getLogger(name) for name in _LOAD_REPORT_LOGGERS]
    levels = [report.level for report in reports]
    for report in reports:
        report.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for report, level in zip(reports, levels):
            report.setLevel(level)


def as_source(model: "str | ModelSource", gguf_file: str | None = None) -> ModelSource:
    """A ModelSource from a name or path (maybe a .gguf file) and an optional GGUF file name; local paths must exist."""
    source = model if isinstance(model, ModelSource) else model_source(str(model), gguf_file)
    if source.path.startswith((".", "/", "~")) and not Path(source.path).expanduser().exists():
        raise MissingFileError(f"Could not load {source.path}: no such folder.")
    if source.gguf_file is not None:  # source.is_gguf
        require_gguf_package()
        local = Path(source.path).expanduser() / source.gguf_file
        if local.is_file():
            check_gguf_file(local)  # truncated or foreign: say so before transformers fails inside
    return source


def _named(kind: str, keys: list[str]) -> str:
    keys = sorted(keys)  # transformers reports some kinds as sets: the same load gives the same message
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {kind} ({', '.join(keys[:_SHOWN])}{more})"


def _loading_error(source: ModelSource, err: Exception) -> Exception:
    if source.is_gguf:
        return gguf_error(source, err)
    if type(err).__name__ == "SafetensorError":
        return StorageError(f"The weights of {source} are truncated or corrupt ({err}); save or download them again.")
    return StorageError(f"Could not load {source}: {err}")


def _reading_error(source: ModelSource, what: str, err: Exception) -> Exception:
    """The error to raise when reading `what` (e.g. "the config of") `source` failed with `err`: a one-line one for
    a GGUF or an OSError / ValueError, else `err` itself (a bug keeps its traceback)."""
    if source.is_gguf:
        return gguf_error(source, err)
    if isinstance(err, (OSError, ValueError)):
        return StorageError(f"Could not load {what} {source}: {err}")
    return err


def _dequantised(model):
    """A GGUF-loaded model as an ordinary one: the same weights in a model without transformers' GGUF quantizer,
    which refuses save_pretrained."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # no second random initialisation: every tensor comes from the loaded model
        plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    originals = dict(model.named_buffers())
    for name, buffer in list(plain.named_buffers()):  # non-persistent buffers (e.g. rotary inv_freq)
        if buffer.is_meta:
            owner, _, attribute = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(attribute, originals[name], persistent=False)
    plain.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = model.generation_config
    return plain.eval() if not model.training else plain


def _new_parts(model, new_head: bool | str) -> list[str]:
    """Prefixes of the weights a checkpoint need not hold: with `new_head=True` the classification head; with
    "language_modelling" every module outside the base model (BertForMaskedLM's `cls`, RoBERTa's `lm_head`). A text
    encoder's pooler may be new too: one pretrained without it (masked_lm saves none) gets a fresh one for [CLS]
    fine-tuning, and text features (`hfssl.adapt.features`) never read it."""
    if new_head == "language_modelling":
        return [name + "." for name, _ in model.named_children() if name != model.base_model_prefix]
    poolers = []
    if is_text_encoder(model.config):
        poolers = [name + "." for name, _ in model.named_modules() if name.split(".")[-1] == "pooler"]
    return [classification_head_name(model) + ".", *poolers] if new_head else poolers


def _check_fit(model, info: dict, source: ModelSource, new_head: bool | str) -> list[str]:
    """ValueError unless the checkpoint fills every weight but the allowed new parts; returns the new parts made."""
    new = _new_parts(model, new_head)
    is_new = lambda key: any(key.startswith(prefix) for prefix in new)  # noqa: E731
    missing = [k for k in info.get("missing_keys", []) if not is_new(k)]
    own_modules = {name for name, _ in model.named_children()}
    # a buffer the model makes itself (BERT's position_ids, saved by old transformers into MiniLM's checkpoint and
    # reported as unexpected by transformers 5.4) loses nothing when it is not loaded
    own_buffers = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    # a checkpoint's pretraining head (lm_head, projection_head, cls, ...) that the loaded class has no place for
    unexpected = [k for k in info.get("unexpected_keys", []) if k.split(".")[0] in own_modules and k not in own_buffers]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])]
    mismatched = [k for k in mismatched if not is_new(k)]
    if missing or unexpected or mismatched:
        problems = [
            _named(kind, keys)
            for kind, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched))
            if keys
        ]
        raise InputError(
            f"The weights in {source} do not fit {type(model).__name__} (model_type {model.config.model_type!r} in "
            f"its config): {'; '.join(problems)} weights. Is config.json the one saved with these weights?"
        )
    replaced = [
        *info.get("missing_keys", []),
        *[k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])],
    ]
    initialised = sorted({p.rstrip(".") for p in new for k in replaced if k.startswith(p)})
    if initialised:
        log = logger.warning if new_head == "language_modelling" else logger.info
        log("%s holds no weights for %s: initialised fresh; the rest comes from it", source, ", ".join(initialised))
    return initialised


def load_pretrained(
    auto_class, model: "str | ModelSource", *, gguf_file: str | None = None, new_head: bool | str = False, **kwargs
):
    """`auto_class.from_pretrained(...)` of a folder, Hub id or GGUF checkpoint, checked: every weight of the model
    comes from the checkpoint except a new head (`new_head`: True for a classification head, "language_modelling"
    for a masked-LM head; see `_new_parts`). ValueError naming what does not
    fit; OSError / ValueError naming the source when it cannot be read."""
    source = as_source(model, gguf_file)
    # weights of another shape are loaded as fresh ones and reported, so that _check_fit allows a new head's (a
    # checkpoint fine-tuned for 3 labels, adapted to 2) and refuses any other in one line; transformers would raise
    kwargs.setdefault("ignore_mismatched_sizes", True)
    try:
        with _quiet_load_report():
            loaded, info = auto_class.from_pretrained(
                source.path, output_loading_info=True, **source.kwargs(), **kwargs
            )
    except Exception as err:
        if isinstance(err, (OSError, ValueError)) or type(err).__name__ == "SafetensorError" or source.is_gguf:
            raise _loading_error(source, err) from None
        raise
    # the modules this load initialised (e.g. ["bert.pooler", "classifier"]): fine-tuning must train them all
    loaded.hfssl_new_modules = _check_fit(loaded, info, source, new_head)
    return _dequantised(loaded) if source.is_gguf else loaded


def load_tokenizer(model: "str | ModelSource", gguf_file: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a folder, Hub id or GGUF checkpoint; OSError naming the source when it cannot be loaded."""
    source = as_source(model, gguf_file)
    try:
        if source.is_gguf:
            return load_gguf_tokenizer(source)
        return AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    except GGUFMetadataError:
        raise
    except Exception as err:
        raise _reading_error(source, "a tokenizer from", err) from None


def load_image_processor(model: "str | ModelSource"):
    """The image processor of a folder or Hub id; an error naming the source when it has none or cannot be read."""
    from transformers import AutoImageProcessor

    source = as_source(model)
    try:
        return AutoImageProcessor.from_pretrained(source.path)
    except Exception as err:
        raise _reading_error(source, "an image processor (preprocessor_config.json) from", err) from None


def load_causal_lm(model: "str | ModelSource", trust_remote_code: bool = False, gguf_file: str | None = None):
    """(model, tokenizer) of a causal LM from a folder, Hub id or GGUF checkpoint."""
    source = as_source(model, gguf_file)
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    return load_pretrained(AutoModelForCausalLM, source, trust_remote_code=trust_remote_code), tokenizer


def load_config(model: "str | ModelSource", gguf_file: str | None = None):
    """The config of a folder, Hub id or GGUF checkpoint; OSError naming the source when it cannot be read."""
    from transformers import AutoConfig

    source = as_source(model, gguf_file)
    try:
        return AutoConfig.from_pretrained(source.path, **source.kwargs())
    except Exception as err:
        raise _reading_error(source, "the config of", err) from None
