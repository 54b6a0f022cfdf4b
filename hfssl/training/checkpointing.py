"""The pretraining loop's checkpoints: `Accelerator.save_state` / `load_state` in the shared layout of
`hfssl.run.checkpoints` (atomic folders `checkpoints/step-N/`, rotation, trainer_state.json).

Accelerate's state holds the model (safetensors), the optimizer and the RNG states of every process (each process
writes its own), so a resumed run continues bit for bit. The learning-rate schedule is hfssl's own: it is written as
`scheduler.json`, not registered with Accelerate, whose registered objects (`custom_checkpoint_*.pkl`) load with
`weights_only=False`, that is, by running whatever the pickle says.

A checkpoint is data, never code: Accelerate loads every other file with `torch.load(weights_only=True)`, an
older checkpoint's `custom_checkpoint_0.pkl` is read the same way (a schedule needs nothing else), and a file that
would need a real pickle is refused by name. RNG states that do not load are a warning that the resume is not
bit-exact (Accelerate itself only logs that at INFO).
"""

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import load as accelerate_load
from torch.optim.lr_scheduler import LRScheduler

from ..run.checkpoints import TrainerState, read_trainer_state, write_checkpoint, write_json_atomic
from ..run.errors import InputError

logger = logging.getLogger(__name__)

SCHEDULER_STATE = "scheduler.json"
LEGACY_SCHEDULER_STATE = "custom_checkpoint_0.pkl"  # hfssl before 2026-12-06 registered the schedule with Accelerate


def save_checkpoint(
    accelerator: Accelerator, output_dir, state: TrainerState, keep: int, run_args: dict, scheduler: LRScheduler
) -> Path:
    """Save the full training state atomically; every process must call this. Returns the final folder."""

    def write(folder: Path) -> None:
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            write_json_atomic(folder / SCHEDULER_STATE, scheduler.state_dict())

    return write_checkpoint(
        output_dir,
        state,
        write,
        keep=keep,
        run_args=run_args,
        is_main=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
    )


def _torch_data(path: Path):
    """The content of a torch file, loaded as data only (`weights_only=True`); InputError naming the file when it
    needs more than that (a pickle that would run code) or is not a torch file at all."""
    try:
        return accelerate_load(path, map_location="cpu")
    except Exception as err:
        raise InputError(
            f"Refusing {path}: it is not plain tensor data (loading it would need a pickle, which can run code, or "
            f"the file is damaged: {type(err).__name__}). hfssl never writes such a file; resume from another "
            "checkpoint or start a new run."
        ) from None


def _scheduler_state(checkpoint: Path) -> dict:
    if (checkpoint / SCHEDULER_STATE).is_file():
        try:
            return json.loads((checkpoint / SCHEDULER_STATE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"Corrupt checkpoint file {checkpoint / SCHEDULER_STATE}: {err}") from None
    if (checkpoint / LEGACY_SCHEDULER_STATE).is_file():
        return _torch_data(checkpoint / LEGACY_SCHEDULER_STATE)
    raise InputError(f"{checkpoint} holds no learning-rate schedule ({SCHEDULER_STATE}): not an hfssl checkpoint.")


def _refuse_other_pickled_objects(checkpoint: Path) -> None:
    """Accelerate unpickles `custom_checkpoint_N.pkl` only for objects registered with it, which hfssl no longer
    does; beside a `scheduler.json` (or numbered above 0) such a file was put there by something else, so say so
    instead of ignoring it."""
    legacy = not (checkpoint / SCHEDULER_STATE).is_file()
    for path in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
        if not (legacy and path.name == LEGACY_SCHEDULER_STATE):
            raise InputError(f"Refusing {path}: hfssl never writes it, and loading it would run a pickle.")


def _warn_unless_random_states_load(checkpoint: Path, process_index: int) -> None:
    path = checkpoint / f"random_states_{process_index}.pkl"
    try:
        accelerate_load(path)
    except Exception as err:
        logger.warning(
            "%s could not be loaded (%s): the run resumes, but is not bit-exact (the random numbers of data order, "
            "augmentation and dropout differ from an uninterrupted run).",
            path,
            type(err).__name__,
        )


@contextmanager
def _without_pickled_objects(checkpoint: Path) -> Iterator[Path]:
    """The checkpoint as Accelerate may load it: itself, or for an older checkpoint a temporary folder of links to
    its files without `custom_checkpoint_0.pkl` (read above as data; Accelerate would unpickle it, or refuse a
    count of custom files that differs from its registered objects)."""
    if not (checkpoint / LEGACY_SCHEDULER_STATE).is_file():
        yield checkpoint
        return
    with tempfile.TemporaryDirectory(prefix="hfssl-resume-") as view:
        for path in checkpoint.iterdir():
            if path.name != LEGACY_SCHEDULER_STATE:
                (Path(view) / path.name).symlink_to(path.resolve())
        yield Path(view)


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, scheduler: LRScheduler) -> TrainerState:
    """Restore model/optimizer/scheduler/RNG state from `checkpoint` and return where the run was."""
    state = read_trainer_state(checkpoint)
    _refuse_other_pickled_objects(checkpoint)
    schedule = _scheduler_state(checkpoint)
    _warn_unless_random_states_load(checkpoint, accelerator.process_index)
    try:
        with _without_pickled_objects(checkpoint) as loadable:
            accelerator.load_state(str(loadable))
        scheduler.load_state_dict(schedule)
    except Exception as err:  # a truncated, foreign or planted file deep inside torch/safetensors: name it
        for path in sorted(checkpoint.glob("*.bin")):
            _torch_data(path)
        raise InputError(f"Could not restore checkpoint {checkpoint}: {type(err).__name__}: {err}") from None
    return state
