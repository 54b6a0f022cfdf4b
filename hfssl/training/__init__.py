"""The Accelerate pretraining loop and its objectives (importing this registers them)."""

from . import causal_lm  # noqa: F401  (registers the causal_lm objective)
from .objectives import OBJECTIVES, build_objective, register_objective

__all__ = ["OBJECTIVES", "build_objective", "register_objective"]
