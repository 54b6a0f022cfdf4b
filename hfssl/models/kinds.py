"""Which text objective a checkpoint's architecture fits: an encoder (bidirectional attention, a masked-LM head in
transformers) for `masked_lm`, a decoder for `causal_lm`. Judged from the config alone, before any weights load."""

from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

from ..run.errors import InputError


def _has(mapping, config) -> bool:
    """Whether an Auto mapping (registered models included, e.g. hfssl's GPT) has a class for this config."""
    try:
        return type(config) in mapping
    except Exception:  # a config class transformers cannot map at all
        return False


def is_text_encoder(config) -> bool:
    """True for an encoder-only model with a masked-LM class (BERT, RoBERTa, MiniLM, ...) not configured as a
    decoder; encoder-decoder models (BART, T5) are neither."""
    return (
        _has(MODEL_FOR_MASKED_LM_MAPPING, config)
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "is_encoder_decoder", False)
    )


def require_encoder(config, name: str, objective: str = "masked_lm") -> None:
    """ValueError naming `name` unless its config is a text encoder."""
    if not is_text_encoder(config):
        kind = "a decoder-only" if _has(MODEL_FOR_CAUSAL_LM_MAPPING, config) else "not an encoder"
        raise InputError(
            f"{name} is {kind} model (model_type {config.model_type!r}); --objective {objective} needs an encoder with "
            "a masked-LM head in transformers (BERT, RoBERTa, ...). Use --objective causal_lm for a decoder."
        )


def require_decoder(config, name: str, objective: str = "causal_lm") -> None:
    """ValueError naming `name` if its config is a text encoder (its attention sees both sides: no next-token LM)."""
    if is_text_encoder(config):
        raise InputError(
            f"{name} is an encoder (model_type {config.model_type!r}, bidirectional attention); --objective "
            f"{objective} needs a decoder (GPT-2, Llama, ...). Use --objective masked_lm to continue pretraining it."
        )


def is_causal_lm(config) -> bool:
    """True for a decoder-only language model with a causal-LM class in transformers (GPT-2, Llama, hfssl's GPT)."""
    return _has(MODEL_FOR_CAUSAL_LM_MAPPING, config) and not is_text_encoder(config)
