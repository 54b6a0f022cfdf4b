"""One mapping from the kinds of expected failure to the one-line message a user sees, shared by every script and the
demo. Library code raises ValueError / FileNotFoundError / OSError with a message that names the bad thing and the
fix; this module only decides which exceptions are such messages and phrases the few that come from dependencies.
"""

import errno


class UserInputError(ValueError):
    """Bad input, with a message meant for the user (a ValueError, so callers that catch those keep working)."""


def _dependency_errors() -> dict[type, str]:
    """Exceptions of dependencies that mean bad input, with how to say so (the message is appended)."""
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


def error_message(err: BaseException) -> str | None:
    """The one-line message for an expected failure, or None for an unexpected one (a bug: keep its traceback)."""
    from ..hub.errors import HubError  # the Hub's own failures
    from .checkpoints import NonFiniteLossError

    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on the device: {err.strerror or err}"
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err.reason} at byte {err.start}); convert it to UTF-8"
    if isinstance(err, (ValueError, OSError, HubError, NonFiniteLossError, ImportError, FloatingPointError)):
        return _one_line(str(err))
    for kind, what in _dependency_errors().items():
        if isinstance(err, kind):
            return f"{what}: {_one_line(str(err))}"
    return None


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else "failed"
