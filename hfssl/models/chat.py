"""How a causal LM is asked one question: its chat template's user turn when its tokenizer has one, else the plain
prompt and a newline (the layout hfssl's post-training trains: `prompt\\nresponse<end of text>`); greedy answers."""

import torch

from ..run.errors import InputError
from .helpers import context_window


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def plain_prompt(prompt: str) -> str:
    """`prompt` ending in one newline (an empty prompt stays empty)."""
    return prompt if not prompt or prompt.endswith("\n") else prompt + "\n"


def prompt_text(tokenizer, prompt: str | list[dict]) -> str:
    """The text the model continues with its answer: the chat template's user turn (or the turns of a chat given as
    [{"role", "content"}, ...]) and assistant header, or the plain prompt and a newline."""
    if has_chat_template(tokenizer):
        chat = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, list):
        raise InputError("A chat (a list of turns) needs a tokenizer with a chat template.")
    return plain_prompt(prompt)


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers to `prompts` (each written by `prompt_text`), batched with left padding, cut at the end-of-text
    token; at most `max_new_tokens`, and no further than the model's context window allows."""
    model.eval()
    window = context_window(model)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [prompt_text(tokenizer, p) for p in prompts[start : start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            length = batch["input_ids"].shape[1]
            room = max_new_tokens if window is None else min(max_new_tokens, window - length)
            if room < 1:  # the prompts fill the window: no answer
                answers += [""] * len(texts)
                continue
            out = model.generate(**batch, max_new_tokens=room, do_sample=False, pad_token_id=pad)
            answers += tokenizer.batch_decode(out[:, length:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return answers
