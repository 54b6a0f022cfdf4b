"""GPT model tests: shapes, save/load, tying, cache, padding, GPT-2 equivalence, Auto/peft/pipeline integration."""

import json
import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    pipeline,
)

from hfssl import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from tests.conftest import tiny_gpt_config, why_failed

B, T = 3, 7


def _ids(batch=B, length=T, vocab=99, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (batch, length), generator=g)  # ids 0/1 are eos/pad


def _causal_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPTForCausalLM(tiny_gpt_config(**overrides)).eval()


def test_config_rejects_bad_heads():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(hidden_size=30, num_attention_heads=4)


def test_shapes():
    config = tiny_gpt_config()
    x = _ids()
    hidden = GPTModel(config)(x, output_hidden_states=True)
    assert hidden.last_hidden_state.shape == (B, T, 32)
    assert len(hidden.hidden_states) == config.num_hidden_layers + 1
    out = GPTForCausalLM(config)(x, labels=x)
    assert out.logits.shape == (B, T, 99)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # at init the loss is close to log(V): the model has learned nothing
    assert abs(out.loss.item() - torch.log(torch.tensor(99.0)).item()) < 0.5
    cls = GPTForSequenceClassification(tiny_gpt_config(num_labels=3))(x, labels=torch.tensor([0, 2, 1]))
    assert cls.logits.shape == (B, 3) and cls.loss.ndim == 0


def test_causal_lm_loss_is_shifted_cross_entropy():
    model, x = _causal_lm(), _ids()
    out = model(x, labels=x)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 99), x[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_logits_are_causal():
    model, x = _causal_lm(), _ids()
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 99  # changing the last token must not change earlier logits
    torch.testing.assert_close(model(x).logits[:, :-1], model(y).logits[:, :-1])


def test_save_load_round_trip_tied_weights_no_duplicates(tmp_path, caplog):
    model, x = _causal_lm(), _ids()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys  # stored once
    with caplog.at_level(logging.WARNING):
        reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is GPTForCausalLM
    assert all(not v for v in info.values()), info  # no missing / unexpected / mismatched keys
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(reloaded.eval()(x).logits, model(x).logits)


def test_untied_embeddings_round_trip(tmp_path):
    model, x = _causal_lm(tie_word_embeddings=False), _ids()
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(x).logits, model(x).logits)


def test_auto_classes_resolve_to_hfssl(tmp_path):
    config = tiny_gpt_config()
    assert isinstance(AutoConfig.for_model("hfssl_gpt"), GPTConfig)
    assert type(AutoModel.from_config(config)) is GPTModel
    assert type(AutoModelForCausalLM.from_config(config)) is GPTForCausalLM
    assert type(AutoModelForSequenceClassification.from_config(config)) is GPTForSequenceClassification


def test_trust_remote_code_without_hfssl(tmp_path):
    """A saved folder loads in a process that never imports hfssl, and gives identical logits."""
    model, x = _causal_lm(), _ids()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_gpt.py").is_file() and (tmp_path / "configuration_gpt.py").is_file()
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", "AutoModelForCausalLM", "AutoModelForSequenceClassification"} <= set(auto_map)
    torch.save({"x": x, "logits": model(x).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert "hfssl" not in sys.modules, "hfssl was imported"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        torch.testing.assert_close(model(expected["x"]).logits, expected["logits"])
        AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True, num_labels=2)
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home")},
    )
    assert result.returncode == 0 and "OK" in result.stdout, why_failed(result, 3000)


