"""hfssl GPT: a GPT-2-style causal language model written as a `transformers` model.

Shapes use B = batch, T = query length, S = key length (past + current), d = hidden size,
nh = number of heads, hs = head size (d / nh), V = vocabulary size.

This file imports only torch, transformers and its sibling configuration file, so that
`save_pretrained` can copy it next to the weights and `trust_remote_code=True` loads it anywhere.

The KV cache: transformers 5.24 renamed the cache argument and output field from `past_key_values` to `cache`
(the old name warns, and goes in 5.40); 5.4-5.23 know only `past_key_values`. A folder saved with this file is
loaded by whatever transformers its user has, so the file speaks the installed version's name (`CACHE_NAME`) and
accepts either from its caller.
"""

import inspect
import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_gpt import GPTConfig

# "cache" (transformers >= 5.24) or "past_key_values" (earlier): the output field, and the argument generation passes
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
_MASK_CACHE_ARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def _one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache passed under either name (the current `cache`, or `past_key_values` of transformers < 5.24)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the KV cache once, as `cache` (`past_key_values` is its name before transformers 5.24).")
    return cache if cache is not None else past_key_values


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling + mask) v, written out. q: (B, nh, T, hs), k/v: (B, nh, S, hs) -> (B, T, nh, hs)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    elif query.shape[2] > 1:  # no mask given: plain causal attention (cache offset S - T)
        causal = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device)
        causal = causal.tril(diagonal=key.shape[2] - query.shape[2])
        attn_weights = attn_weights.masked_fill(~causal, torch.finfo(attn_weights.dtype).min)
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class GPTAttention(nn.Module):
    """Multi-head causal self-attention with one fused q/k/v projection."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.use_bias)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output (B, T, d), attention probabilities (B, nh, T, S) or None): the probabilities exist only with the
        eager implementation (`config._attn_implementation == "eager"`); SDPA and flash attention never form them."""
        B, T, _ = hidden_states.shape
        # (B, T, 3d) -> 3 x (B, nh, T, hs)
        qkv = self.qkv_proj(hidden_states).view(B, T, 3, -1, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        if cache is not None:  # append to the cache; key/value become (B, nh, S, hs)
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attn_pdrop if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(B, T, -1)  # (B, T, d): head h is the slice [h * hs, (h + 1) * hs)
        return self.resid_dropout(self.out_proj(attn_output)), attn_weights


class GPTMLP(nn.Module):
    """fc_out(act(fc_in(x))): (B, T, d) -> (B, T, d)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.use_bias)
        self.act = ACT2FN[config.hidden_act]
        self.fc_out = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.use_bias)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc_out(self.act(self.fc_in(hidden_states))))


class GPTBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = GPTAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GPTMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_output, _ = self.attn(self.ln_1(hidden_states), attention_mask=attention_mask, cache=cache, **kwargs)
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class GPTPreTrainedModel(PreTrainedModel):
    config_class = GPTConfig
    config: GPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPTBlock"]
    _skip_keys_device_placement = [CACHE_NAME]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 initialisation: N(0, 0.02) everywhere, residual output projections N(0, 0.02 / sqrt(2 L))."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, (GPTAttention, GPTMLP)):
            residual_proj = module.out_proj if isinstance(module, GPTAttention) else module.fc_out
            nn.init.normal_(residual_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.num_hidden_layers))


def _position_ids_from(
    attention_mask: torch.Tensor | None, past_length: int, seq_length: int, device: torch.device
) -> torch.Tensor:
    """Positions of the T new tokens: count of real tokens before each one, so left padding is skipped.

    attention_mask: (B, past_length + T) with 1 for real tokens, or None. Returns (B or 1, T).
    """
    if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids = position_ids.clamp(min=0)
        return position_ids[:, -seq_length:]
    return torch.arange(past_length, past_length + seq_length, device=device).unsqueeze(0)


class GPTModel(GPTPreTrainedModel):
    """Token + position embeddings, L blocks, final LayerNorm: input_ids (B, T) -> hidden states (B, T, d)."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.embd_pdrop)
        self.layers = nn.ModuleList([GPTBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:  # type: ignore[override]  # an Embedding only
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """input_ids (B, T) or inputs_embeds (B, T, d); cache: KV cache of earlier tokens (alias past_key_values).

        output_attentions: also return `attentions`, one (B, nh, T, S) tensor of attention probabilities per layer.
        Only the eager implementation forms them: load with `attn_implementation="eager"` or call
        `model.set_attn_implementation("eager")` first (SDPA, the default, raises a ValueError here).
        """
        cache = _one_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False  # a cache would be filled twice by the recomputation
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_attentions and self.config._attn_implementation != "eager":
            raise ValueError(
                f"output_attentions=True needs the eager attention implementation (this model uses "
                f"{self.config._attn_implementation!r}, which never forms the attention probabilities): call "
                "model.set_attn_implementation('eager') or load it with attn_implementation='eager'."
            )

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, d)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        seq_length = inputs_embeds.shape[1]
        if past_length + seq_length > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence of {past_length + seq_length} tokens is longer than max_position_embeddings="
                f"{self.config.max_position_embeddings}; truncate the input or use a model with a longer context."
            )
        if position_ids is None:
            position_ids = _position_ids_from(attention_mask, past_length, seq_length, inputs_embeds.device)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{_MASK_CACHE_ARG: cache},
        )
        hidden_states = self.dropout(inputs_embeds + self.embed_positions(position_ids))
        all_hidden_states: tuple[torch.Tensor, ...] | None = (hidden_states,) if output_hidden_states else None
        all_attentions: list[torch.Tensor] = []
        # each layer's attention probabilities, read from its attention's output (the block returns hidden states only)
        hooks = [
            cast(GPTBlock, layer).attn.register_forward_hook(lambda _m, _args, output: all_attentions.append(output[1]))
            for layer in self.layers
            if output_attentions
        ]
        try:
            for layer in self.layers:
                hidden_states = layer(hidden_states, attention_mask=causal_mask, cache=cache, **kwargs)
                if all_hidden_states is not None:
                    all_hidden_states += (hidden_states,)
        finally:
            for hook in hooks:
                hook.remove()
        hidden_states = self.norm(hidden_states)
        if all_hidden_states is not None:  # the last entry is the normalised output, as in GPT-2
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        cache_output: dict[str, Any] = {CACHE_NAME: cache if use_cache else None}
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=tuple(all_attentions) if output_attentions else None,
            **cache_output,
        )


