"""How a row becomes the text a causal LM reads: the model's chat template when its tokenizer has one, else plain text.

With a chat template, a prompt is one user turn and a response (completion, chosen, rejected) one assistant turn; TRL
applies the template. Without one, the prompt ends in a newline and the response follows it (`prompt\\nresponse`);
TRL ends every response with the end-of-text token, so a tuned model learns to stop.
"""

import datasets

from ..models.chat import has_chat_template, plain_prompt, prompt_text
from ..models.helpers import context_window
from ..run.errors import InputError

RESPONSE_COLUMNS = ("completion", "chosen", "rejected")


def require_chat_template(tokenizer, name: str) -> None:
    """InputError unless the tokenizer has a chat template to write the chats (`messages`) of `name` with."""
    if not has_chat_template(tokenizer):
        raise InputError(
            f"{name} holds chats ('messages'), but the tokenizer has no chat template to write them with: give "
            "prompt/response columns instead (they are written 'prompt\\nresponse')."
        )


def to_model_format(ds: datasets.Dataset, tokenizer, name: str) -> datasets.Dataset:
    """Rows in the form TRL formats for this tokenizer: conversational turns with a chat template, plain text without.
    A chat (`messages`) becomes its earlier turns as the prompt and its last, the assistant's, as the completion, so
    that SFT's loss covers that answer only; it needs a chat template (InputError otherwise)."""
    chat = has_chat_template(tokenizer)
    if "messages" in ds.column_names:
        require_chat_template(tokenizer, name)
        # the last assistant turn is the response (the loss's tokens); the turns before it are the prompt
        split = lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}  # noqa: E731
        return ds.map(split, remove_columns=["messages"], desc="Splitting chats")
    present = [c for c in RESPONSE_COLUMNS if c in ds.column_names]

    def convert(row: dict) -> dict:
        if not chat:
            return {"prompt": plain_prompt(row["prompt"])}
        converted = {"prompt": [{"role": "user", "content": row["prompt"]}]}
        converted.update({c: [{"role": "assistant", "content": row[c]}] for c in present})
        return converted

    return ds.map(convert, desc="Formatting prompts")


DEFAULT_MAX_LENGTH = 512


def resolve_max_length(max_length: int | None, model) -> int:
    """--max_length, checked against the model's context window; by default the window, at most 512 tokens."""
    window = context_window(model)
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH, window or DEFAULT_MAX_LENGTH)
    if window is not None and max_length > window:
        raise InputError(f"--max_length {max_length} exceeds the model's context window ({window} tokens).")
    return max_length


def check_prompt_lengths(
    prompts: list, tokenizer, max_length: int, name: str, *, window: int | None = None, generated: int = 0
) -> None:
    """InputError when prompts (texts, or chats: lists of turns) leave no room for a response within `max_length`
    tokens, or no room for `generated` new tokens within the model's `window` (how many rows, and which)."""
    limit = min(max_length, window - generated + 1 if window is not None and generated else max_length)
    lengths = [len(tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    too_long = [row for row, n in enumerate(lengths, start=1) if n >= limit]
    if too_long:
        shown = ", ".join(map(str, too_long[:5])) + (", ..." if len(too_long) > 5 else "")
        room = f"--max_length {max_length} tokens"
        if limit < max_length:
            room = f"the model's window of {window} tokens with --max_completion_length {generated}"
        raise InputError(
            f"{name}: {len(too_long)} of {len(prompts)} prompts leave no room for a response within {room} (rows "
            f"{shown}; the longest has {max(lengths)} tokens). Shorten them, or "
            + ("lower --max_completion_length." if limit < max_length else "raise --max_length.")
        )
