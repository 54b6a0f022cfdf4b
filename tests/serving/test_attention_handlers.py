"""The attention tab's handlers (hfssl.serving.attention_handlers): a head's attention on a prompt is the model's own
eager attention for that head, drawn as a token x token table; the induction ranking is `induction_scores`' order;
bad input is an InputError. No gradio needed."""

import re

import pytest
import torch

from hfssl.analysis import induction_scores
from hfssl.run.errors import InputError
from hfssl.serving import ModelStore
from hfssl.serving.attention_handlers import (
    MAX_ATTENTION_TOKENS,
    attention_html,
    attention_pattern,
    induction_ranking,
    show_attention,
)

PROMPT = "a good film. a dull film. a good film."


def test_the_pattern_is_the_heads_own_attention(models_root):
    store = ModelStore(models_root)
    model, tokenizer = store.causal_lm("gpt")
    pattern, tokens = attention_pattern(store, "gpt", PROMPT, 1, 2)
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert len(tokens) == len(ids) == pattern.shape[0] == pattern.shape[1]
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([ids]), output_attentions=True).attentions[1][0, 2]
    finally:
        model.set_attn_implementation("sdpa")
    torch.testing.assert_close(pattern, expected)
    torch.testing.assert_close(pattern.sum(dim=1), torch.ones(len(ids)))
    assert torch.triu(pattern, diagonal=1).abs().max() == 0  # causal: nothing attends to the future
    assert model.config._attn_implementation == "sdpa"  # the store's model is left as it was


def test_the_picture_has_a_row_per_token_and_a_cell_per_pair(models_root):
    pattern = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    page = attention_html(pattern, ["a<", "b"])
    assert page.count("<tr>") == 3  # the key tokens, then one row per query token
    assert "a&lt;" in page and ">a<<" not in page  # tokens are escaped
    weights = [float(w) for w in re.findall(r"rgba\(30,70,160,([0-9.]+)\)", page)]
    assert weights == [1.0, 0.0, 0.25, 0.75]
    html, caption = show_attention(ModelStore(models_root), "gpt", PROMPT, 0, 0)
    assert (
        "Head 0.0" in caption
        and html.count("<tr>") == len(attention_pattern(ModelStore(models_root), "gpt", PROMPT, 0, 0)[1]) + 1
    )


def test_the_ranking_is_the_scans_order(models_root):
    store = ModelStore(models_root)
    table = induction_ranking(store, "gpt", top_k=5)
    model, tokenizer = store.causal_lm("gpt")
    scores = induction_scores(model, tokenizer, seq_len=25, batch_size=2, copying=5)
    assert list(table["head"]) == [f"{layer}.{head}" for layer, head in scores.top_heads(5)]
    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    prefix = list(table["prefix matching"])
    assert prefix == sorted(prefix, reverse=True)
    assert table["copying (logit)"].notna().all()
    assert table["chance"].iloc[0] == pytest.approx(scores.chance, abs=1e-3)


@pytest.mark.parametrize(
    ("prompt", "layer", "head", "message"),
    [
        (PROMPT, 2, 0, "does not exist"),
        (PROMPT, 0, 4, "does not exist"),
        ("", 0, 0, "Write a prompt"),
        ("film " * (MAX_ATTENTION_TOKENS + 1), 0, 0, "at most"),
    ],
)
def test_bad_input_is_an_input_error(models_root, prompt, layer, head, message):
    with pytest.raises(InputError, match=message):
        attention_pattern(ModelStore(models_root), "gpt", prompt, layer, head)
