"""One run owns its output folder: `output_dir/.hfssl/run.lock`.

Two runs started at once into the same `--output_dir` would rotate away each other's checkpoints and mix their
records. The first run creates the lock file atomically (`O_CREAT | O_EXCL`) with its owner (pid, host, start
time, command); a second run is refused with one line naming that owner. A lock whose owner is gone (same host, no
such process) is stale: it is taken over with a warning. A lock from another host cannot be checked from here:
it is refused, and the message says which file to delete if that run is gone.

The lock is released when the command ends (`hfssl.run.cli.run_cli`, also on Ctrl-C) or, for a run started from
Python, when the process exits; the folders the lock created are removed again when they are still empty.
"""

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from .errors import OutputExistsError
from .output import WORK_DIR

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
_held: dict[Path, list[Path]] = {}  # lock file -> the folders taking it created (removed again when empty)


class OutputInUseError(OutputExistsError):
    """Another live run holds the output folder's lock."""


def _owner() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }


def _read_owner(lock: Path) -> dict:
    try:
        owner = json.loads(lock.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}  # being written this instant, or damaged


def process_exists(pid: int) -> bool:
    """Whether process `pid` of this host is running (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _stale(owner: dict, lock: Path) -> bool:
    """Whether the lock's owner is certainly gone: a process of this host that no longer exists, or a lock file
    that has been unreadable for a minute (a run killed while writing it)."""
    if not owner:
        try:
            return time.time() - lock.stat().st_mtime > 60
        except FileNotFoundError:
            return True
    return owner.get("host") == socket.gethostname() and not process_exists(int(owner.get("pid", 0)))


def acquire_output_lock(output_dir: str | os.PathLike) -> Path:
    """Take `output_dir`'s lock for this process (again: a no-op); OutputInUseError naming the live owner."""
    folder = Path(output_dir)
    work = folder / WORK_DIR
    lock = work / LOCK_FILE
    if lock in _held:
        return lock
    created = [path for path in (work, folder) if not path.exists()]
    work.mkdir(parents=True, exist_ok=True)
    me = _owner()
    while True:
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(lock)
            if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                break  # this process took it before (a second run from the same Python session)
            if not _stale(owner, lock):
                _release_folders(created)
                raise OutputInUseError(
                    f"{folder} is in use by another run (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
                    f"started {owner.get('started', '?')}): wait for it to end or choose another --output_dir. If "
                    f"that run is gone, delete {lock}."
                ) from None
            logger.warning("Taking over the stale lock of %s (pid %s is gone).", folder, owner.get("pid", "?"))
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as f:
            json.dump(me, f)
        break
    _held[lock] = created
    return lock


def _release_folders(created: list[Path]) -> None:
    for path in created:  # innermost first; only when still empty: never a file someone wrote
        with contextlib.suppress(OSError):
            path.rmdir()


def release_output_locks() -> None:
    """Release every lock this process holds (the end of a command, or of the process)."""
    for lock, created in list(_held.items()):
        if _read_owner(lock).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)
        _release_folders(created)
        del _held[lock]


atexit.register(release_output_locks)
