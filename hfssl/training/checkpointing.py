"""The pretraining loop's checkpoints: `Accelerator.save_state` / `load_state` in the shared layout of
`hfssl.run.checkpoints` (atomic folders `checkpoints/step-N/`, rotation, trainer_state.json).

Accelerate's state holds the model, optimizer, scheduler and the RNG states of every process (each process writes
its own), so a resumed run continues bit for bit.
"""

from pathlib import Path

from accelerate import Accelerator

from ..run.checkpoints import TrainerState, read_trainer_state, write_checkpoint
from ..run.errors import InputError


def save_checkpoint(accelerator: Accelerator, output_dir, state: TrainerState, keep: int, run_args: dict) -> Path:
    """Save the full training state atomically; every process must call this. Returns the final folder."""
    return write_checkpoint(
        output_dir,
        state,
        lambda folder: accelerator.save_state(str(folder)),
        keep=keep,
        run_args=run_args,
        is_main=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
    )


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> TrainerState:
    """Restore model/optimizer/scheduler/RNG state from `checkpoint` and return where the run was."""
    state = read_trainer_state(checkpoint)
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # a truncated or foreign file deep inside torch/safetensors: name the folder
        raise InputError(f"Could not restore checkpoint {checkpoint}: {type(err).__name__}: {err}") from None
    return state
