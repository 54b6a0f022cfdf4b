"""What hfssl asks of any transformers model (ours, a Hub model, a GGUF one), in one place.

The KV cache is passed and returned under the installed transformers' name: `cache` from 5.24, `past_key_values`
before (hfssl's own model files accept both; transformers' models warn on the old name from 5.24 on).
"""

from .gpt.modeling_gpt import CACHE_NAME


def cache_kwargs(cache) -> dict:
    """Keyword arguments that hand `cache` to a model's forward: {"cache": cache} or {"past_key_values": cache}."""
    return {CACHE_NAME: cache}


def output_cache(outputs):
    """The KV cache a forward pass returned (None when it returned none)."""
    return outputs.get(CACHE_NAME)
