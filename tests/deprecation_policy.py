"""The suite's deprecation policy: a DeprecationWarning or FutureWarning that *our* code causes fails the test, one
that only third-party code causes is dropped.

Who causes a warning: walk outwards from the frame that raised it, skipping the raising package's own frames and call
plumbing (torch's module call, functools, contextlib, ...). The first frame left is the caller of the deprecated API.
It is ours when its module is hfssl's, a script's or the demo's (imported as `hfssl_*`), a test's, or a model file
loaded with `trust_remote_code` (`transformers_modules.*`, only ours in this suite).

Warnings that Python's filters pass on reach `warnings._showwarnmsg` while the raising frame is still on the stack;
pyproject.toml sets them to "always", so each one is judged. transformers announces some deprecations through its
logger instead (e.g. "`past_key_values`/`cache_params` are deprecated"); a logging handler judges those the same way.
"""

import logging
import sys
import warnings

OUR_PACKAGES = ("hfssl", "tests", "transformers_modules")
# frames that only pass a call along: the caller of a deprecated API is found beyond them
_PLUMBING = (
    "torch",
    "functools",
    "contextlib",
    "warnings",
    "logging",
    "inspect",
    "threading",
    "concurrent",
    "tests.deprecation_policy",
)
_DEPRECATIONS = (DeprecationWarning, FutureWarning)
# deprecations that a library raises against its own internal calls, however we call it: (message start, why)
KNOWN_THIRD_PARTY = (
    (
        "Passing `generation_config` together with generation-related arguments",
        "transformers 5.4's text-generation pipeline passes both to generate() itself",
    ),
)
_SKIP_WHEN_LOGGING = ("logging", "tests.deprecation_policy")


class DeprecatedUseError(AssertionError):
    """Our code used an API that its library has deprecated."""


def _package(frame) -> str:
    return (frame.f_globals.get("__name__") or "").split(".")[0]


def _is_ours(module: str) -> bool:
    return module.startswith(OUR_PACKAGES)


def responsible_frame(frame):
    """The frame that called into the package which raised at `frame` (None when the stack ends first)."""
    raiser = _package(frame)
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        if _is_ours(module) and not module.startswith("tests.deprecation_policy"):
            return frame
        if _package(frame) != raiser and not module.startswith(_PLUMBING):
            return frame
        frame = frame.f_back
    return None


def _check(frame, message: str) -> None:
    if message.startswith(tuple(start for start, _ in KNOWN_THIRD_PARTY)):
        return
    culprit = responsible_frame(frame)
    if culprit is not None and _is_ours(culprit.f_globals.get("__name__") or ""):
        where = f"{culprit.f_code.co_filename}:{culprit.f_lineno}"
        raise DeprecatedUseError(f"{where} uses a deprecated API: {message}")


_original_showwarnmsg = warnings._showwarnmsg


def _showwarnmsg(msg: warnings.WarningMessage) -> None:
    if issubclass(msg.category, _DEPRECATIONS):
        _check(sys._getframe(1), str(msg.message))  # frame 1: the one that called warnings.warn
        return  # third-party: dropped
    _original_showwarnmsg(msg)


class _DeprecationLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING and "deprecat" in record.getMessage().lower():
            frame = sys._getframe(1)
            while frame is not None and (frame.f_globals.get("__name__") or "").startswith(_SKIP_WHEN_LOGGING):
                frame = frame.f_back
            if frame is not None:
                _check(frame, record.getMessage())


def install() -> None:
    """Judge every deprecation warning and deprecation log record from now on (idempotent)."""
    warnings._showwarnmsg = _showwarnmsg
    handler_types = {type(h) for h in logging.getLogger("transformers").handlers}
    if _DeprecationLogHandler not in handler_types:
        for name in ("transformers", "peft", "accelerate", "datasets"):
            logging.getLogger(name).addHandler(_DeprecationLogHandler())


def forget_logged_once() -> None:
    """transformers logs many deprecations once per process: forget that, so every test that triggers one is seen."""
    from transformers.utils import logging as hf_logging

    for cached in (getattr(hf_logging, "warning_once", None), getattr(hf_logging, "info_once", None)):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
