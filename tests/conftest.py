"""Shared fixtures: tiny models, a tiny corpus and tokenizer, and a clean Accelerate state per test."""

import os
import random
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import ViTImageProcessor

import hfssl  # noqa: F401  (registers the Auto classes)
from hfssl import GPTForCausalLM, SimCLRConfig, SimCLRModel
from tests import deprecation_policy

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def import_script(name: str):
    """Import scripts/<name>.py as a module, so tests call its main(argv) in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"hfssl_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the tiny models of the command-line tests, as flags: a GPT of hidden 32 x 2 layers over a 300-token BPE, and
# 3-way episodes of 12 x 12 glyphs for a two-stage ResNet of width 8
TINY_LM_FLAGS = (
    "--vocab_size 300 --hidden_size 32 --num_hidden_layers 2 --num_attention_heads 4 --max_position_embeddings 64 "
    "--block_size 16 --per_device_train_batch_size 4 --report_to none --icl_warmup_steps 0"
).split()
TINY_META_FLAGS = (
    "--image_size 12 --resnet_widths 8 8 --ways 3 --shots 1 --queries 2 --meta_batch_size 2 --test_shots 1 2 "
    "--class_split 0.6 0.2 0.2"
).split()


def with_flags(argv: list[str], *extra: str) -> list[str]:
    """argv with the flags of `extra` (each `--flag` and the values after it) replacing the same flags in argv, or
    appended: a command line gives each flag once (a repeated flag is an error), so a test changes a base, never
    repeats. `--max-steps` and `--max_steps` are one flag."""

    def groups(tokens) -> list[list[str]]:
        out: list[list[str]] = []
        for token in map(str, tokens):
            if token.startswith("--") or not out:
                out.append([token])
            else:
                out[-1].append(token)
        return out

    def key(group: list[str]) -> str:
        return group[0].split("=", 1)[0].replace("-", "_")

    changes = {key(g): g for g in groups(extra)}
    merged = [changes.pop(key(g), g) for g in groups(argv)]
    return [token for group in [*merged, *changes.values()] for token in group]


def why_failed(result, tail: int = 2000) -> str:
    """What a failed command printed, for an assertion message: every `error:` line (of any rank: one rank's line
    is easily buried under the tracebacks of the others that it brought down), then the end of its stderr."""
    errors = [line for line in result.stderr.splitlines() if re.match(r"(\[rank\d+\]: )?error:", line)]
    return "\n".join([*errors, "...", result.stderr[-tail:]])


_SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the teacher", "a small bird", "the river", "our king"]
_VERBS = ["sees", "likes", "follows", "remembers", "finds", "watches", "calls", "forgets"]
_OBJECTS = ["the house", "a letter", "the garden", "the moon", "a song", "the road", "an apple", "the ship"]


def make_corpus(num_docs: int = 60, seed: int = 0) -> list[str]:
    """Small English-like documents of a few sentences each (deterministic)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(num_docs):
        sentences = [
            f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
            for _ in range(rng.randint(2, 5))
        ]
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="session")
def corpus_docs() -> list[str]:
    return make_corpus()


@pytest.fixture
def corpus_file(tmp_path, corpus_docs) -> Path:
    """A .txt corpus with one document per paragraph."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(corpus_docs) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(corpus_docs):
    from hfssl.data.text import train_bpe_tokenizer

    return train_bpe_tokenizer(corpus_docs, vocab_size=300)


def tiny_gpt_config(**overrides):
    from hfssl import GPTConfig

    kwargs = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


def tiny_llama_config(**overrides):
    """transformers' Llama at test size: RoPE, RMSNorm and grouped-query attention (4 heads sharing 2 key/values)."""
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=40,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def pytest_configure(config):
    deprecation_policy.install()


@pytest.fixture(autouse=True)
def _every_deprecation_is_seen():
    deprecation_policy.forget_logged_once()


@pytest.fixture(autouse=True)
def _reset_accelerate_state():
    """Accelerate keeps process-wide singletons; give every test a fresh one."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# ---- tiny saved models and a labelled text set (adaptation, hub, prompting tests) ----
@pytest.fixture
def gpt_dir(tmp_path, tiny_tokenizer):
    path = tmp_path / "gpt"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer))).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def gpt2_dir(tmp_path, tiny_tokenizer):
    """A tiny transformers-native GPT-2 with the tiny tokenizer, standing in for any Hub causal LM."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path / "gpt2"
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tiny_tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder_tokenizer(corpus_docs):
    from hfssl.data.encoder_text import train_encoder_tokenizer

    return train_encoder_tokenizer(corpus_docs, vocab_size=300)


@pytest.fixture
def bert_dir(tmp_path, tiny_encoder_tokenizer):
    """A tiny BertModel (an encoder without a masked-LM head, as MiniLM is), 32 positions, with a byte-level BPE
    tokenizer with BERT's special tokens."""
    from transformers import BertConfig, BertModel

    path = tmp_path / "bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_encoder_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        pad_token_id=tiny_encoder_tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(path)
    tiny_encoder_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_gguf(tmp_path, tiny_tokenizer) -> Path:
    """A tiny llama-architecture GGUF checkpoint (tests/helpers/tiny_gguf.py), alone in its folder."""
    pytest.importorskip("gguf", reason="GGUF checkpoints need the gguf package: pip install -e '.[dev]'")
    from tests.helpers.tiny_gguf import write_tiny_llama_gguf

    folder = tmp_path / "gguf"
    folder.mkdir()
    return write_tiny_llama_gguf(folder / "tiny-llama.F32.gguf", tiny_tokenizer)


@pytest.fixture
def simclr_dir(tmp_path):
    path = tmp_path / "simclr"
    torch.manual_seed(0)
    SimCLRModel(
        SimCLRConfig(image_size=8, resnet_layers=[1, 1], resnet_widths=[8, 8], projection_dims=[8])
    ).save_pretrained(path)
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.3] * 3, image_std=[0.4] * 3).save_pretrained(path)
    return path


@pytest.fixture
def sentiment_file(tmp_path):
    """`label text` lines: 24 positive and 24 negative sentences."""
    good = ["a fine good film", "good and fine", "the king likes the song", "good good good"]
    bad = ["a dull bad film", "bad and dull", "the king forgets the song", "bad bad bad"]
    lines = [f"1 {t} {i}" for i in range(6) for t in good] + [f"0 {t} {i}" for i in range(6) for t in bad]
    path = tmp_path / "sentiment.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def empty_hfssl_cache(tmp_path, monkeypatch):
    """An empty hfssl cache: no fetched reference models (a model store lists them too)."""
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "hfssl-cache"))


@pytest.fixture
def models_root(tmp_path, tiny_tokenizer):
    """A models root with a tiny saved GPT (`tests/serving/models_root.py`), for the serving and demo tests."""
    from tests.serving.models_root import make_models_root

    return make_models_root(tmp_path, tiny_tokenizer)
