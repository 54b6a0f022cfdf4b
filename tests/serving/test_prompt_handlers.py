"""hfssl.serving's few-shot handlers fed one PromptForm: scoring, streaming, the prompt and its token count, the
presets, and bad input. No gradio needed."""

import pytest

from hfssl.run.errors import InputError
from hfssl.serving import EXAMPLES, ModelStore, Preset, PromptForm, generate, preset, prompt_handlers, score_labels
from hfssl.serving.prompt_form import escape, unescape
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
    """`/score` takes every field but the generation ones and `/generate` all of them, in the order the page's API
    has always taken them (gradio_client callers pass them positionally)."""
    scoring = ["model", "preset", "instruction", "input_prefix", "output_prefix", "delimiter", "labels"]
    scoring += ["demonstrations", "query", "chat"]
    assert PromptForm.field_names(generation=False) == scoring
    assert PromptForm.field_names() == scoring[:-1] + ["max_new_tokens", "temperature", "chat"]
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
