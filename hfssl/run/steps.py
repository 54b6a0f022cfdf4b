"""What every training loop of hfssl (pretraining, fine-tuning, meta-training) does around an optimizer step, written
once: the seeded data order of an epoch, the step itself (finite-loss check, gradient clipping, optimizer and
schedule), and when a checkpoint is due.
"""

import os
from collections.abc import Callable

import torch

from .checkpoints import check_finite

EPOCH_SEED_STRIDE = 100_003  # a prime: the seeds of (seed, epoch) pairs do not collide for any realistic epoch count


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch `epoch`'s data order: a pure function of (seed, epoch), so a resumed run sees the
    batches an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)


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
    """
    check_finite(loss, step, output_dir, advice)
    if max_grad_norm > 0:
        clip(max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def checkpoint_due(save_steps: int, step: int, final: bool) -> bool:
    """Whether step `step` writes a checkpoint: every `save_steps` steps (0: never), except the last, whose model is
    saved as the run's result."""
    return save_steps > 0 and step % save_steps == 0 and not final
