"""Checkpoints of every training loop (pretraining, fine-tuning, meta-training): one layout, atomic writes, rotation,
`--resume_from_checkpoint` resolution, and the stop on a non-finite loss.

Layout: `output_dir/checkpoints/step-000200/` holds the loop's state (written by the loop's `write` function) and
`trainer_state.json` (step, epoch, position in the epoch, log history). A checkpoint is written into a temporary
folder and renamed into place, so `step-*` folders are always complete: a run killed mid-save leaves only a
`.tmp-step-N-<pid>` folder behind, which the next save removes (only when that process is gone).
"""

import errno
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import HfsslError, InputError, MissingFileError, StorageError, is_disk_full
from .lock import process_exists

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.json"
TRAINING_STATE = "training_state.pt"  # model, optimizer, scheduler and RNG of the loops without Accelerate
RUN_ARGS_FILE = "run_args.json"  # the arguments the checkpoint was written with (hfssl.run.resume compares them)


class NonFiniteLossError(HfsslError, RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainerState:
    """Where a run is: enough to continue with the same data order and learning-rate schedule."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (data order is a function of seed and epoch)
    batches_in_epoch: int = 0  # batches of the current epoch already consumed (per process)
    log_history: list[dict] = field(default_factory=list)


def write_json_atomic(path: Path, payload) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def checkpoints_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first. One look at the folder: the main process of a run may move it
    aside (--overwrite_output_dir) while another process of the run lists it."""
    try:
        entries = list(checkpoints_dir(output_dir).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [(int(m.group(1)), p) for p in entries if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(spec: str, output_dir: str | os.PathLike) -> Path:
    """'latest' -> newest checkpoint of output_dir; otherwise the given folder, which must be a checkpoint."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise MissingFileError(
                f"--resume_from_checkpoint latest: no checkpoint in {checkpoints_dir(output_dir)}. "
                "Drop the flag to start a new run."
            )
        return found[-1]
    path = Path(spec)
    if not (path / TRAINER_STATE).is_file():
        raise MissingFileError(f"{path} is not a checkpoint folder (no {TRAINER_STATE} inside).")
    return path


def read_trainer_state(checkpoint: Path) -> TrainerState:
    """The state a checkpoint holds; from a transformers Trainer's trainer_state.json (post-training), the fields
    TrainerState shares with it (step, epoch, log history)."""
    try:
        payload = json.loads((checkpoint / TRAINER_STATE).read_text())
        if "best_metric" in payload:  # written by transformers' Trainer
            payload = {k: payload[k] for k in ("global_step", "epoch", "log_history") if k in payload}
        return TrainerState(**payload)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
        raise InputError(f"Corrupt checkpoint state file {checkpoint / TRAINER_STATE}: {err}") from None


_TMP_DIR = re.compile(r"^\.tmp-step-\d+-(\d+)$")


def _remove_own_leftovers(root: Path) -> None:
    """Remove the `.tmp-step-N-<pid>` folders of this process and of processes that are gone (a run killed while
    saving; the folder's lock, `hfssl.run.lock`, says no other run writes here). A live process's are left alone."""
    for leftover in root.glob(".tmp-*"):
        match = _TMP_DIR.match(leftover.name)
        if match is None:
            continue  # not named by this version of hfssl: not ours to judge
        pid = int(match.group(1))
        if pid == os.getpid() or not process_exists(pid):
            shutil.rmtree(leftover, ignore_errors=True)


def write_checkpoint(
    output_dir: str | os.PathLike,
    state: TrainerState,
    write: Callable[[Path], None],
    *,
    keep: int,
    run_args: dict | None = None,
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
    write_state: bool = True,
) -> Path:
    """Write a checkpoint of `state` atomically; every process calls this. Returns the final folder.

    write(folder) stores the loop's own state there (on every process: each may add its part). The main process
    then adds trainer_state.json (unless `write_state` is False: a transformers Trainer's `write` stores its own) and
    the run's arguments (`run_args`, which a resume compares against), renames the
    folder into place and keeps the newest `keep` checkpoints (0: all). A full disk stops the run with that said;
    the last complete checkpoint stays as it was, and nothing of the unfinished one is left (Ctrl-C included).
    """
    root = checkpoints_dir(output_dir)
    final = root / f"step-{state.global_step:06d}"
    if is_main:  # named with its pid: the next save knows whether the process that left one is gone
        tmp = root / f".tmp-step-{state.global_step:06d}-{os.getpid()}"
        root.mkdir(parents=True, exist_ok=True)
        _remove_own_leftovers(root)
        tmp.mkdir()
    barrier()
    if not is_main:  # the main process's folder (the only one of this step after its clean-up)
        tmp = next(root.glob(f".tmp-step-{state.global_step:06d}-*"))
    try:
        write(tmp)
        barrier()
        if is_main and write_state:
            write_json_atomic(tmp / TRAINER_STATE, asdict(state))
        if is_main and run_args is not None:
            write_json_atomic(tmp / RUN_ARGS_FILE, run_args)
    except BaseException as err:  # a full disk, Ctrl-C, anything: leave no half-written checkpoint behind
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            kept = list_checkpoints(output_dir)
            raise StorageError(
                errno.ENOSPC,
                f"disk full while writing checkpoint {final.name} (its partial files are removed); "
                + (f"the last complete checkpoint, {kept[-1]}, is intact." if kept else "no checkpoint was kept.")
                + " Free some space, then resume with --resume_from_checkpoint latest",
            ) from None
        raise
    if is_main:
        if final.exists():  # the same step saved before (a re-run after a crash): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("Saved checkpoint %s", final)
    barrier()
    return final


def save_training_state(folder: Path, model, optimizer, scheduler=None) -> None:
    """The state of a loop without Accelerate (fine-tuning, meta-training): weights, optimizer, schedule, RNG."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(payload, folder / TRAINING_STATE)


def load_training_state(checkpoint: Path, model, optimizer, scheduler=None) -> None:
    """Restore what `save_training_state` wrote; ValueError naming the file when it is truncated or foreign."""
    path = checkpoint / TRAINING_STATE
    try:
        payload = torch.load(path, weights_only=True)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload["scheduler"] is not None:
            scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"])
    except Exception as err:  # truncated, foreign or mismatched: name the file, not torch's internals
        raise InputError(
            f"Could not restore checkpoint {path}: it is truncated or not a checkpoint hfssl wrote "
            f"({type(err).__name__}: {err})."
        ) from None


def check_finite(loss: float, step: int, output_dir: str | os.PathLike, advice: str) -> None:
    """Stop before the optimizer step when the loss is NaN or infinite, naming the step and the last good checkpoint.

    advice: what to change, e.g. "Lower --learning_rate or raise --warmup_ratio".
    """
    if math.isfinite(loss):
        return
    kept = list_checkpoints(output_dir)
    raise NonFiniteLossError(
        f"Loss became {loss} at step {step}; training stopped. "
        + (f"Last good checkpoint: {kept[-1]}." if kept else "No checkpoint was written yet.")
        + f" {advice}, then resume or restart."
    )
