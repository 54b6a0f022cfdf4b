"""Induction-head scores (hfssl.analysis): the formulas on hand-made attention, a GPT whose layer-1 head 0 is an
induction head by construction (weights set by hand), random models at chance, head ablation, bad inputs, and (where
TransformerLens is importable) agreement with its detect_head."""

import math

import pytest
import torch

from hfssl import GPTForCausalLM
from hfssl.analysis import (
    ablate_heads,
    copying_scores,
    head_layout,
    in_context_learning_score,
    induction_scores,
    parse_heads,
    prefix_matching_from_attentions,
    prefix_matching_scores,
    repeated_random_tokens,
    uniform_attention_score,
)
from hfssl.run.errors import InputError
from tests.conftest import tiny_gpt_config, tiny_llama_config

# ---- a 2-layer GPT with an induction head built by hand --------------------------------------------------------
# Residual stream (d = 96): one-hot current token TOK, one-hot position POS, the previous token PREV (written by the
# previous-token head 0.0), the copied token OUT (written by the induction head 1.0), and one balance coordinate that
# holds minus the sum of the others, so every residual vector has mean 0 and LayerNorm only rescales it. Heads 0.1,
# 0.2, 1.1 and 1.2 have all-zero weights: uniform attention, no output. The MLPs are zero.
V, P, NH, HS = 16, 20, 3, 32
D = NH * HS
TOK, POS, PREV, OUT, BAL = 0, V, V + P, 2 * V + P, 3 * V + P


def induction_gpt() -> GPTForCausalLM:
    config = tiny_gpt_config(
        vocab_size=V,
        hidden_size=D,
        num_attention_heads=NH,
        intermediate_size=8,
        max_position_embeddings=P,
        tie_word_embeddings=False,
    )
    model = GPTForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "norm.weight")) else 0.0)
        gpt = model.model
        for i in range(V):
            gpt.embed_tokens.weight[i, TOK + i], gpt.embed_tokens.weight[i, BAL] = 1.0, -1.0
        for k in range(P):
            gpt.embed_positions.weight[k, POS + k], gpt.embed_positions.weight[k, BAL] = 1.0, -1.0
        # layer 0, head 0 (previous token): query at position p is POS_{p-1}, key at k is POS_k; value: the token
        qkv, out = gpt.layers[0].attn.qkv_proj.weight, gpt.layers[0].attn.out_proj.weight
        for j in range(P - 1):
            qkv[j, POS + j + 1] = 10.0
        for j in range(P):
            qkv[D + j, POS + j] = 1.0
        for j in range(V):
            qkv[2 * D + j, TOK + j] = 1.0
            out[PREV + j, j], out[BAL, j] = 0.25, -0.25  # LayerNorm scales layer 0's input by 4
        # layer 1, head 0 (induction): query = current token, key = previous token; value: the token, into OUT
        qkv, out = gpt.layers[1].attn.qkv_proj.weight, gpt.layers[1].attn.out_proj.weight
        for j in range(V):
            qkv[j, TOK + j] = 20.0
            qkv[D + j, PREV + j] = 1.0
            qkv[2 * D + j, TOK + j] = 1.0
            out[OUT + j, j], out[BAL, j] = 0.35, -0.35  # ... and layer 1's by about 2.8
        for i in range(V):
            model.lm_head.weight[i, OUT + i] = 10.0
    return model


def test_scorer_on_hand_made_attention():
    """An exact induction pattern scores 1; uniform causal attention scores mean_i 1 / (q_i + 1)."""
    T, prefix = 5, 1
    S = prefix + 2 * T
    induction = torch.zeros(1, 2, 1, S, S)  # (L, B, nh, S, S)
    for q in range(S):
        induction[..., q, q if q < prefix + T else q - T + 1] = 1.0
    uniform = torch.tril(torch.ones(S, S)) / torch.arange(1, S + 1).unsqueeze(1)
    attention = torch.cat([induction, uniform.expand(1, 2, 1, S, S)], dim=2)  # head 0 induction, head 1 uniform
    scores = prefix_matching_from_attentions(attention, T, prefix)
    assert scores.shape == (1, 2)
    assert scores[0, 0].item() == pytest.approx(1.0)
    expected = sum(1 / (q + 1) for q in range(6, 11)) / 5
    assert scores[0, 1].item() == pytest.approx(expected) == pytest.approx(uniform_attention_score(T, prefix))
    assert prefix_matching_from_attentions(attention[0], T, prefix).shape == (2,)  # one layer: (B, nh, S, S)
    with pytest.raises(InputError, match="S = P \\+ 2T"):
        prefix_matching_from_attentions(attention, T + 1, prefix)


