"""The few-shot tab's handlers, each fed the store and one `PromptForm`: score the label words (raw and
contextually calibrated, with the same `PromptClassifier` as scripts/prompt_eval.py), stream a continuation, show
the exact prompt and its token count."""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from ..adapt.prompt_classifier import PromptClassifier, stop_token_ids
from ..models.helpers import context_window
from ..run.errors import InputError
from .model_store import ModelStore
from .prompt_form import PromptForm

MAX_PROMPT_TOKENS = 2048
MAX_NEW_TOKENS = 128
SCORING_BATCH_SIZE = 8


@dataclass(frozen=True)
class PreparedPrompt:
    """A form made ready to score: the classifier (model, tokenizer, template, label words), the formatted
    demonstrations, and the query."""

    classifier: PromptClassifier
    demonstrations: list[str]
    query: str


def describe(store: ModelStore, name: str) -> str:
    """One Markdown line on a causal LM: class, parameters, context window, tokenizer."""
    model, tokenizer = store.causal_lm(name)
    params = sum(p.numel() for p in model.parameters())
    window = context_window(model)
    return (
        f"**{name}** — {type(model).__name__}, {params:,} parameters, context {window or 'unlimited'} tokens, "
        f"tokenizer {type(tokenizer).__name__} ({len(tokenizer):,} tokens)"
    )


def prepare(store: ModelStore, form: PromptForm) -> PreparedPrompt:
    """The form's model loaded, its template and demonstrations checked and formatted."""
    model, tokenizer = store.causal_lm(form.model)
    template, words = form.template()
    texts, label_ids = form.examples(words)
    query = form.query_text()
    classifier = PromptClassifier(
        model, tokenizer, template, words, batch_size=SCORING_BATCH_SIZE, chat_template=form.chat
    )
    return PreparedPrompt(classifier, classifier.demonstrations(texts, label_ids), query)


def prompt_info(prepared: PreparedPrompt) -> tuple[str, str]:
    """(the exact prompt, its token count against the context window); a prompt over MAX_PROMPT_TOKENS is refused."""
    classifier, demonstrations = prepared.classifier, prepared.demonstrations
    kept = classifier.fit_context(demonstrations, [prepared.query])
    prompt = classifier.context(kept, prepared.query)  # with the chat template when it is on
    n = len(classifier.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if n > MAX_PROMPT_TOKENS:
        raise InputError(
            f"The prompt has {n} tokens; this demo accepts at most {MAX_PROMPT_TOKENS}: "
            "use fewer or shorter demonstrations."
        )
    dropped = (
        f" ({len(demonstrations) - len(kept)} demonstrations dropped to fit)" if len(kept) < len(demonstrations) else ""
    )
    return prompt, f"{n} tokens of a {classifier.window or 'unlimited'}-token context window{dropped}"


def score_labels(store: ModelStore, form: PromptForm):
    """(per-label probabilities, raw and contextually calibrated, as a table; the prompt; its token count)."""
    import pandas as pd

    prepared = prepare(store, form)
    prompt, tokens = prompt_info(prepared)
    classifier = prepared.classifier
    scores = classifier.score([prepared.query], [prepared.demonstrations], calibrate=True)
    assert scores.calibrated is not None  # calibrate=True fills it
    kinds = ["raw"] * len(classifier.options) + ["calibrated"] * len(classifier.options)
    table = pd.DataFrame(
        {
            "label": classifier.options * 2,
            "probability": scores.probs[0].tolist() + scores.calibrated[0].tolist(),
            "kind": kinds,
            "bar": [f"{w} ({k})" for w, k in zip(classifier.options * 2, kinds)],  # one bar each, not stacked
        }
    )
    return table, prompt, tokens


def generate(store: ModelStore, form: PromptForm) -> Iterator[str]:
    """Stream the continuation of the prompt, the text so far at each step (greedy at temperature 0); with the
    chat template it stops at the end of the assistant's turn. At most MAX_NEW_TOKENS and what the window leaves."""
    from transformers import TextIteratorStreamer

    prepared = prepare(store, form)
    prompt, _ = prompt_info(prepared)
    classifier = prepared.classifier
    model, tokenizer = classifier.model, classifier.tokenizer
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    room = (classifier.window or 10**9) - inputs["input_ids"].shape[1]
    new_tokens = max(1, min(form.max_new_tokens, MAX_NEW_TOKENS, room))
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = form.temperature > 0
    kwargs = dict(
        **inputs,
        max_new_tokens=new_tokens,
        streamer=streamer,
        do_sample=sampling,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=stop_token_ids(tokenizer),
    )
    if sampling:
        kwargs["temperature"] = form.temperature
    thread = threading.Thread(target=cast(Callable[..., object], model.generate), kwargs=kwargs, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    thread.join()
