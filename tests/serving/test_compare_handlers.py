"""hfssl.serving.compare_handlers: one prompt answered by two causal LMs, side by side. No gradio."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfssl import GPTForCausalLM
from hfssl.run.errors import InputError
from hfssl.serving import ModelStore, answer_side_by_side
from tests.conftest import tiny_gpt_config


def _greedy(folder, prompt: str, new_tokens: int) -> str:
    """The model's greedy continuation of 'prompt\\n', one token at a time, without generate()."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(prompt + "\n", return_tensors="pt")["input_ids"]
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(new_tokens):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()


def test_each_model_answers_as_post_training_asks_it(models_root, tiny_tokenizer):
    torch.manual_seed(5)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer))).save_pretrained(models_root / "tuned")
    tiny_tokenizer.save_pretrained(models_root / "tuned")
    store = ModelStore(models_root)
    first, second = answer_side_by_side(store, "gpt", "tuned", "the cat sat", 6)
    assert first == _greedy(models_root / "gpt", "the cat sat", 6)
    assert second == _greedy(models_root / "tuned", "the cat sat", 6)
    assert first != second  # two different models, told apart


@pytest.mark.parametrize(
    ("first", "second", "prompt", "tokens", "message"),
    [
        ("gpt", "gpt", "  ", 4, "Type a prompt first"),
        ("gpt", "", "hello", 4, "Choose two models"),
        ("gpt", "gpt", "the cat " * 200, 4, "new tokens exceed 'gpt''s window"),
        ("gpt", "../elsewhere", "hello", 4, "not a model under the models root"),
    ],
)
def test_bad_requests_are_clear_errors(models_root, first, second, prompt, tokens, message):
    with pytest.raises(InputError, match=message):
        answer_side_by_side(ModelStore(models_root), first, second, prompt, tokens)
