"""Writing a run's results into its output folder: whole, or not at all.

`publish(output_dir, write)` has `write(folder)` fill a temporary folder beside `output_dir`, then moves it into
place: renamed as a whole when `output_dir` does not exist yet, else file by file with `os.replace` (each file
appears complete or not at all), so a run killed while saving never leaves a truncated model.safetensors behind.
"""

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import InputError, OutputExistsError, StorageError, is_disk_full

# where the README's main command (`--objective causal_lm`) saves its model; the demo preselects it
DEFAULT_OUTPUT_DIR = "outputs/gpt-stdlib"


def publish(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder with `write(folder)`, then move its contents into `output_dir`. Returns output_dir."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # ours: left by this process id's earlier, killed run
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException as err:  # a full disk, Ctrl-C, anything: no partial model is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise StorageError(errno.ENOSPC, _disk_full_message(output_dir)) from None
        raise
    if not output_dir.exists():
        os.replace(tmp, output_dir)
        return output_dir
    for item in sorted(tmp.iterdir()):
        target = output_dir / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()
    return output_dir


def _disk_full_message(output_dir: Path) -> str:
    from .checkpoints import list_checkpoints

    kept = list_checkpoints(output_dir)
    return f"disk full while writing the model to {output_dir} (its partial files are removed); " + (
        f"the last complete checkpoint, {kept[-1]}, is intact: free some space, then resume with "
        "--resume_from_checkpoint latest."
        if kept
        else "free some space and run again."
    )


def save_pretrained_all(objects: list) -> Callable[[Path], None]:
    """A `write` for `publish`: `save_pretrained(folder)` of every object (model, tokenizer, image processor)."""

    def write(folder: Path) -> None:
        for obj in objects:
            obj.save_pretrained(folder)

    return write


# ---- whose folder is it? --------------------------------------------------------------------------------------
WORK_DIR = ".hfssl"  # inside an output folder: the run's working files (its tokenizer, files set aside)


def occupants(folder: Path) -> list[str]:
    """The entries of `folder` other than hfssl's working files (sorted), [] when it does not exist.

    One look at the folder, not "is it a folder?" then "does it exist?": another process of this run (the main one,
    taking the lock) may create it between two looks, and this one would then see a folder that holds itself.
    """
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        return [folder.name]
    return sorted(p.name for p in entries if p.name != WORK_DIR)


def _same_or_nested(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_output_dir(output_dir, *, resume: bool, overwrite: bool, inputs=(), has_checkpoints: bool = False) -> None:
    """Refuse, before any work, to write where this run would mix with or replace what it did not create.

    - never into (or around) an input model's folder, whatever the flags;
    - a folder holding anything (another run's model, checkpoints, other files) only when resuming that run or
      when --overwrite_output_dir says so (the old files are then set aside by `set_aside_previous`, not deleted).
    """
    output_dir = Path(output_dir)
    for source in inputs:
        if source and Path(source).expanduser().exists() and _same_or_nested(output_dir, Path(source).expanduser()):
            raise InputError(
                f"--output_dir {output_dir} is (or contains, or is inside) the input {source}: the run would write "
                "into the model it reads. Choose another --output_dir."
            )
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output_dir {output_dir} is a file, not a folder.")
    found = occupants(output_dir)
    if not found or resume or overwrite:
        return
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    resume_hint = "continue that run with --resume_from_checkpoint latest, " if has_checkpoints else ""
    raise OutputExistsError(
        f"{output_dir} already holds {shown}: {resume_hint}replace them with --overwrite_output_dir (they are set "
        f"aside in {output_dir / WORK_DIR}/replaced-*/, not deleted), or choose another --output_dir."
    )


def set_aside_previous(output_dir) -> Path | None:
    """With --overwrite_output_dir: move what an earlier run left in `output_dir` into .hfssl/replaced-<time>/, so
    the new run starts clean (its checkpoint rotation can only ever remove its own). Returns that folder."""
    import time

    output_dir = Path(output_dir)
    found = occupants(output_dir)
    if not found:
        return None
    aside = output_dir / WORK_DIR / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.mkdir(parents=True)
    for name in found:
        os.replace(output_dir / name, aside / name)
    return aside
