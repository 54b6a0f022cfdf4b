"""The few-shot tab's handlers, each fed the store and one `PromptForm`: score the label words (raw and
contextually calibrated, with the same `PromptClassifier` as scripts/prompt_eval.py), stream a continuation, show
the exact prompt and its token count, and reason: write a chain of thought and read its answer as
`prompt_eval.py --chain_of_thought` does."""

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from ..adapt.chain_of_thought import (
    ChainAnswer,
    chain_stop_strings,
    cot_demonstration,
    cot_template,
    cut_chain,
    parse_cot_answer,
)
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


def prepare(store: ModelStore, form: PromptForm, *, chain_of_thought: bool = False) -> PreparedPrompt:
    """The form's model loaded, its template and demonstrations checked and formatted.

    With `chain_of_thought`, in the layout of `prompt_eval.py --chain_of_thought` (`hfssl.adapt.chain_of_thought`):
    the form's trigger, if any, follows the output prefix in the query and in every demonstration, and, the
    demonstration rows having no rationale, each is a worked example whose chain is its answer sentence only
    ("... The answer is positive.")."""
    model, tokenizer = store.causal_lm(form.model)
    template, words = form.template()
    texts, label_ids = form.examples(words)
    query = form.query_text()
    if chain_of_thought:
        template = cot_template(template, form.cot_trigger)
    classifier = PromptClassifier(
        model, tokenizer, template, words, batch_size=SCORING_BATCH_SIZE, chat_template=form.chat
    )
    if not chain_of_thought:
        return PreparedPrompt(classifier, classifier.demonstrations(texts, label_ids), query)
    options = classifier.options
    worked = [cot_demonstration(template, text, "", options[label]) for text, label in zip(texts, label_ids)]
    return PreparedPrompt(classifier, worked, query)


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
    chat template it stops at the end of the assistant's turn. At most MAX_NEW_TOKENS and what the window leaves.
    With the form's `chain_of_thought`, the prompt is `reason`'s and the chain streams uncut."""
    from transformers import TextIteratorStreamer

    prepared = prepare(store, form, chain_of_thought=form.chain_of_thought)
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


def reason(store: ModelStore, form: PromptForm) -> tuple[str, str]:
    """(a chain of thought, the answer read from it as Markdown), as `prompt_eval.py --chain_of_thought` writes and
    reads one: the prompt in the chain-of-thought layout (`prepare`), greedy at temperature 0, else sampled at the
    form's temperature (plain sampling, a fresh seed each call), up to the form's max_new_tokens (at most
    MAX_NEW_TOKENS and what the window leaves); the chain cut where the model starts another example (none with the
    chat template: the assistant's turn ends it) and read by `parse_cot_answer`."""
    prepared = prepare(store, form, chain_of_thought=True)
    prompt_info(prepared)  # refuses a prompt over MAX_PROMPT_TOKENS
    classifier, demonstrations = prepared.classifier, prepared.demonstrations
    stops = [] if form.chat else chain_stop_strings(classifier.template, with_demonstrations=bool(demonstrations))
    generations = classifier.sample(
        [prepared.query],
        [demonstrations],
        max_new_tokens=max(1, min(form.max_new_tokens, MAX_NEW_TOKENS)),
        temperature=form.temperature,
        seed=random.randrange(2**32),
        stop_strings=stops,
    )
    chain = cut_chain(generations.texts[0][0], stops)  # `sample` cuts too; cut here whatever wrote the text
    return chain.strip(), answer_markdown(parse_cot_answer(chain, classifier.options))


def answer_markdown(read: ChainAnswer) -> str:
    """The answer `parse_cot_answer` read, and by which rule, as `prompt_eval` would count it."""
    if read.label >= 0:
        return f"Parsed answer: **{read.answer}** (read by rule `{read.rule}`)"
    if read.answer is not None:
        return (
            f"Parsed answer: **{read.answer}**, which names no label (rule `{read.rule}`): wrong, counted as an "
            "off-label answer in prompt_eval"
        )
    return "Parsed answer: no answer could be parsed (counted as a parse failure in prompt_eval)"
