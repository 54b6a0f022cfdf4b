"""Atomic, resumable training checkpoints on top of `Accelerator.save_state` / `load_state`.

Layout: `output_dir/checkpoints/step-000200/` holds Accelerate's state (model, optimizer, scheduler,
RNG states of every process), `trainer_state.json` (step, epoch, position in the epoch) and the
`metrics.json` history so far. A checkpoint is written to a temporary folder and renamed into place,
so `step-*` folders are always complete: a run killed mid-save leaves only a `.tmp-*` folder behind,
which the next save removes.
"""

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.json"
METRICS_FILE = "metrics.json"


@dataclass
class TrainerState:
    """Where the run is: enough to continue with the same data order and learning-rate schedule."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (data order is a function of seed and epoch)
    batches_in_epoch: int = 0  # per-process batches of the current epoch already consumed
    log_history: list[dict] = field(default_factory=list)


def write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def save_pretrained_atomic(output_dir: Path, objects: list) -> None:
    """`save_pretrained` every object (model, tokenizer, ...) into a temporary folder, then move the files in.

    Each file appears in output_dir complete or not at all (os.replace), so a run killed while saving
    never leaves a truncated model.safetensors behind.
    """
    tmp = output_dir / f".tmp-final-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for obj in objects:
        obj.save_pretrained(tmp)
    for item in sorted(tmp.iterdir()):
        target = output_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()


def checkpoints_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(spec: str, output_dir: str | os.PathLike) -> Path:
    """'latest' -> newest checkpoint of output_dir; otherwise the given folder, which must be a checkpoint."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(
                f"--resume_from_checkpoint latest: no checkpoint in {checkpoints_dir(output_dir)}. "
                "Drop the flag to start a new run."
            )
        return found[-1]
    path = Path(spec)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no {TRAINER_STATE} inside).")
    return path


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, state: TrainerState, keep: int) -> Path:
    """Save the full training state atomically; every process must call this. Returns the final folder."""
    root = checkpoints_dir(output_dir)
    final = root / f"step-{state.global_step:06d}"
    tmp = root / f".tmp-step-{state.global_step:06d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # each process writes its own RNG state into tmp
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / TRAINER_STATE, asdict(state))
        write_json_atomic(tmp / METRICS_FILE, state.log_history)
        if final.exists():  # same step saved before (e.g. re-run after a crash): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("Saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> TrainerState:
    """Restore model/optimizer/scheduler/RNG state from `checkpoint` and return where the run was."""
    try:
        payload = json.loads((checkpoint / TRAINER_STATE).read_text())
        state = TrainerState(**payload)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"Corrupt checkpoint state file {checkpoint / TRAINER_STATE}: {err}") from err
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # a truncated or foreign file deep inside torch/safetensors: name the folder
        raise ValueError(f"Could not restore checkpoint {checkpoint}: {type(err).__name__}: {err}") from err
    return state
