"""hfssl's pooled sequence classifier: any transformers text model (BERT, MiniLM, Llama, hfssl GPT, ...) as the body,
the hidden states pooled by a stated rule, and a linear head.

transformers' own classifiers fix the pooling per architecture (BERT: [CLS] through its pooler; GPT-2, Llama: the
last token). A sentence encoder such as all-MiniLM-L6-v2 was trained for the mean over its tokens and its pooler
never was, so hfssl classifies from the pooling the model was trained for. Shapes: B batch, T tokens, d hidden.

This file imports only torch, transformers and its sibling configuration file, so that `save_pretrained` can copy it
next to the weights and `trust_remote_code=True` loads it anywhere.
"""

from typing import cast

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_pooled import POOLINGS, PooledClassifierConfig


def _check_one_side(mask: torch.Tensor) -> None:
    """ValueError unless every row keeps one run of tokens and the padded rows pad on one side (all left, or all
    right): the last kept token is then the sequence's last token."""
    kept = mask.bool()
    starts = kept[:, 1:] & ~kept[:, :-1]  # a 0 -> 1 step
    runs = starts.sum(dim=1) + kept[:, 0].long()
    if bool((runs > 1).any()):
        raise ValueError("The attention mask has padding inside a sequence: pooling 'last' needs it on one side.")
    left = ~kept[:, 0] & kept.any(dim=1)
    right = ~kept[:, -1] & kept.any(dim=1)
    if bool(left.any()) and bool(right.any()):
        raise ValueError(
            "The batch mixes left- and right-padded sequences: pooling 'last' needs one padding side (the tokenizer's "
            "padding_side)."
        )


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per sequence: hidden (B, T, d), attention_mask (B, T) with 1 on real tokens (None: all real).

    cls:  h_t at the first real token (BERT's [CLS]; position 0 under right padding);
    mean: sum_t m_t h_t / sum_t m_t, over the real tokens only;
    last: h_t at the last real token (left or right padding, one side per batch).
    Returns (B, d).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one hfssl knows: {', '.join(POOLINGS)}.")
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    mask = attention_mask[:, -hidden.shape[1] :].to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "cls":
        return hidden[rows, mask.int().argmax(dim=1)]  # the first real token (position 0 under right padding)
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)
    _check_one_side(mask)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * mask).argmax(dim=1)  # (B,)
    return hidden[rows, last]


def encode_and_pool(encoder: nn.Module, input_ids, attention_mask, pooling: str, **kwargs) -> tuple:
    """(the text model's outputs, its hidden states pooled by `pooling`, (B, d)); extra tokenizer outputs
    (token_type_ids) pass to the model."""
    kwargs.pop("return_dict", None)
    outputs = encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
    return outputs, pool_hidden_states(outputs.last_hidden_state, attention_mask, pooling)


class PooledModelForSequenceClassification(PreTrainedModel):
    """logits = W pool(encoder(x)) + b, (B, num_labels), with pool(.) scaled to unit length where
    `config.normalize`; the loss as transformers' sequence classifiers compute it
    (cross-entropy for single labels, MSE for num_labels == 1, BCE for multi-label)."""

    config_class = PooledClassifierConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: PooledClassifierConfig):
        super().__init__(config)
        if config.encoder_config is None:
            raise ValueError("PooledClassifierConfig needs encoder_config: the body's config as a dict.")
        body = dict(config.encoder_config)
        self.encoder = AutoModel.from_config(AutoConfig.for_model(body.pop("model_type"), **body))
        hidden_size = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden_size, cast(int, config.num_labels))  # PretrainedConfig sets it
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """The head: N(0, initializer_range), zero bias. The body keeps its own initialisation (or its weights)."""
        if module is getattr(self, "classifier", None):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)

    def pooled_output(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """The vector the head reads, (B, d): the encoder's hidden states pooled by `config.pooling` (a sentence
        embedding for a sentence encoder), of unit length where `config.normalize`."""
        return self._encode(input_ids, attention_mask, **kwargs)[1]

    def _encode(self, input_ids, attention_mask, **kwargs):
        outputs, pooled = encode_and_pool(self.encoder, input_ids, attention_mask, self.config.pooling, **kwargs)
        return outputs, nn.functional.normalize(pooled, dim=-1) if self.config.normalize else pooled

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs, pooled = self._encode(input_ids, attention_mask, **kwargs)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.get("hidden_states"), attentions=outputs.get("attentions")
        )


__all__ = ["PooledModelForSequenceClassification", "encode_and_pool", "pool_hidden_states"]
