"""One way in for models: every entry point and the demo load a pretrained model through these functions, from a
saved folder or a Hub id.

`load_pretrained` refuses a load that would silently leave weights at their random initialisation: weights the model
needs but the checkpoint lacks (other than a new classification head, when one was asked for), weights of the
checkpoint that fit nowhere (other than a pretraining head the loaded class drops, such as an LM head), or weights
of the wrong shape. A `config.json` whose model_type names another architecture than the weights' is caught so.
A truncated or corrupt weights file is reported by folder, not by a deep safetensors error.
"""

import contextlib
import logging
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from .helpers import classification_head_name

logger = logging.getLogger(__name__)

_SHOWN = 4  # weight names quoted in an error
# transformers logs a table of every missing / unexpected weight; load_pretrained says what matters in one line
_LOAD_REPORT_LOGGER = "transformers.modeling_utils"


@contextlib.contextmanager
def _quiet_load_report():
    report = logging.getLogger(_LOAD_REPORT_LOGGER)
    level = report.level
    report.setLevel(logging.ERROR)
    try:
        yield
    finally:
        report.setLevel(level)


def _check_local(name_or_path: str) -> None:
    """FileNotFoundError for a name meant as a local path that does not exist (else the Hub would be asked)."""
    if name_or_path.startswith((".", "/", "~")) and not Path(name_or_path).expanduser().exists():
        raise FileNotFoundError(f"Could not load {name_or_path}: no such folder.")


def _named(kind: str, keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {kind} ({', '.join(keys[:_SHOWN])}{more})"


def _loading_error(name_or_path: str, err: Exception) -> OSError:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency of transformers
        SafetensorError = ()
    if isinstance(err, SafetensorError):
        return OSError(f"The weights of {name_or_path} are truncated or corrupt ({err}); save or download them again.")
    return OSError(f"Could not load {name_or_path}: {err}")


def load_pretrained(auto_class, name_or_path: str, *, new_head: bool = False, **kwargs):
    """`auto_class.from_pretrained(name_or_path, **kwargs)`, checked: every weight of the model comes from the
    checkpoint except a new classification head (`new_head=True`). ValueError naming what does not fit."""
    _check_local(name_or_path)
    try:
        with _quiet_load_report():
            model, info = auto_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as err:
        raise _loading_error(name_or_path, err) from None
    except Exception as err:
        if type(err).__name__ == "SafetensorError":
            raise _loading_error(name_or_path, err) from None
        raise
    head = classification_head_name(model) + "." if new_head else None
    missing = [k for k in info.get("missing_keys", []) if not (head and k.startswith(head))]
    own_modules = {name for name, _ in model.named_children()}
    # a checkpoint's pretraining head (lm_head, projection_head, cls, ...) that the loaded class has no place for
    unexpected = [k for k in info.get("unexpected_keys", []) if k.split(".")[0] in own_modules]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])]
    mismatched = [k for k in mismatched if not (head and k.startswith(head))]
    if missing or unexpected or mismatched:
        problems = [
            _named(kind, keys)
            for kind, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched))
            if keys
        ]
        raise ValueError(
            f"The weights in {name_or_path} do not fit {type(model).__name__} (model_type "
            f"{model.config.model_type!r} in its config.json): {'; '.join(problems)} weights. Is config.json the one "
            "saved with these weights?"
        )
    if head and any(k.startswith(head) for k in info.get("missing_keys", [])):
        logger.info(
            "%s: a new classification head (%s) was initialised; everything else comes from the checkpoint",
            name_or_path,
            head.rstrip("."),
        )
    return model


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False):
    """(model, tokenizer) of a causal LM from a saved folder or Hub id; OSError naming it when it cannot be loaded."""
    _check_local(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise OSError(f"Could not load a tokenizer from {name_or_path!r}: {err}") from None
    model = load_pretrained(AutoModelForCausalLM, name_or_path, trust_remote_code=trust_remote_code)
    return model, tokenizer
