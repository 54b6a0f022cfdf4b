"""Callbacks: code a training loop calls at fixed points of every run, without the loop knowing what it does.

A callback is any object with some of these methods (each optional):

    on_step_begin(step)         before optimizer step `step` (1-based) starts its first micro-batch
    on_step_end(step, loss)     after the step, with its loss
    on_save(checkpoint)         after a checkpoint folder has been renamed into place

Loops take a `callbacks` list; `register_callback` adds one that every loop of this process calls (tests use it to
kill a run at a given step; a user may use it to report progress elsewhere).
"""

_REGISTERED: list = []


def register_callback(callback) -> None:
    """Every loop started after this (in this process) calls `callback` too."""
    _REGISTERED.append(callback)


def unregister_callback(callback) -> None:
    _REGISTERED.remove(callback)


class CallbackList:
    """The loop's own callbacks plus the registered ones, called in that order."""

    def __init__(self, callbacks=None):
        self.callbacks = [*(callbacks or []), *_REGISTERED]

    def _call(self, event: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(*args)

    def on_step_begin(self, step: int) -> None:
        self._call("on_step_begin", step)

    def on_step_end(self, step: int, loss: float) -> None:
        self._call("on_step_end", step, loss)

    def on_save(self, checkpoint) -> None:
        self._call("on_save", checkpoint)