def test_repeated_tokens_are_two_copies_without_special_tokens():
    model = GPTForCausalLM(tiny_gpt_config())
    tokens = repeated_random_tokens(model, seq_len=10, batch_size=3, seed=1)
    ids = tokens.input_ids
    assert ids.shape == (3, 21) and tokens.prefix == 1 and (ids[:, 0] == 0).all()  # config's BOS 0 first
    assert torch.equal(ids[:, 1:11], ids[:, 11:])
    assert all(len(set(row[1:11].tolist())) == 10 for row in ids)  # no token twice in a copy
    assert not torch.isin(ids[:, 1:], torch.tensor([0, 1])).any()  # no BOS/EOS/pad among them
    again = repeated_random_tokens(model, seq_len=10, batch_size=3, seed=1, prepend_bos=False)
    assert torch.equal(again.input_ids, ids[:, 1:]) and again.prefix == 0  # same seed, same draw


def test_hand_built_induction_head_is_found():
    model = induction_gpt()
    scores = induction_scores(model, seq_len=8, batch_size=3, seed=0)
    assert scores.prefix_matching.shape == (2, NH) and scores.copying.shape == (2, NH)
    assert scores.top_heads(1) == [(1, 0)]
    assert scores.prefix_matching[1, 0].item() > 0.99
    assert scores.prefix_matching[0, 0].item() < 0.01  # the previous-token head looks elsewhere
    for layer, head in [(0, 1), (0, 2), (1, 1), (1, 2)]:  # zero weights: uniform attention, i.e. chance
        assert scores.prefix_matching[layer, head].item() == pytest.approx(scores.chance, abs=1e-6)
    assert scores.loss_second_copy < 0.01 < math.log(V) * 0.5 < scores.loss_first_copy
    # direct copying: only head 1.0 writes what the unembedding reads (OUT); 0.0 writes PREV, the others nothing
    assert scores.copying_method == "direct"
    assert scores.copying[1, 0].item() > 10
    others = scores.copying.clone()
    others[1, 0] = 0.0
    assert others.abs().max().item() < 1e-4
    assert model.config._attn_implementation == "sdpa"  # eager for the measurement only


def test_hand_built_induction_head_ablated():
    """Ablation copying: without head 1.0 nothing writes OUT, the logits are all 0 and the model predicts uniformly;
    without 0.0 head 1.0 attends uniformly (a total effect: the induction head needs the previous-token head)."""
    model = induction_gpt()
    scores = induction_scores(model, seq_len=8, batch_size=3, seed=0, copying_method="ablation")
    assert scores.copying[1, 0].item() == pytest.approx(math.log(V) - scores.loss_second_copy, abs=0.01)
    assert scores.copying[0, 0].item() > 0.5
    assert scores.copying[:, 1:].abs().max().item() < 1e-5  # heads with no output copy nothing
    # the copying score of some heads only; several ablations per forward pass change nothing
    tokens = repeated_random_tokens(model, seq_len=8, batch_size=3, seed=0)
    some = copying_scores(model, tokens, [(1, 0), (0, 1)], method="ablation", max_batch_rows=3)
    assert some[1, 0].item() == pytest.approx(scores.copying[1, 0].item(), abs=1e-5)
    assert torch.isnan(some[0, 0]) and some[0, 1].abs().item() < 1e-5
    direct = copying_scores(model, tokens, [(1, 0)])
    assert direct[1, 0].item() > 10 and int(torch.isnan(direct).sum()) == 2 * NH - 1


def _direct_by_modules(model, tokens, layout, norm) -> torch.Tensor:
    """The direct copying score computed another way: each head's write c = out_proj(z with only that head kept) -
    out_proj(0) by calling the module itself, the final norm frozen at the recorded input, the LM head's logits."""
    seen = {}
    hooks = [
        p.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0])) for i, p in enumerate(layout.out_projs)
    ]
    hooks.append(norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])))
    with torch.no_grad():
        model(tokens.input_ids)
        for hook in hooks:
            hook.remove()
        T, P = tokens.seq_len, tokens.prefix
        where = slice(P + T, P + 2 * T - 1)
        x = seen["x"][:, where]
        centred = isinstance(norm, torch.nn.LayerNorm)
        eps = norm.eps if centred else norm.variance_epsilon
        xc = x - x.mean(-1, keepdim=True) if centred else x
        sigma = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        targets = tokens.input_ids[:, P + T + 1 :]
        scores = torch.zeros(layout.num_layers, layout.num_heads)
        for layer, projection in enumerate(layout.out_projs):
            for head in range(layout.num_heads):
                z = torch.zeros_like(seen[layer][:, where])
                span = slice(head * layout.head_dim, (head + 1) * layout.head_dim)
                z[..., span] = seen[layer][:, where][..., span]
                c = projection(z) - projection(torch.zeros_like(z))
                c = c - c.mean(-1, keepdim=True) if centred else c
                logits = torch.nn.functional.linear(norm.weight * c / sigma, model.get_output_embeddings().weight)
                centred_logits = logits - logits.mean(-1, keepdim=True)
                scores[layer, head] = centred_logits.gather(-1, targets.unsqueeze(-1)).mean()
    return scores