class GPTForCausalLM(GPTPreTrainedModel, GenerationMixin):
    """GPTModel + a linear LM head (tied to the token embeddings by default).

    `labels` (B, T) are the input ids themselves (shifted inside the loss); -100 is ignored.
    loss = -1/N sum_t log p(x_{t+1} | x_{<=t}) over the N non-ignored targets.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}  # type: ignore[dict-item]  # lists, as transformers' own

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.model = GPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # generation needs only the last position's logits: skip the (B, T, V) matmul for the rest
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])  # (B, T', V)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_NAME: outputs.get(CACHE_NAME)},
        )


class GPTForSequenceClassification(GPTPreTrainedModel):
    """GPTModel + a linear head on the last real token's hidden state c_T.

    c_T is taken at the last position where `attention_mask` is 1 (left or right padding), else at the
    last token that is not `pad_token_id`, else at the last position. logits = W c_T + b: (B, num_labels).
    Loss as in transformers: cross-entropy (single label), MSE (num_labels == 1), BCE (multi-label).
    """

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = GPTModel(config)
        self.score = nn.Linear(config.hidden_size, cast(int, config.num_labels))  # PreTrainedConfig sets it (default 2)
        self.post_init()

    def _last_token_index(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, T: int):
        positions = torch.arange(T, device=self.score.weight.device)
        if attention_mask is not None and attention_mask.dim() == 2:
            return (positions * attention_mask[:, -T:].to(positions.device)).argmax(-1)
        if input_ids is not None and self.config.pad_token_id is not None:
            return (positions * (input_ids != self.config.pad_token_id).to(positions.device)).argmax(-1)
        return torch.full((1,), T - 1, device=positions.device)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, d)
        B, T = hidden_states.shape[:2]
        last = self._last_token_index(input_ids, attention_mask, T).expand(B)
        pooled = hidden_states[torch.arange(B, device=hidden_states.device), last]  # (B, d) = c_T
        logits = self.score(pooled)  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_NAME: outputs.get(CACHE_NAME)},
        )


__all__ = ["GPTForCausalLM", "GPTForSequenceClassification", "GPTModel", "GPTPreTrainedModel"]
