"""The side-by-side tab's handler: one prompt answered by two causal LMs (say a base model and its post-trained
folder), each asked as post-training asks it (`hfssl.models.chat`: the chat template, or `prompt\\n`), greedily."""

from ..models.chat import generate_answers, prompt_text
from ..models.helpers import context_window
from ..run.errors import InputError
from .model_store import ModelStore
from .prompt_handlers import MAX_NEW_TOKENS


def answer_side_by_side(
    store: ModelStore, first: str, second: str, prompt: str, max_new_tokens: int = 48
) -> tuple[str, str]:
    """(the first model's answer, the second's) to `prompt`, at most `max_new_tokens` (and MAX_NEW_TOKENS) each."""
    if not (prompt or "").strip():
        raise InputError("Type a prompt first.")
    if not first or not second:
        raise InputError("Choose two models.")
    new_tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS))
    answers = []
    for name in (first, second):
        model, tokenizer = store.causal_lm(name)
        length = len(tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"])
        window = context_window(model)
        if window is not None and length + new_tokens > window:
            raise InputError(
                f"The prompt ({length} tokens) and {new_tokens} new tokens exceed {name!r}'s window ({window})."
            )
        answers.append(generate_answers(model, tokenizer, [prompt], new_tokens, batch_size=1)[0].strip())
    return answers[0], answers[1]
