"""Batched, prefix-cached log-likelihoods equal a plain one-pair-at-a-time reference."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hfssl import GPTForCausalLM
from hfssl.adapt.loglikelihood import encode_pair, loglikelihoods
from tests.conftest import tiny_gpt_config


def reference_loglikelihood(model, context_ids, continuation_ids):
    """One pair, no batching, no cache: sum_i log p(cont_i | everything before it)."""
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    n = len(context_ids)
    rows = log_probs[n - 1 : n - 1 + len(continuation_ids)]
    target = torch.tensor(continuation_ids)
    return rows.gather(1, target[:, None]).sum().item(), bool((rows.argmax(-1) == target).all())


def _models(vocab_size):
    torch.manual_seed(0)
    ours = GPTForCausalLM(tiny_gpt_config(vocab_size=vocab_size, max_position_embeddings=128)).eval()
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=1,
        )
    ).eval()
    return {"hfssl_gpt": ours, "gpt2": gpt2}


def _groups():
    demos = "Review: the cat likes the song\nSentiment: positive\n\nReview: a dog forgets the road\nSentiment: negative"
    queries = ["the old man finds a letter", "my sister", "the river calls the ship and the moon"]
    contexts = [f"{demos}\n\nReview: {q}\nSentiment:" for q in queries]
    shared = [(c, f" {w}") for c in contexts for w in ("negative", "positive", "neutral words")]
    single = [("The cat sees ", "the house.")]  # trailing space moves to the continuation
    empty = [("", "the moon"), ("", "a song.")]  # empty context: conditioned on the prefix token
    return [shared, single, empty]


@pytest.mark.parametrize("name", ["hfssl_gpt", "gpt2"])
@pytest.mark.parametrize("use_prefix_cache,batch_size", [(True, 4), (False, 3), (True, 1)])
def test_matches_unbatched_uncached_reference(tiny_tokenizer, name, use_prefix_cache, batch_size):
    model = _models(len(tiny_tokenizer))[name]
    groups = _groups()
    got = loglikelihoods(model, tiny_tokenizer, groups, batch_size=batch_size, use_prefix_cache=use_prefix_cache)
    assert [len(g) for g in got] == [len(g) for g in groups]
    for group, scores in zip(groups, got):
        for (ctx, cont), (ll, greedy) in zip(group, scores):
            ref_ll, ref_greedy = reference_loglikelihood(model, *encode_pair(tiny_tokenizer, ctx, cont))
            assert ll == pytest.approx(ref_ll, abs=1e-4)
            assert greedy == ref_greedy
    assert len({round(ll, 3) for ll, _ in got[0]}) > 3  # the scores really differ between options


def test_encode_pair_splits_like_lm_evaluation_harness(tiny_tokenizer):
    ctx, cont = encode_pair(tiny_tokenizer, "The cat sees ", "the house.")
    whole = tiny_tokenizer("The cat sees the house.")["input_ids"]
    assert ctx + cont == whole
    assert ctx == tiny_tokenizer("The cat sees")["input_ids"]
    assert encode_pair(tiny_tokenizer, "", "the moon")[0] == [tiny_tokenizer.eos_token_id]


def test_clear_errors(tiny_tokenizer):
    model = _models(len(tiny_tokenizer))["hfssl_gpt"]
    with pytest.raises(ValueError, match="encodes to no tokens"):
        loglikelihoods(model, tiny_tokenizer, [[("Review: good", "")]])
    with pytest.raises(ValueError, match="longer than the model's context window"):
        loglikelihoods(model, tiny_tokenizer, [[("the cat sees the house. " * 40, " yes")]])
