"""Resume must not lie: a resumed run either continues its checkpoint's run or says why it cannot.

Every checkpoint stores the arguments it was written with (`run_args.json`). On `--resume_from_checkpoint`, the new
arguments are compared with those. A difference that would change what the run computes (model shape, data, seed,
batch, learning rate, schedule, number of processes, ...) is refused, naming each one. A difference in a setting
each arguments class declares safe (`RESUME_SAFE`: logging, evaluation and checkpoint intervals, more steps, where
to push, ...) is applied and logged. Anything not declared safe counts as unsafe.
"""

import json
import logging
from pathlib import Path

from .checkpoints import RUN_ARGS_FILE
from .errors import InputError

logger = logging.getLogger(__name__)


def saved_arguments(checkpoint: Path) -> dict | None:
    """The arguments a checkpoint was written with (None for checkpoints written before they were stored)."""
    path = Path(checkpoint) / RUN_ARGS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"Corrupt checkpoint arguments file {path}: {err}") from None


def check_resume(
    checkpoint: Path, current: dict, safe: frozenset, global_step: int, added: dict | None = None
) -> list[str]:
    """Refuse (ValueError naming every unsafe difference) or return the safe differences, which are logged.

    current: the new run's arguments (JSON values); safe: the names whose change keeps the run the same run;
    global_step: where the checkpoint stands (a new --max_steps below it is refused); added: arguments introduced
    after some checkpoints were written, with the value that reproduces what those runs did (a checkpoint without
    the name is read as having it).
    """
    saved = saved_arguments(checkpoint)
    if saved is not None:
        saved = {**(added or {}), **saved}
    if saved is None:
        logger.warning(
            "%s records no arguments (written by an older hfssl): resuming without comparing them.", checkpoint
        )
        return []
    names = sorted(set(saved) | set(current))
    differ = [n for n in names if saved.get(n) != current.get(n)]
    unsafe = [n for n in differ if n not in safe]
    if current.get("max_steps") and global_step > current["max_steps"]:
        unsafe.append("max_steps")
    if unsafe:
        changes = "; ".join(f"--{n} was {saved.get(n)!r}, now {current.get(n)!r}" for n in unsafe)
        raise InputError(
            f"--resume_from_checkpoint {checkpoint} would not continue the run it saved: {changes}. Resume with the "
            "checkpoint's values, or start a new run in another --output_dir."
        )
    for name in differ:
        logger.info("Resuming with --%s %r (the checkpoint's run had %r)", name, current.get(name), saved.get(name))
    return differ
