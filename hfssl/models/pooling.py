"""Which pooling a text classifier reads, and the classifier that reads it.

A text classifier turns hidden states (B, T, d) into one vector per sequence before its head. transformers' own
classifiers fix that per architecture: BERT-like encoders read [CLS] through their pooler, causal LMs the last
token. That is right only when the model was trained for it: a sentence-transformers model (all-MiniLM-L6-v2) was
trained for the mean over its tokens, and its pooler never was. So the default is what the model was trained for:

- a sentence-transformers folder: the pooling its `1_Pooling/config.json` names (mean for MiniLM);
- a causal LM: the last token; a classifier hfssl saved with a pooling: that pooling;
- any other encoder: [CLS] through its own pooler (transformers' classifier for it).

`--pooling cls|mean|last` overrides it. Where the pooling is the architecture's own, the classifier is transformers'
(`AutoModelForSequenceClassification`); otherwise hfssl's `PooledModelForSequenceClassification` wraps the body,
with the pooling in its config, so a saved folder reloads (and serves in `pipeline("text-classification")`) with it.
"""

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from ..run.errors import InputError
from ..run.model_source import ModelSource
from .encoders import POOLINGS, PooledClassifierConfig, PooledModelForSequenceClassification
from .kinds import is_text_encoder
from .loading import load_pretrained

logger = logging.getLogger(__name__)

# sentence-transformers' pooling modes -> hfssl's pooling. A config names its mode as `pooling_mode` (sentence-
# transformers 6) or as one true flag `pooling_mode_<mode>_tokens` / `_token` (older: mean_tokens, cls_token, ...)
_SENTENCE_TRANSFORMERS_MODES = {"mean": "mean", "cls": "cls", "lasttoken": "last"}


def check_pooling(value: str | None, flag: str = "--pooling") -> str | None:
    """The pooling named by a user ("first" is the old name of "cls"); InputError for any other value."""
    if value is None:
        return None
    value = "cls" if value == "first" else value
    if value not in POOLINGS:
        raise InputError(f"{flag} must be one of {', '.join(POOLINGS)}, got {value!r}.")
    return value


def refuse_pooling_for_images(pooling: str | None, source) -> None:
    """InputError when a pooling is asked of an image model (pooling reads a text model's tokens)."""
    if pooling is not None:
        raise InputError(f"--pooling pools a text model's tokens; {source} takes images: drop it.")


def _read_json(source: ModelSource, name: str) -> dict | list | None:
    """A JSON file of a local folder or (from the cache, or downloaded unless offline) of a Hub repository; None
    when it is absent or unreadable."""
    folder = Path(source.path).expanduser()
    path: Path | None = folder / name
    if not folder.is_dir():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source.path, name))
        except Exception:  # offline, no such repository or file: nothing declared
            path = None
    try:
        return json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


def _declared_mode(config: dict) -> str | None:
    mode = config.get("pooling_mode")
    if isinstance(mode, list):
        mode = "+".join(mode)
    if isinstance(mode, str):
        return mode
    flags = [k for k, on in config.items() if k.startswith("pooling_mode_") and on is True]
    modes = [k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token") for k in flags]
    return "+".join(modes) or None


def sentence_transformers_pooling(source: ModelSource) -> str | None:
    """The pooling a sentence-transformers model declares (modules.json -> its Pooling module's config.json), for
    a local folder or a Hub id; None when it declares none. A mode hfssl does not have (max, weightedmean, ...) is
    logged and gives None."""
    modules = None if source.is_gguf else _read_json(source, "modules.json")
    if not isinstance(modules, list):
        return None
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("Pooling"):
            prefix = str(module.get("path", "")).strip("/")
            config = _read_json(source, f"{prefix}/config.json" if prefix else "config.json")
            mode = _declared_mode(config) if isinstance(config, dict) else None
            if mode is not None and mode not in _SENTENCE_TRANSFORMERS_MODES:
                logger.warning(
                    "%s pools by %r, which hfssl does not have: using the default for its kind.", source, mode
                )
            return _SENTENCE_TRANSFORMERS_MODES.get(mode or "")
    return None


def native_pooling(config) -> str:
    """The pooling transformers' (or hfssl's saved) classifier of this config reads: its own for a pooled
    classifier, the last token for a causal LM, [CLS] for an encoder."""
    if isinstance(config, PooledClassifierConfig):
        return config.pooling
    return "cls" if is_text_encoder(config) else "last"


def resolve_pooling(requested: str | None, source: ModelSource, config) -> tuple[str, str]:
    """(pooling, why): `requested` when given, else what the model was trained for (module docstring)."""
    if isinstance(config, PooledClassifierConfig) and requested not in (None, config.pooling):
        raise InputError(
            f"{source} is a classifier hfssl saved with pooling {config.pooling!r}; it cannot read {requested!r}. "
            "Drop --pooling, or fine-tune its base model."
        )
    if requested is not None:
        return requested, "--pooling"
    trained = sentence_transformers_pooling(source)
    if trained is not None:
        return trained, "the pooling its sentence-transformers config names"
    native = native_pooling(config)
    if isinstance(config, PooledClassifierConfig):
        return native, "the pooling it was saved with"
    return native, "the last token, as a causal LM's classifier reads" if native == "last" else "its own [CLS] pooler"


def load_text_classifier(
    source: ModelSource, pooling: str | None, config, pooled: bool = False, normalize: bool = False, **head
) -> tuple:
    """(classifier with a new head, pooling): transformers' classifier where `pooling` (resolved as
    `resolve_pooling` does) is the architecture's own, else (or with `pooled=True`: a method that needs the pooled
    vector itself) hfssl's pooled classifier over the pretrained body, whose "cls" is the first token's hidden state.
    normalize (with pooled): its head reads the pooled vector scaled to unit length. A classifier hfssl saved keeps
    its own pooling and normalisation.

    head: num_labels, id2label, label2id (and other config overrides) for the new head.
    """
    pooling, why = resolve_pooling(check_pooling(pooling), source, config)
    logger.info("Pooling: %s (%s)", pooling, why)
    if isinstance(config, PooledClassifierConfig) or (pooling == native_pooling(config) and not pooled):
        return load_pretrained(AutoModelForSequenceClassification, source, new_head=True, **head), pooling
    body = load_pretrained(AutoModel, source)
    encoder_config = {k: v for k, v in body.config.to_dict().items() if k != "_name_or_path"}
    pooled_config = PooledClassifierConfig(
        encoder_config=encoder_config,
        pooling=pooling,
        normalize=normalize,
        pad_token_id=body.config.pad_token_id,
        **head,
    )
    with torch.device("meta"):  # no random body to build and throw away
        model = PooledModelForSequenceClassification(pooled_config)
    model.encoder = body
    parameter = next(body.parameters())
    model.classifier = model.classifier.to_empty(device=parameter.device).to(parameter.dtype)  # the body's dtype
    model._init_weights(model.classifier)
    setattr(model, "hfssl_new_modules", ["classifier"])  # noqa: B010  (what load_pretrained records)
    return model, pooling
