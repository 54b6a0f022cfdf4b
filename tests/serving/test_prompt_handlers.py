"""hfssl.serving's few-shot handlers fed one PromptForm: scoring, streaming, reasoning (a chain of thought and its
parsed answer), the prompt and its token count, the presets, and bad input. No gradio needed."""

import pytest

from hfssl.adapt.chain_of_thought import parse_cot_answer
from hfssl.adapt.prompt_classifier import Generations, PromptClassifier
from hfssl.run.errors import InputError
from hfssl.serving import (
    EXAMPLES,
    MAX_NEW_TOKENS,
    ModelStore,
    Preset,
    PromptForm,
    generate,
    preset,
    prompt_handlers,
    prompt_info,
    reason,
    score_labels,
)
from hfssl.serving.prompt_form import escape, unescape
from hfssl.serving.prompt_handlers import answer_markdown
from tests.serving.models_root import SENTIMENT_FORM


def sentiment_form(**changes) -> PromptForm:
    return PromptForm(**{"model": "gpt", **SENTIMENT_FORM, **changes})


def test_score_labels_directly(models_root):
    store = ModelStore(models_root)
    table, prompt, tokens = score_labels(store, sentiment_form())
    assert (
        prompt == "Review: a fine film\nSentiment: positive\n\nReview: a dull film\nSentiment: negative\n\n"
        "Review: a good film\nSentiment:"
    )
    assert "tokens of a 256-token context window" in tokens
    for kind in ("raw", "calibrated"):
        probs = table[table.kind == kind].probability
        assert len(probs) == 2 and probs.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_preset_fills_fields_that_score(models_root, name):
    """A preset's demonstrations use only its label words, and its prompt builds and scores as it stands."""
    chosen = preset(name)
    words = [w.strip() for w in chosen.labels.split(",")]
    assert {label for _, label in chosen.demonstrations} <= set(words) and len(words) >= 2
    assert name.split("_")[0] in chosen.note.lower()  # the note of this preset, not another's
    store = ModelStore(models_root)
    table, prompt, _ = score_labels(store, chosen.form("gpt"))
    prefix = chosen.input_prefix
    assert prompt.startswith(prefix) and any(prompt.startswith(f"{prefix}{text}") for text, _ in chosen.demonstrations)
    assert prompt.split(unescape(chosen.delimiter))[-1].startswith(f"{prefix}{chosen.query}")  # the query comes last
    assert sorted(table[table.kind == "raw"].label) == sorted(words)
    with pytest.raises(ValueError, match="Unknown preset"):
        preset("nope")


def test_delimiter_field_is_unescaped(models_root):
    store = ModelStore(models_root)
    _, prompt, _ = score_labels(store, sentiment_form(delimiter=" | "))
    assert prompt.startswith("Review: a fine film\nSentiment: positive | Review: a dull film")
    assert unescape("\\n\\t") == "\n\t" and escape("\n\t") == "\\n\\t"


def test_generate_streams(models_root):
    store = ModelStore(models_root)
    pieces = list(generate(store, sentiment_form(max_new_tokens=5, temperature=0.0)))
    assert pieces and all(pieces[i].startswith(pieces[i - 1]) for i in range(1, len(pieces)))


COT_PROMPT = (
    "Review: a fine film\nSentiment: Let's think step by step. The answer is positive.\n\n"
    "Review: a dull film\nSentiment: Let's think step by step. The answer is negative.\n\n"
    "Review: a good film\nSentiment: Let's think step by step."
)


def test_the_chain_of_thought_prompt_shows_demonstrations_as_worked_examples(models_root):
    """No rationale column: each demonstration's chain is its answer sentence, after the trigger as in the query."""
    store = ModelStore(models_root)
    prompt, _ = prompt_info(prompt_handlers.prepare(store, sentiment_form(), chain_of_thought=True))
    assert prompt == COT_PROMPT
    prompt, _ = prompt_info(prompt_handlers.prepare(store, sentiment_form(cot_trigger=" "), chain_of_thought=True))
    assert prompt.endswith("Sentiment: The answer is negative.\n\nReview: a good film\nSentiment:")


def test_generate_continues_the_chain_of_thought_prompt_when_ticked(models_root, monkeypatch):
    shown = []

    def recording(prepared):
        shown.append(prompt := real_prompt_info(prepared))
        return prompt

    real_prompt_info = prompt_handlers.prompt_info
    monkeypatch.setattr(prompt_handlers, "prompt_info", recording)
    store = ModelStore(models_root)
    list(generate(store, sentiment_form(max_new_tokens=2)))
    list(generate(store, sentiment_form(max_new_tokens=2, chain_of_thought=True)))
    assert shown[0][0].endswith("Review: a good film\nSentiment:") and shown[1][0] == COT_PROMPT


def test_reason_on_the_tiny_gpt_returns_a_chain_and_its_answer_apart(models_root):
    chain, answer = reason(ModelStore(models_root), sentiment_form(max_new_tokens=8))
    assert isinstance(chain, str) and answer.startswith("Parsed answer:")
    assert answer == answer_markdown(parse_cot_answer(chain, ["negative", "positive"]))  # what the chain says


