"""Configuration of the hfssl GPT-style causal language model."""

from transformers import PretrainedConfig

_AUTO_MAP = {
    "AutoConfig": "configuration_gpt.GPTConfig",
    "AutoModel": "modeling_gpt.GPTModel",
    "AutoModelForCausalLM": "modeling_gpt.GPTForCausalLM",
    "AutoModelForSequenceClassification": "modeling_gpt.GPTForSequenceClassification",
}


class GPTConfig(PretrainedConfig):
    r"""Every architectural hyperparameter of [`GPTModel`].

    The architecture is GPT-2's (pre-LayerNorm blocks, learned absolute position embeddings, GELU MLP,
    tied input/output embeddings by default), with a fused query/key/value projection and SDPA attention.

    Args:
        vocab_size: number of tokens in the vocabulary.
        hidden_size: width d of the residual stream.
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: number of attention heads; must divide `hidden_size`.
        intermediate_size: width of the MLP hidden layer (default 4 * hidden_size).
        max_position_embeddings: longest sequence the model can attend over (context window).
        hidden_act: MLP activation; "gelu_pytorch_tanh" is GPT-2's tanh-approximated GELU as one fused kernel.
        embd_pdrop / resid_pdrop / attn_pdrop: dropout after embeddings, on residual branches, on attention probs.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: std of the normal initialisation (output projections are scaled by 1/sqrt(2 L)).
        use_bias: whether linear layers have biases (GPT-2 has them).
        tie_word_embeddings: share the input embedding matrix with the LM head.
    """

    model_type = "hfssl_gpt"

    def __init__(
        self,
        vocab_size: int = 8192,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 512,
        hidden_act: str = "gelu_pytorch_tanh",
        embd_pdrop: float = 0.0,
        resid_pdrop: float = 0.0,
        attn_pdrop: float = 0.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        use_bias: bool = True,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        bos_token_id: int | None = 0,
        eos_token_id: int | None = 0,
        pad_token_id: int | None = 1,
        **kwargs,
    ):
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})."
            )
        for name, p in (("embd_pdrop", embd_pdrop), ("resid_pdrop", resid_pdrop), ("attn_pdrop", attn_pdrop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}.")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_act = hidden_act
        self.embd_pdrop = embd_pdrop
        self.resid_pdrop = resid_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_bias = use_bias
        self.use_cache = use_cache
        # auto_map lets `from_pretrained(dir, trust_remote_code=True)` pick every head, not only the saved one.
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        # transformers 5 wraps PreTrainedConfig.__init__ to take any keyword; its dataclass signature lacks these
        super().__init__(  # type: ignore[call-arg]
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


__all__ = ["GPTConfig"]
