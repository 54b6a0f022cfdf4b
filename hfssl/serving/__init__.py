"""Serving saved models to a page (demo/app.py) without any UI toolkit: which models a folder offers and loading them
safely (`ModelStore`), the few-shot prompt handlers fed one `PromptForm`, the prompt presets, image-neighbour search,
zero-shot image classification and two models answering one prompt side by side. Nothing here imports gradio;
everything is testable without a browser.
"""

from .compare_handlers import answer_side_by_side
from .model_store import REFERENCE_PREFIX, ModelStore
from .presets import EXAMPLES, FIRST_PRESET, PRESET_NOTES, Preset, preset
from .prompt_form import PromptForm
from .prompt_handlers import (
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    describe,
    generate,
    prompt_info,
    reason,
    score_labels,
)
from .vision_handlers import neighbours
from .zero_shot_handlers import ENSEMBLE_CHOICES, rank_labels

__all__ = [
    "ENSEMBLE_CHOICES",
    "EXAMPLES",
    "FIRST_PRESET",
    "MAX_NEW_TOKENS",
    "MAX_PROMPT_TOKENS",
    "PRESET_NOTES",
    "REFERENCE_PREFIX",
    "ModelStore",
    "Preset",
    "PromptForm",
    "answer_side_by_side",
    "describe",
    "generate",
    "neighbours",
    "preset",
    "prompt_info",
    "rank_labels",
    "reason",
    "score_labels",
]
