"""Writing a run's results into its output folder: whole, or not at all.

`publish(output_dir, write)` has `write(folder)` fill a temporary folder beside `output_dir`, then moves it into
place: renamed as a whole when `output_dir` does not exist yet, else file by file with `os.replace` (each file
appears complete or not at all), so a run killed while saving never leaves a truncated model.safetensors behind.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def publish(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder with `write(folder)`, then move its contents into `output_dir`. Returns output_dir."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # ours: left by this process id's earlier, killed run
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def save_pretrained_all(objects: list) -> Callable[[Path], None]:
    """A `write` for `publish`: `save_pretrained(folder)` of every object (model, tokenizer, image processor)."""

    def write(folder: Path) -> None:
        for obj in objects:
            obj.save_pretrained(folder)

    return write
