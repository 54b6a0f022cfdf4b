"""Run a script and kill its process (os._exit: no cleanup, like a kill -9) when optimizer step STEP begins.

    python tests/helpers/crash_at_step.py STEP scripts/pretrain.py ARGS...

The fault comes from a callback registered with `hfssl.run.callbacks.register_callback`, so the training loops
themselves carry no test hook.
"""

import os
import runpy
import sys

from hfssl.run.callbacks import register_callback

EXIT_CODE = 17


class KillAtStep:
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, step: int) -> None:
        if step == self.step:
            os._exit(EXIT_CODE)


if __name__ == "__main__":
    step, script, *args = sys.argv[1:]
    register_callback(KillAtStep(int(step)))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