def test_matches_gpt2_lm_head_model_with_copied_weights():
    """Same architecture as GPT-2: with GPT-2's weights copied in, the logits agree.

    GPT-2 stores projections as Conv1D (in, out) matrices, ours are nn.Linear (out, in): we transpose.
    GPT-2's "gelu_new" is the tanh GELU written out in Python; ours is the same formula as one fused
    kernel ("gelu_pytorch_tanh"), so results agree to float32 rounding, not bit for bit.
    """
    torch.manual_seed(0)
    g2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=99,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_inner=37,
            n_positions=64,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).eval()
    ours = GPTForCausalLM(tiny_gpt_config()).eval()
    sd = g2.state_dict()
    new = {
        "model.embed_tokens.weight": sd["transformer.wte.weight"],
        "model.embed_positions.weight": sd["transformer.wpe.weight"],
        "model.norm.weight": sd["transformer.ln_f.weight"],
        "model.norm.bias": sd["transformer.ln_f.bias"],
    }
    for i in range(2):
        p, q = f"transformer.h.{i}.", f"model.layers.{i}."
        for a, b in [("ln_1", "ln_1"), ("ln_2", "ln_2")]:
            new[q + b + ".weight"], new[q + b + ".bias"] = sd[p + a + ".weight"], sd[p + a + ".bias"]
        for a, b in [
            ("attn.c_attn", "attn.qkv_proj"),
            ("attn.c_proj", "attn.out_proj"),
            ("mlp.c_fc", "mlp.fc_in"),
            ("mlp.c_proj", "mlp.fc_out"),
        ]:
            new[q + b + ".weight"], new[q + b + ".bias"] = sd[p + a + ".weight"].t(), sd[p + a + ".bias"]
    missing, unexpected = ours.load_state_dict(new, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # lm_head is tied to embed_tokens
    x = _ids(length=20)
    mask = torch.ones_like(x)
    torch.testing.assert_close(ours(x).logits, g2(x).logits, atol=2e-5, rtol=1e-4)
    # and with a cache, one token at a time
    out_ours = ours.generate(x, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=1)
    out_g2 = g2.generate(x, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=1)
    torch.testing.assert_close(out_ours, out_g2)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attention_backends_agree(attn):
    x = _ids()
    reference = _causal_lm(attn_implementation="sdpa")(x).logits
    torch.testing.assert_close(_causal_lm(attn_implementation=attn)(x).logits, reference, atol=1e-5, rtol=1e-4)


def test_greedy_generation_same_with_and_without_cache():
    model, x = _causal_lm(), _ids(length=5)
    kwargs = dict(attention_mask=torch.ones_like(x), max_new_tokens=20, do_sample=False, pad_token_id=1)
    with_cache = model.generate(x, use_cache=True, **kwargs)
    without_cache = model.generate(x, use_cache=False, **kwargs)
    assert with_cache.shape == (B, 25)
    torch.testing.assert_close(with_cache, without_cache)


def test_left_padded_batch_generates_what_each_example_generates_alone():
    model = _causal_lm()
    prompts = [_ids(1, n, seed=n)[0] for n in (3, 6, 9)]
    width = max(len(p) for p in prompts)
    batch = torch.full((3, width), 1)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - len(p) :], mask[i, width - len(p) :] = p, 1
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=1, eos_token_id=None)
    batched = model.generate(batch, attention_mask=mask, **kwargs)[:, width:]
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), **kwargs)
        torch.testing.assert_close(batched[i], alone[0, len(p) :])
    # the forward pass on its own (no generate) also derives positions from the mask
    torch.testing.assert_close(
        model(batch, attention_mask=mask).logits[0, -1], model(prompts[0][None]).logits[0, -1], atol=1e-5, rtol=1e-4
    )


def test_beam_search_and_sampling_run():
    model, x = _causal_lm(), _ids(length=4)
    mask = torch.ones_like(x)
    beams = model.generate(x, attention_mask=mask, num_beams=3, max_new_tokens=6, do_sample=False, pad_token_id=1)
    assert beams.shape[0] == B and beams.shape[1] <= 10
    torch.manual_seed(0)
    sampled = model.generate(x, attention_mask=mask, do_sample=True, top_k=10, max_new_tokens=6, pad_token_id=1)
    assert sampled.shape[0] == B


def test_generation_beyond_context_window_is_a_clear_error():
    model = _causal_lm(max_position_embeddings=16)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(_ids(length=17))


def test_gradient_checkpointing_gives_same_gradients():
    x = _ids()
    grads = []
    for checkpointing in (False, True):
        model = _causal_lm().train()
        if checkpointing:
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        model(x, labels=x).loss.backward()
        grads.append(model.model.layers[0].attn.qkv_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_sequence_classification_uses_last_real_token():
    torch.manual_seed(0)
    model = GPTForSequenceClassification(tiny_gpt_config(num_labels=2)).eval()
    x = _ids(1, 5)
    alone = model(x).logits
    right = torch.cat([x, torch.ones(1, 3, dtype=torch.long)], 1)
    right_mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 3)], 1).long()
    left = torch.cat([torch.ones(1, 3, dtype=torch.long), x], 1)
    left_mask = right_mask.flip(1)
    torch.testing.assert_close(model(right, attention_mask=right_mask).logits, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model(left, attention_mask=left_mask).logits, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model(right).logits, alone, atol=1e-5, rtol=1e-4)  # pad id without a mask


def test_lora_with_default_target_modules_trains_and_saves(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model = _causal_lm().train()
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8))  # no target_modules
    targeted = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert targeted == {"qkv_proj", "out_proj"}
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in peft_model.parameters())
    x = _ids(8, 16)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = peft_model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # adapter only
    peft_model.eval()
    reloaded = PeftModel.from_pretrained(_causal_lm(), tmp_path / "adapter").eval()
    torch.testing.assert_close(reloaded(x).logits, peft_model(x).logits)


def test_text_generation_pipeline(tmp_path, tiny_tokenizer):
    model = _causal_lm(vocab_size=len(tiny_tokenizer))
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path))
    out = generator("The cat", max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"].startswith("The cat")
