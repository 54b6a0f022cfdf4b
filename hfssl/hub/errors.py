"""How a push fails: `HubError` (a message meant for the user) and the network errors that may be retried."""

import contextlib
import importlib

from ..run.errors import HfsslError


class HubError(HfsslError, RuntimeError):
    """A push that cannot go ahead or failed, with a message meant for the user."""


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Connection-level failures: the stdlib's, plus the HTTP client's that huggingface_hub uses."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            types.append(importlib.import_module(module).TransportError)
    return tuple(types)


NETWORK_ERRORS = _network_error_types()
