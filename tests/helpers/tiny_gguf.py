"""A tiny llama-architecture GGUF checkpoint written with the `gguf` package: the GGUF paths of every entry point are
tested on it in seconds (the real SmolLM2 GGUF is used by the slow tests when it has been fetched).

The model is llama with hidden 32, 2 layers, 4 heads (2 key/value heads), float32 tensors named as llama.cpp names
them, and a byte-level BPE tokenizer (GPT-2 style) with a ChatML chat template.
"""

from pathlib import Path

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 32, 2, 4, 2, 64, 64


def write_tiny_llama_gguf(
    path: Path, tokenizer, architecture: str = "llama", seed: int = 0, special_token_ids: dict | None = None
) -> Path:
    """Write the tiny model with `tokenizer`'s vocabulary (a PreTrainedTokenizerFast with a BPE model) to `path`.

    `special_token_ids` ({"bos": 5, ...}; keys bos, eos, unk, pad) overrides the ids the file declares (by default
    the tokenizer's, with eos doubling as unknown, as in SmolLM2's GGUF)."""
    import json

    import gguf

    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    special = set(tokenizer.all_special_tokens)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control token, 1: normal
    writer.add_token_merges(merges)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.eos_token_id}
    ids = {"pad": tokenizer.pad_token_id, **ids, **(special_token_ids or {})}
    writer.add_bos_token_id(ids["bos"])
    writer.add_eos_token_id(ids["eos"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_unk_token_id(ids["unk"])
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)
    normal = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)  # noqa: E731
    head_dim = HIDDEN // HEADS
    writer.add_tensor("token_embd.weight", normal(len(tokens), HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", normal(HIDDEN, HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_k.weight", normal(KV_HEADS * head_dim, HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_v.weight", normal(KV_HEADS * head_dim, HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_output.weight", normal(HIDDEN, HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", normal(FFN, HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", normal(FFN, HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", normal(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
