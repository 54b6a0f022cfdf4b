"""Looking inside trained models: attention heads found generically, their ablation, and induction-head scores
(prefix matching, copying, in-context learning) for any causal LM that returns its attention probabilities."""

from .heads import ablate_heads, eager_attention, format_heads, head_layout, parse_heads, scaled_heads
from .induction import (
    ICLScore,
    InductionScores,
    copying_scores,
    in_context_learning_score,
    induction_scores,
    prefix_matching_from_attentions,
    prefix_matching_scores,
    repeated_random_tokens,
    uniform_attention_score,
)

__all__ = [
    "ICLScore",
    "InductionScores",
    "ablate_heads",
    "copying_scores",
    "eager_attention",
    "format_heads",
    "head_layout",
    "in_context_learning_score",
    "induction_scores",
    "parse_heads",
    "prefix_matching_from_attentions",
    "prefix_matching_scores",
    "repeated_random_tokens",
    "scaled_heads",
    "uniform_attention_score",
]
