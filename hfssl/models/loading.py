"""One way in for models: every entry point and the demo load a pretrained model through these functions, from a
saved folder or a Hub id."""

from transformers import AutoModelForCausalLM, AutoTokenizer


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False):
    """(model, tokenizer) of a causal LM from a saved folder or Hub id; OSError naming it when it cannot be loaded."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise OSError(f"Could not load a causal LM and tokenizer from {name_or_path!r}: {err}") from None
    return model, tokenizer
