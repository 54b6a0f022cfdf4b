"""Data of post-training: instruction (SFT) and preference (reward model, DPO) rows, and prompts (an RL step).

Sources: a local .jsonl / .json / .csv / .tsv / .parquet file or a Hub dataset, with these columns (others are kept,
e.g. `task` and `answer`, which the checkable reward of an RL step reads):

    sft                prompt, response (or completion)  |  messages (a chat: [{"role", "content"}, ...])
    reward, dpo        prompt, chosen, rejected
    grpo               prompt (+ task, answer for the built-in checkable reward)

Checked here, each failure one `InputError` naming the file, the column and the rows: a missing column, a value that
is not text, an empty response (or chosen / rejected), and preference rows whose chosen equals rejected (refused
when every row does; dropped, with a warning, when some do: they carry no preference).
"""

import logging

import datasets

from ..run.errors import InputError
from .labelled import read_text_table

logger = logging.getLogger(__name__)

METHODS = ("sft", "reward", "dpo", "grpo")
_NEEDED = {"reward": ("prompt", "chosen", "rejected"), "dpo": ("prompt", "chosen", "rejected"), "grpo": ("prompt",)}


def _rows(where: list[int]) -> str:
    shown = ", ".join(str(r) for r in where[:5])
    return f"row {shown}" if len(where) == 1 else f"{len(where)} rows ({shown}{', ...' if len(where) > 5 else ''})"


def _check_texts(ds: datasets.Dataset, name: str, column: str, *, may_be_empty: bool = False) -> None:
    values = ds[column]
    not_text = [i for i, v in enumerate(values, start=1) if not isinstance(v, str)]
    if not_text:
        raise InputError(f"{name}: column {column!r} must hold text; it does not in {_rows(not_text)}.")
    empty = [i for i, v in enumerate(values, start=1) if not v.strip()]
    if empty and not may_be_empty:
        raise InputError(f"{name}: column {column!r} is empty in {_rows(empty)}.")


def _check_messages(ds: datasets.Dataset, name: str) -> None:
    for row, chat in enumerate(ds["messages"], start=1):
        ok = (
            isinstance(chat, list) and chat and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in chat)
        )
        if not ok:
            raise InputError(f"{name}, row {row}: 'messages' must be a list of {{'role', 'content'}} turns.")
        if chat[-1]["role"] != "assistant" or not str(chat[-1]["content"]).strip():
            raise InputError(f"{name}, row {row}: a chat must end with a non-empty 'assistant' turn (the response).")
        if len(chat) < 2:
            raise InputError(f"{name}, row {row}: a chat needs a turn before the answer (the prompt).")


def check_post_training_data(ds: datasets.Dataset, method: str, name: str) -> datasets.Dataset:
    """`ds` checked for `method` and in the columns TRL reads: SFT's `response` becomes `completion`; preference rows
    whose chosen equals rejected are dropped (all of them: refused). `name` says where the rows came from."""
    if method not in METHODS:
        raise InputError(f"Unknown post-training method {method!r}; the methods are {', '.join(METHODS)}.")
    if len(ds) == 0:
        raise InputError(f"{name} is empty.")
    columns = ds.column_names
    if method == "sft":
        if "messages" in columns:
            _check_messages(ds, name)
            return ds
        answer = "response" if "response" in columns else "completion"
        if "prompt" not in columns or answer not in columns:
            raise InputError(
                f"{name} has no 'prompt' and 'response' (or 'completion') columns, nor 'messages'; its columns are "
                f"{columns}."
            )
        _check_texts(ds, name, "prompt", may_be_empty=True)
        _check_texts(ds, name, answer)
        return ds.rename_column("response", "completion") if answer == "response" else ds
    missing = [c for c in _NEEDED[method] if c not in columns]
    if missing:
        raise InputError(
            f"{name} has no {missing} column(s), which --method {method} needs; its columns are {columns}."
        )
    for column in _NEEDED[method]:
        _check_texts(ds, name, column, may_be_empty=column == "prompt" and method != "grpo")
    if method in ("reward", "dpo"):
        pairs = zip(ds["chosen"], ds["rejected"], strict=True)
        same = [i for i, (c, r) in enumerate(pairs, start=1) if c.strip() == r.strip()]
        if len(same) == len(ds):
            raise InputError(f"{name}: 'chosen' equals 'rejected' in every row: there is no preference to learn.")
        if same:
            logger.warning("%s: 'chosen' equals 'rejected' in %s: dropped (no preference).", name, _rows(same))
            dropped = {i - 1 for i in same}
            ds = ds.select([i for i in range(len(ds)) if i not in dropped])
    return ds


def load_post_training_data(spec: str, method: str, split: str = "train", config_name: str | None = None):
    """The rows of a file or Hub dataset, checked for `method` (`check_post_training_data`)."""
    ds, name = read_text_table(spec, split, config_name)
    return check_post_training_data(ds, method, name)
