"""Pretraining objectives that plug into the one Accelerate loop (`hfssl.training.loop`).

An objective owns what differs between self-supervised tasks: how the model and data are built, the
training loss of a batch, how evaluation is scored, and what is saved beside the model. The loop owns
everything else (optimisation, accumulation, distribution, checkpoints, logging). Each objective is one file
holding its arguments class and its objective class, and one line in `OBJECTIVES`.
"""

import abc
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import Dataset

from ..run.errors import InputError

if TYPE_CHECKING:
    from .arguments import PretrainArguments

logger = logging.getLogger(__name__)


@dataclass
class WarmupPhase:
    """Optimizer steps on another dataset before the training set, with their own learning-rate warmup.

    `dataset` holds exactly steps x gradient_accumulation_steps x per_device_batch_size x processes items
    (one pass, in order), so every process sees whole batches and the phase ends with the data.
    """

    dataset: Dataset
    steps: int
    per_device_batch_size: int
    name: str = "warm-up"  # shown in the progress bar and the log


@dataclass
class PretrainingSetup:
    """What an objective hands the loop."""

    model: nn.Module
    train_dataset: Dataset
    eval_dataset: Dataset | None
    collate_fn: Any
    # objects with `save_pretrained(dir)` saved beside the model (tokenizer, image processor)
    companions: list[Any] = field(default_factory=list)
    warmup: WarmupPhase | None = None
    # collates the held-out data when it must differ from training's (e.g. fixed masks); default collate_fn
    eval_collate_fn: Any = None


class Objective(abc.ABC):
    """What one self-supervised task does inside the loop; the loop calls every hook unconditionally.

    A subclass sets `name`, `arguments_class` (a PretrainArguments subclass in the objective's file) and `task`, and
    implements the four abstract methods; the other hooks have default bodies that do nothing, and are overridden
    only where the objective needs them.
    """

    name: ClassVar[str]
    arguments_class: ClassVar[type["PretrainArguments"]]
    task: ClassVar[str]  # pipeline task of the saved model (text-generation, fill-mask, image-feature-extraction)
    # True: under gradient accumulation the loop hands `accumulated_step` each group's micro-batches together (one
    # loss over the whole group, e.g. a contrastive loss by gradient cache) instead of calling `training_loss` on each
    accumulates_groups: ClassVar[bool] = False

    def __init__(self, args):
        self.args = args

    # ---- required ------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def setup(self, accelerator: Accelerator, resuming: bool = False) -> PretrainingSetup:
        """Build model and data on every process. `resuming`: reuse what the run saved (e.g. its tokenizer)."""

    @abc.abstractmethod
    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of one micro-batch (mean over its items)."""

    @abc.abstractmethod
    def items_in_batch(self, batch: dict[str, torch.Tensor]) -> int:
        """Units of throughput in the batch (tokens for language models, images for vision)."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, eval_loader, accelerator: Accelerator) -> dict[str, float]:
        """Metrics on the held-out data, identical on every process."""

    # ---- optional: the defaults do nothing -----------------------------------------------------------------------
    def accumulated_step(self, model: nn.Module, batches: list[dict], accelerator: Accelerator) -> torch.Tensor:
        """Forward and backward over one accumulation group at once; returns its loss. Called only when
        `accumulates_groups` is True and --gradient_accumulation_steps > 1."""
        raise NotImplementedError(f"{type(self).__name__} sets accumulates_groups but has no accumulated_step")

    def on_epoch_start(self, epoch: int) -> None:  # noqa: B027 (a hook whose default is to do nothing)
        """A new pass over the training data begins (e.g. draw new masks); not called during a warm-up phase."""

    def step_metrics(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        """Metrics of the (unwrapped) model after optimizer step `step` (0: before the first), logged to the tracker
        and metrics.json when not empty; called on every process (e.g. `--analysis_steps`' induction probe)."""
        return {}

    def closing_metrics(self, model: nn.Module, accelerator: Accelerator) -> dict[str, float]:
        """Metrics computed once on the main process after saving (added to metrics.json's final entry)."""
        return {}

    def finish(self, model: nn.Module, output_dir: Path, accelerator: Accelerator) -> str:
        """Called on the main process after saving; returns the text the CLI prints last (e.g. a sample)."""
        return ""


# name -> "module:class", imported when chosen: a new objective is one new file plus one line here
OBJECTIVES: dict[str, str] = {
    "causal_lm": "hfssl.training.causal_lm:CausalLMObjective",
    "clip": "hfssl.training.clip:ClipObjective",
    "contrastive": "hfssl.training.contrastive:ContrastiveObjective",
    "masked_lm": "hfssl.training.masked_lm:MaskedLMObjective",
}


def objective_class(name: str) -> type[Objective]:
    """The objective class registered as `name`; ValueError listing the names for an unknown one."""
    if name not in OBJECTIVES:
        raise InputError(f"Unknown --objective {name!r}; available: {', '.join(sorted(OBJECTIVES))}.")
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_objective(args) -> Objective:
    """The objective of `args` (an instance of that objective's arguments class), built from them."""
    cls = objective_class(args.objective)
    if not isinstance(args, cls.arguments_class):
        raise TypeError(
            f"--objective {args.objective} takes {cls.arguments_class.__name__}, got {type(args).__name__}."
        )
    return cls(args)
