"""The frame of every command-line entry point: logging, then the run, then one `error:` line for any expected
failure (exit code 2) instead of a traceback, and for Ctrl-C (exit code 130, saying where the run stopped and how
to resume). Unexpected exceptions (bugs) keep their traceback. The output folder's lock is released in every case.

    def main(argv=None) -> int:
        return run_cli(lambda: report(run_finetune(parse_cli(FinetuneArguments, argv))))
"""

import logging
import signal
import sys
import threading
from collections.abc import Callable

from .errors import error_message
from .lock import release_output_locks
from .steps import RUNNING

NOISY_LOGGERS = ("httpx", "httpx2", "urllib3", "filelock", "accelerate", "huggingface_hub")


BUG_NOTE = (
    "hfssl: this error does not come from your input; it is a bug in hfssl or a library it uses. "
    "Please report it with the traceback above."
)


def configure_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _on_sigint(signum, frame) -> None:
    """Ctrl-C: raise KeyboardInterrupt as Python does, and remember it, so that the next optimizer step raises again
    if this one is swallowed (`hfssl.run.steps.optimizer_step`)."""
    RUNNING.interrupt_requested = True
    raise KeyboardInterrupt


def run_cli(run: Callable[[], int | None]) -> int:
    """Call `run()` and return the process exit code: its own, 0, or 2 with an `error:` line on stderr."""
    configure_logging()
    RUNNING.step, RUNNING.output_dir, RUNNING.interrupt_requested = 0, None, False
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_sigint) if main_thread else None
    try:
        return run() or 0
    except KeyboardInterrupt:  # Ctrl-C: where it stopped and how to continue, not a traceback
        print(f"error: {RUNNING.interrupted()}", file=sys.stderr)
        return 130
    except Exception as err:
        message = error_message(err)
        if message is None:
            err.add_note(BUG_NOTE)
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
        release_output_locks()
