"""The Accelerate pretraining loop and its objectives (importing this registers them)."""

from . import causal_lm, contrastive  # noqa: F401  (register the objectives)
from .objectives import OBJECTIVES, build_objective, register_objective

__all__ = ["OBJECTIVES", "build_objective", "register_objective"]
