"""Configuration of hfssl's pooled sequence classifier: any transformers text model, a stated pooling, a linear head."""

from transformers import PretrainedConfig

POOLINGS = ("cls", "mean", "last")

_AUTO_MAP = {  # AutoModel too: a model card's "how to load" names AutoModel (the classifier is the whole model)
    "AutoConfig": "configuration_pooled.PooledClassifierConfig",
    "AutoModel": "modeling_pooled.PooledModelForSequenceClassification",
    "AutoModelForSequenceClassification": "modeling_pooled.PooledModelForSequenceClassification",
}


class PooledClassifierConfig(PretrainedConfig):
    r"""A text classifier over any transformers text model (`encoder_config`) with a stated pooling.

    Args:
        encoder_config: the body's config as a dict (`config.to_dict()`, `model_type` included), so that any model
            type that `AutoConfig` knows nests here.
        pooling: how the hidden states (B, T, d) become one vector (B, d) for the head: "cls" (the first token's),
            "mean" (the mean over the tokens the attention mask keeps, sentence-transformers' pooling) or "last"
            (the last token the attention mask keeps, as a causal LM's classifier reads).
        normalize: scale the pooled vector to unit length before the head (sentence-transformers' Normalize module):
            the cosine geometry a contrastive method tunes, which the head then reads as it was trained.
        classifier_dropout: dropout on the pooled vector before the head.
        initializer_range: std of the head's normal initialisation.
    """

    model_type = "hfssl_pooled"

    def __init__(
        self,
        encoder_config: "dict | PretrainedConfig | None" = None,
        pooling: str = "mean",
        normalize: bool = False,
        classifier_dropout: float = 0.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one hfssl knows: {', '.join(POOLINGS)}.")
        if isinstance(encoder_config, PretrainedConfig):
            encoder_config = encoder_config.to_dict()
        if encoder_config is not None and "model_type" not in encoder_config:
            raise ValueError("encoder_config needs its model_type (pass config.to_dict() of the body's config).")
        if not 0.0 <= classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {classifier_dropout}.")
        self.encoder_config = encoder_config
        self.pooling = pooling
        self.normalize = normalize
        self.classifier_dropout = classifier_dropout
        self.initializer_range = initializer_range
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        super().__init__(**kwargs)
