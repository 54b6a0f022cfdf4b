"""What every training loop of hfssl (pretraining, fine-tuning, meta-training) does around an optimizer step, written
once: the seeded data order of an epoch, the step itself (finite-loss check, gradient clipping, optimizer and
schedule), and when a checkpoint is due.
"""

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from .checkpoints import check_finite


@dataclass
class Running:
    """Where this process's training loop is: the step in progress and its output folder (what Ctrl-C reports)."""

    step: int = 0
    output_dir: str | None = None
    # set by run_cli's SIGINT handler: the next optimizer step stops the run even when the KeyboardInterrupt the
    # handler raised was swallowed (raised inside a finalizer or a library's callback, Python prints and drops it)
    interrupt_requested: bool = False

    def interrupted(self) -> str:
        """The line a stopped command prints: where it stopped and how to continue."""
        from .checkpoints import list_checkpoints

        if self.output_dir is None:
            return "interrupted before the first training step; nothing was saved."
        kept = list_checkpoints(self.output_dir)
        if not kept:
            return f"interrupted after step {self.step}; no checkpoint was written yet (--save_steps), so run it again."
        return (
            f"interrupted after step {self.step}; the last checkpoint is {kept[-1]}: resume with the same command and "
            "--resume_from_checkpoint latest."
        )


RUNNING = Running()
EPOCH_SEED_STRIDE = 100_003  # a prime: the seeds of (seed, epoch) pairs do not collide for any realistic epoch count


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch `epoch`'s data order: a pure function of (seed, epoch), so a resumed run sees the
    batches an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)


FUSED_ADAMW_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def adamw(params: Iterable, **options) -> torch.optim.AdamW:
    """torch's AdamW over `params` (tensors, or parameter-group dicts), fused when every tensor in it allows it.

    Fused is one kernel for all tensors. torch's default on CPU steps them one by one, which takes 85-99 ms a step
    for all-MiniLM-L6-v2's 22.7M parameters against 13-14 ms fused (docs/sentence-encoders.md); on CUDA its default
    is the multi-tensor (foreach) form. Fused is chosen where all tensors are plain (not DTensor) floating point
    tensors on one CPU or CUDA device and `options` ask for no other implementation (foreach, differentiable);
    otherwise torch chooses. The update is AdamW's either way, equal up to floating point rounding. A checkpoint's
    optimizer state carries its own choice: a run resumed from an unfused optimizer's state continues unfused.
    `options`: AdamW's (lr, weight_decay, ...).
    """
    groups = [_listed_group(group) for group in ([params] if isinstance(params, torch.Tensor) else params)]
    tensors = [p for group in groups for p in (group["params"] if isinstance(group, dict) else [group])]
    devices = {p.device for p in tensors}
    fusable = (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(type(p.data) is torch.Tensor and p.dtype in FUSED_ADAMW_DTYPES for p in tensors)
        and not options.get("foreach")
        and not options.get("differentiable")
    )
    return torch.optim.AdamW(groups, fused=True if fusable else None, **options)


def _listed_group(group):
    """A parameter group whose "params" is a list (a generator would be used up by adamw's look, a tensor is one)."""
    if not isinstance(group, dict):
        return group
    tensors = group["params"]
    return {**group, "params": [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)}


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss: float,
    *,
    step: int,
    output_dir: str | os.PathLike,
    advice: str,
    max_grad_norm: float,
    clip: Callable[[float], object],
) -> None:
    """One optimizer step after the gradients are in: stop on a non-finite `loss` (before the weights change), clip
    the gradient norm to `max_grad_norm` with `clip(max_norm)` (0: no clipping), step the optimizer and the schedule
    (`scheduler` may be None), and clear the gradients.

    `step` is the number this step will have (for the error), `advice` what to change when the loss is not finite.
    KeyboardInterrupt before anything changes when Ctrl-C was pressed and its first interrupt got lost.
    """
    if RUNNING.interrupt_requested:
        raise KeyboardInterrupt
    check_finite(loss, step, output_dir, advice)
    if max_grad_norm > 0:
        clip(max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    RUNNING.step, RUNNING.output_dir = step, str(output_dir)


def checkpoint_due(save_steps: int, step: int, final: bool) -> bool:
    """Whether step `step` writes a checkpoint: every `save_steps` steps (0: never), except the last, whose model is
    saved as the run's result."""
    return save_steps > 0 and step % save_steps == 0 and not final
