"""The Accelerate pretraining loop and its objectives (`OBJECTIVES`, imported when chosen)."""

from .objectives import OBJECTIVES, build_objective, objective_class

__all__ = ["OBJECTIVES", "build_objective", "objective_class"]
