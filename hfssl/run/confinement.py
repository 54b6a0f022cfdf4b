"""Nothing outside a folder is read through it: the one check behind `push.py`, the demo's model store and any code
that reads a folder a user hands over.

A symlink inside a folder may point anywhere (`model.safetensors -> ~/.ssh/id_rsa`); following it would upload or
serve a file from outside the folder. Every entry is resolved (all links followed, `..` removed) and an entry whose
real path lies outside the folder's real path is refused by name. Links that stay inside are fine.
"""

import os
from pathlib import Path

from .errors import InputError


class OutsideFolderError(InputError):
    """An entry of a folder resolves (through a symlink) to a path outside that folder."""


def real_path(path: str | os.PathLike) -> Path:
    """`path` with every symlink followed and `..` removed (the file the operating system would open)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def confined(root: str | os.PathLike, name: str | os.PathLike) -> Path | None:
    """The real path of `root / name`, or None when it lies outside `root` (an absolute `name` stays absolute, so it
    is outside unless it names something under `root`)."""
    real = real_path(Path(root) / name)
    return real if real.is_relative_to(real_path(root)) else None


def check_confined(
    folder: str | os.PathLike, *, boundary: str | os.PathLike | None = None, shown_as: str | None = None
) -> None:
    """OutsideFolderError naming the first entry of `folder` (at any depth) that resolves outside `boundary`.

    boundary: the folder nothing may leave (default: `folder` itself; the demo uses its models root, so that a
    Hub-cache layout of links into a sibling `blobs/` folder still serves). shown_as: how the message names the
    folder (the demo hides its server's paths); default: the folder itself.
    """
    folder = Path(folder)
    limit = real_path(boundary if boundary is not None else folder)
    for current, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            entry = Path(current) / name
            if not real_path(entry).is_relative_to(limit):
                inside = entry.relative_to(folder)
                raise OutsideFolderError(
                    f"{inside} in {shown_as or folder} is a link to a file outside "
                    f"{'that folder' if boundary is None else 'the models root'}; nothing outside is read through "
                    "it. Copy the file in, or remove the link."
                )
