"""hfssl's one exception hierarchy, and the one mapping from an expected failure to the line a user sees.

Every error hfssl raises on purpose derives from `HfsslError`; its message names the bad thing and the fix. The
subclasses also derive from the builtin a caller would catch (`InputError` is a `ValueError`, `MissingFileError` a
`FileNotFoundError`, ...), so code that catches those keeps working:

    HfsslError
    ├── InputError (ValueError)              bad flags, data, configs, labels, sequence lengths, images
    │   ├── LaunchError                      (hfssl.launch) a launch that cannot start as asked
    │   └── GGUFMetadataError                (hfssl.models.gguf) a GGUF whose metadata contradicts itself
    ├── MissingFileError (FileNotFoundError) a named file or folder that is not there
    ├── OutputExistsError (FileExistsError)  an output folder that holds another run's files
    ├── StorageError (OSError)               a file that cannot be read or written (full disk, permissions)
    ├── MissingDependencyError (ImportError) an optional package a chosen path needs
    ├── NetworkError (ConnectionError)       a registry or server that cannot be reached
    ├── NonFiniteLossError (RuntimeError)    (hfssl.run.checkpoints) the loss became NaN or infinite
    └── HubError (RuntimeError)              (hfssl.hub.errors) a push that cannot go ahead or failed

`error_message` turns these, the few dependency errors listed in `_dependency_errors`, and the environment's own
refusals (a full disk, a path one may not read or write) into one line; anything else is a bug and keeps its traceback
(a `ValueError` from deep inside torch is not bad input).
"""

import errno


class HfsslError(Exception):
    """Base of every error hfssl raises on purpose: the message is meant for the user and names the fix."""


class InputError(HfsslError, ValueError):
    """Bad input: a flag, a data file, a config, a label set, a sequence length, an image mode."""


class MissingFileError(HfsslError, FileNotFoundError):
    """A file or folder the user named (or a run needs) is not there."""


class OutputExistsError(HfsslError, FileExistsError):
    """An output folder holds files this run did not write (another run's model or checkpoints)."""


class StorageError(HfsslError, OSError):
    """A file or folder that cannot be read or written: a full disk, missing permissions, a folder in the way."""


class MissingDependencyError(HfsslError, ImportError):
    """An optional package that the chosen path needs is not installed (the message says which extra)."""


class NetworkError(HfsslError, ConnectionError):
    """A package registry or server that cannot be reached (the message says what to do offline)."""


_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}  # a folder one may not write, a read-only disk


def _dependency_errors() -> dict[type, str]:
    """Errors of dependencies that mean bad input wherever they surface, with how to say so (message appended)."""
    kinds: dict[type, str] = {}
    try:
        from safetensors import SafetensorError

        kinds[SafetensorError] = "a weights file is truncated or not safetensors"
    except ImportError:
        pass
    try:
        import yaml

        kinds[yaml.YAMLError] = "a YAML file does not parse"
    except ImportError:
        pass
    return kinds


# how torch (`PytorchStreamWriter failed writing file data/0: file write failed`) and safetensors (`IoError(Os {
# code: 28, kind: StorageFull, ... })`) report a full disk: a RuntimeError or SafetensorError, not an OSError
_DISK_FULL_TEXT = ("no space left on device", "storagefull", "file write failed")


def is_disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an exception that caused it, is a full disk (errno ENOSPC, or torch's or safetensors'
    words for it)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if not isinstance(err, OSError) and any(text in str(err).lower() for text in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def error_message(err: BaseException) -> str | None:
    """The one-line message for an expected failure, or None for an unexpected one (a bug: keep its traceback)."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:  # ours (naming the last checkpoint) or any write's
        return f"no space left on the device: {err.strerror or err}"
    if is_disk_full(err) and not isinstance(err, HfsslError):
        return f"no space left on the device ({_one_line(str(err))[:200]})"
    if isinstance(err, OSError) and err.errno in _PERMISSION_ERRNOS:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or 'permission denied'}{where} (check who may read or write it, or choose another path)"
    if isinstance(err, HfsslError):
        return _one_line(str(err))
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err.reason} at byte {err.start}); convert it to UTF-8"
    for kind, what in _dependency_errors().items():
        if isinstance(err, kind):
            return f"{what}: {_one_line(str(err))}"
    return None


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else "failed"