def test_reason_cuts_the_chain_and_reads_its_last_answer_statement(models_root, monkeypatch):
    """A model that writes a chain, then starts another example: the chain is cut there, so the invented example's
    answer is not read, and the answer is shown apart from the chain."""
    calls = []

    def fake_sample(self, queries, demos_per_query, **kwargs):
        calls.append((queries, demos_per_query, kwargs))
        text = (
            " First, it calls the film dull. The answer is negative.\n\nReview: x\nSentiment: The answer is positive."
        )
        return Generations([[text]], [[30]])

    monkeypatch.setattr(PromptClassifier, "sample", fake_sample)
    chain, answer = reason(ModelStore(models_root), sentiment_form(max_new_tokens=1000, temperature=0.7))
    assert chain == "First, it calls the film dull. The answer is negative."
    assert answer == "Parsed answer: **negative** (read by rule `answer_statement`)" and "**" not in chain
    ((queries, demos, kwargs),) = calls
    assert queries == ["a good film"] and demos[0][0].endswith("The answer is positive.")
    assert kwargs["max_new_tokens"] == MAX_NEW_TOKENS and kwargs["temperature"] == 0.7
    assert kwargs["stop_strings"] == ["Review:", "\n\n"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "The answer is neutral.",
            "**neutral**, which names no label (rule `answer_statement`): wrong, counted as an off-label",
        ),
        ("I cannot tell.", "no answer could be parsed (counted as a parse failure in prompt_eval)"),
        ("Good acting, so positive overall", "**positive** (read by rule `last_label_word`)"),
    ],
)
def test_reason_names_the_rule_or_the_parse_failure(models_root, monkeypatch, text, shown):
    monkeypatch.setattr(PromptClassifier, "sample", lambda self, *args, **kwargs: Generations([[text]], [[5]]))
    chain, answer = reason(ModelStore(models_root), sentiment_form(demonstrations=[]))
    assert chain == text and shown in answer


def test_bad_input_messages(models_root):
    store = ModelStore(models_root)
    with pytest.raises(InputError, match="not one of the labels"):
        score_labels(store, sentiment_form(demonstrations=[["a film", "neutral"]], query="x"))
    with pytest.raises(InputError, match="at least two"):
        score_labels(store, sentiment_form(labels="positive", query="x"))
    with pytest.raises(InputError, match="Type a query"):
        score_labels(store, sentiment_form(query="  "))
    with pytest.raises(InputError, match="not a model under the models root"):
        score_labels(store, sentiment_form(model="../secret"))


def test_a_prompt_over_the_token_limit_is_refused(models_root, monkeypatch):
    monkeypatch.setattr(prompt_handlers, "MAX_PROMPT_TOKENS", 5)
    with pytest.raises(InputError, match="at most 5"):
        score_labels(ModelStore(models_root), sentiment_form())


def test_the_form_field_list_is_the_page_api_order():
    """`/score` takes every field but the generation ones and `/generate` and `/reason` all of them, in the order the
    page's API has always taken them (gradio_client callers pass them positionally): the chain-of-thought fields,
    added later, come last, so that a caller who leaves them out gets their defaults."""
    scoring = ["model", "preset", "instruction", "input_prefix", "output_prefix", "delimiter", "labels"]
    scoring += ["demonstrations", "query", "chat"]
    assert PromptForm.field_names(generation=False) == scoring
    generating = scoring[:-1] + ["max_new_tokens", "temperature", "chat", "chain_of_thought", "cot_trigger"]
    assert PromptForm.field_names() == generating
    form = PromptForm(model="gpt")
    assert form.chain_of_thought is False and form.cot_trigger == "Let's think step by step."
    assert Preset.filled_fields() == ["input_prefix", "output_prefix", "delimiter", "labels", "demonstrations", "query"]


def test_form_from_page_values_takes_a_table_and_counts_its_values():
    import pandas as pd

    names = ["model", "demonstrations", "chat"]
    table = pd.DataFrame([["a fine film", "positive"]], columns=["input", "label"])
    form = PromptForm.from_values(names, ["gpt", table, None])
    assert form.demonstrations == [["a fine film", "positive"]] and form.chat is False
    with pytest.raises(TypeError, match="Expected 3 values"):
        PromptForm.from_values(names, ["gpt"])


def test_a_preset_form_keeps_the_presets_examples_unchanged():
    form = preset("key_value").form("gpt", query="e")
    form.demonstrations.append(["z", "zero"])
    assert form.query == "e" and form.preset == "key_value" and ["z", "zero"] not in preset("key_value").demonstrations
    assert EXAMPLES["key_value"][1] == "w"


def test_a_form_refuses_numbers_that_are_not_numbers():
    with pytest.raises(InputError, match="max_new_tokens must be a whole number"):
        PromptForm(model="gpt", max_new_tokens="many")
    assert PromptForm(model="gpt", max_new_tokens="7", temperature="0.5").max_new_tokens == 7