def test_direct_copying_matches_a_module_by_module_computation(gpt2_dir):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from hfssl.analysis.induction import _final_norm

    torch.manual_seed(0)
    llama = LlamaForCausalLM(tiny_llama_config())
    gpt2 = AutoModelForCausalLM.from_pretrained(gpt2_dir)  # Conv1D projections
    for model in (GPTForCausalLM(tiny_gpt_config()), llama, gpt2):
        model.eval()
        tokens = repeated_random_tokens(model, seq_len=10, batch_size=2)
        ours = copying_scores(model, tokens)
        other = _direct_by_modules(model, tokens, head_layout(model), _final_norm(model))
        assert torch.allclose(ours, other, atol=1e-4), (type(model).__name__, ours, other)
        assert ours.abs().max().item() > 1e-4  # not trivially zero


def test_direct_copying_refuses_a_final_norm_it_cannot_freeze():
    model = GPTForCausalLM(tiny_gpt_config()).eval()
    norm = model.model.norm
    norm.forward = lambda x: 2 * x  # type: ignore[method-assign]  # not a LayerNorm any more
    tokens = repeated_random_tokens(model, seq_len=5, batch_size=1)
    with pytest.raises(InputError, match="--copying_method ablation"):
        copying_scores(model, tokens)
    assert not copying_scores(model, tokens, method="ablation").isnan().any()


def test_random_models_score_near_chance():
    """Random GPT and llama: every head's prefix-matching score within a few percent of uniform attention."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(tiny_llama_config())
    for model in (GPTForCausalLM(tiny_gpt_config()), llama):
        tokens = repeated_random_tokens(model, seq_len=20, batch_size=2)
        scores = prefix_matching_scores(model, tokens)
        chance = uniform_attention_score(20, tokens.prefix)
        assert scores.shape == (2, 4)
        assert (scores - chance).abs().max().item() < 0.1 * chance, (scores, chance)


def test_ablating_heads_changes_the_output_and_no_heads_do_not():
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config()).eval()
    ids = torch.randint(2, 99, (2, 12))
    with torch.no_grad():
        clean = model(ids).logits
        with ablate_heads(model, []):
            same = model(ids).logits
        with ablate_heads(model, [(0, 1), (1, 3)]):
            ablated = model(ids).logits
        after = model(ids).logits
    assert torch.equal(clean, same) and torch.equal(clean, after)  # no heads: no hook; hooks gone afterwards
    assert (clean - ablated).abs().max().item() > 1e-3
    layout = head_layout(model)
    assert (layout.num_layers, layout.num_heads, layout.head_dim) == (2, 4, 8)
    assert layout.names == ("model.layers.0.attn.out_proj", "model.layers.1.attn.out_proj")


def test_ablation_zeroes_the_heads_slice_of_the_output_projection_input():
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config()).eval()
    seen = []
    model.model.layers[1].attn.out_proj.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad(), ablate_heads(model, [(1, 2)]):
        model(torch.randint(2, 99, (1, 6)))
    z = seen[0]  # (B, T, nh * hs): head 2 is [16, 24)
    assert z[..., 16:24].abs().max().item() == 0 and z[..., :16].abs().min().item() > 0


def test_in_context_learning_score_by_hand():
    """The score is mean(loss at late) - mean(loss at early); the interval brackets it; a copying model learns in
    context (the second half of a repeated sequence is predicted better than its first half)."""
    model = induction_gpt()
    tokens = repeated_random_tokens(model, seq_len=8, batch_size=6, seed=3, prepend_bos=False).input_ids  # (6, 16)
    score = in_context_learning_score(model, tokens, early=4, late=14, num_bootstrap=200)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(tokens).logits, dim=-1)
    loss = lambda p: -logprobs[torch.arange(6), p - 2, tokens[:, p - 1]]  # noqa: E731  (1-based position p)
    assert score.score == pytest.approx((loss(14) - loss(4)).mean().item(), abs=1e-5)
    assert score.low <= score.score <= score.high and score.num_sequences == 6
    assert score.score < -1.0  # token 14 is in the second copy: predicted; token 4 is not
    as_list = in_context_learning_score(model, list(tokens), early=4, late=14, num_bootstrap=200)
    assert as_list == score


def test_transformers_gpt2_heads_are_found():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    ).eval()
    layout = head_layout(model)
    assert layout.names == ("transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_proj")  # not mlp.c_proj
    scores = induction_scores(model, seq_len=10, batch_size=2, copying=2)
    assert scores.prefix_matching.shape == (2, 4)
    assert int((~torch.isnan(scores.copying)).sum()) == 2  # only the top 2 heads by prefix matching


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: repeated_random_tokens(m, seq_len=40), "longer than the model's context window"),
        (lambda m: repeated_random_tokens(m, seq_len=1), "seq_len >= 2"),
        (lambda m: ablate_heads(m, [(2, 0)]).__enter__(), "head 2.0 does not exist"),
        (lambda m: ablate_heads(m, [(0, 4)]).__enter__(), "head 0.4 does not exist"),
        (lambda m: ablate_heads(m, [(1, 1), (1, 1)]).__enter__(), "listed twice"),
        (lambda m: in_context_learning_score(m, torch.ones(2, 70, dtype=torch.long), late=65), "context window"),
        (lambda m: in_context_learning_score(m, torch.ones(2, 30, dtype=torch.long), early=5, late=40), "shorter"),
        (lambda m: in_context_learning_score(m, torch.ones(2, 30, dtype=torch.long), early=1, late=20), "2 <= early"),
    ],
)
def test_bad_inputs_are_one_clear_error(call, message):
    model = GPTForCausalLM(tiny_gpt_config())  # context window 64
    with pytest.raises(InputError, match=message):
        call(model)


def test_parse_heads():
    assert parse_heads("0.3, 1.0,") == [(0, 3), (1, 0)]
    assert parse_heads("") == []
    for bad, message in [("0.3,0.3", "twice"), ("1-2", "layer.head"), ("a.b", "layer.head"), ("-1.0", "layer.head")]:
        with pytest.raises(InputError, match=message):
            parse_heads(bad)


def test_a_model_that_returns_no_attentions_is_refused():
    """A GPT whose forward drops output_attentions (as an hfssl GPT file from before this feature did)."""
    model = GPTForCausalLM(tiny_gpt_config())
    forward = model.forward
    model.forward = lambda *args, output_attentions=None, **kwargs: forward(*args, **kwargs)  # type: ignore
    with pytest.raises(InputError, match="returned no attention probabilities"):
        prefix_matching_scores(model, repeated_random_tokens(model, seq_len=5, batch_size=1))
    assert model.config._attn_implementation == "sdpa"  # restored after the error too


def test_agrees_with_transformer_lens_detect_head(gpt2_dir):
    """TransformerLens's detect_head(..., "induction_head") (error_measure "mul") on one sequence divides by all S
    rows where ours divides by the T rows of the second copy: theirs * S / T == ours, head by head."""
    pytest.importorskip("transformer_lens")
    from transformer_lens.head_detector import detect_head
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    tokens = repeated_random_tokens(model, tokenizer, seq_len=12, batch_size=1, seed=5)
    ours = prefix_matching_scores(model, tokens)
    # the model and tokenizer are handed over: nothing is fetched
    bridge = TransformerBridge.boot_transformers(str(gpt2_dir), hf_model=model, tokenizer=tokenizer)
    # detect_head tokenizes a string; random token ids do not survive decoding and re-encoding, so hand it ours (it
    # builds its pattern from the token ids themselves: where each token's earlier duplicate is, shifted by one)
    bridge.to_tokens = lambda *args, **kwargs: tokens.input_ids
    theirs = detect_head(bridge, "ignored", "induction_head")  # (L, nh)
    S = tokens.input_ids.shape[1]
    assert torch.allclose(theirs.float() * S / 12, ours, atol=1e-5), (theirs * S / 12, ours)


def test_gpt_returns_attention_probabilities_in_eager_mode_only():
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config()).eval()
    ids = torch.randint(2, 99, (2, 9))
    with torch.no_grad():
        sdpa = model(ids)
        assert sdpa.attentions is None
        with pytest.raises(ValueError, match="eager"):  # SDPA never forms them: say so instead of returning none
            model(ids, output_attentions=True)
        model.set_attn_implementation("eager")
        eager = model(ids, output_attentions=True)
    assert torch.allclose(eager.logits, sdpa.logits, atol=1e-5)
    assert len(eager.attentions) == 2 and eager.attentions[0].shape == (2, 4, 9, 9)
    for attention in eager.attentions:
        assert torch.allclose(attention.sum(-1), torch.ones(2, 4, 9), atol=1e-5)
        assert attention.triu(diagonal=1).abs().max().item() == 0  # causal
