"""`--objective masked_lm`: BERT's masking (proportions, what is never masked, whole words, reproducibility), the loss,
the pseudo-log-likelihood, and scripts/pretrain.py end to end (smoke, bad input, resume after a kill, 2 processes)."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertModel, pipeline

from hfssl.data.encoder_text import pack_encoder_blocks, train_encoder_tokenizer
from hfssl.training.masked_lm import MaskedLMArguments, masked_token_loss
from hfssl.training.masking import EVAL_EPOCH, MaskingCollator
from hfssl.training.pseudo_log_likelihood import pseudo_log_likelihood
from tests.conftest import REPO, import_script, make_corpus, why_failed, with_flags
from tests.training.test_pretrain import CRASH_AT_STEP, SCRIPT, _env, _weights

pretrain = import_script("pretrain")

TINY_MLM = (
    "--objective masked_lm --vocab_size 300 --hidden_size 32 --num_hidden_layers 2 --num_attention_heads 4 "
    "--max_position_embeddings 64 --block_size 16 --per_device_train_batch_size 4 --report_to none "
    "--learning_rate 3e-3 --warmup_ratio 0.1 --logging_steps 1 --eval_split_fraction 0.1 --pll_samples 2"
).split()


def _args(corpus, out, *extra):
    return with_flags(["--dataset", str(corpus), "--output_dir", str(out), *TINY_MLM], *extra)


@pytest.fixture(scope="module")
def encoder_tokenizer(tiny_encoder_tokenizer):
    return tiny_encoder_tokenizer


@pytest.fixture(scope="module")
def blocks(encoder_tokenizer):
    """About 450 blocks of 32 tokens: enough chosen tokens (~2,000) for 5-sigma bounds of a few points."""
    return pack_encoder_blocks(datasets.Dataset.from_dict({"text": make_corpus(600, seed=1)}), encoder_tokenizer, 32)


@pytest.fixture(scope="module")
def split_words():
    """264 tokens (bytes, specials, 3 merges), too few for whole words: (tokenizer, blocks); most words are several
    tokens."""
    tokenizer = train_encoder_tokenizer(make_corpus(), vocab_size=264)
    docs = datasets.Dataset.from_dict({"text": make_corpus(300, seed=2)})
    return tokenizer, pack_encoder_blocks(docs, tokenizer, 128)  # ~40 words a block: a draw of none is rare


# ---- tokenizer and blocks -------------------------------------------------------------------------------------------
def test_encoder_tokenizer_is_the_same_in_every_process():
    """Each process of a run, and a resumed run, trains or loads the same token ids (WordPiece training is not)."""
    code = (
        "from tests.conftest import make_corpus; from hfssl.data.encoder_text import train_encoder_tokenizer; "
        "print(sorted(train_encoder_tokenizer(make_corpus(), 300).get_vocab().items()))"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO) for _ in range(2)]
    assert runs[0].returncode == 0, why_failed(runs[0])
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout) > 1000


def test_encoder_tokenizer_has_bert_special_tokens(encoder_tokenizer, tmp_path):
    assert [
        encoder_tokenizer.pad_token,
        encoder_tokenizer.unk_token,
        encoder_tokenizer.cls_token,
        encoder_tokenizer.sep_token,
        encoder_tokenizer.mask_token,
    ] == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    ids = encoder_tokenizer("open the file")["input_ids"]
    assert ids[0] == encoder_tokenizer.cls_token_id and ids[-1] == encoder_tokenizer.sep_token_id
    encoder_tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("open the file")["input_ids"] == ids


def test_blocks_are_cls_body_sep_with_word_starts(split_words):
    encoder_tokenizer, blocks = split_words
    row = blocks[0]
    assert len(row["input_ids"]) == len(row["special_tokens_mask"]) == len(row["word_starts"]) == 128
    assert (
        row["input_ids"][0] == encoder_tokenizer.cls_token_id and row["input_ids"][-1] == encoder_tokenizer.sep_token_id
    )
    for token, special in zip(row["input_ids"], row["special_tokens_mask"]):
        assert special == (token in encoder_tokenizer.all_special_ids)
    # a word (a start and the tokens after it) decodes to one piece of the pre-tokenizer: " The", " cat", "."
    end = row["special_tokens_mask"].index(1, 1)  # the first document's part of the block
    words, text = [], encoder_tokenizer.decode(row["input_ids"][1:end])
    for token, start in zip(row["input_ids"][1:end], row["word_starts"][1:end]):
        words.append([token]) if start else words[-1].append(token)
    pieces = [w for w, _ in encoder_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    decoded = [encoder_tokenizer.convert_tokens_to_string(encoder_tokenizer.convert_ids_to_tokens(w)) for w in words]
    assert [p.replace("Ġ", " ") for p in pieces][1:] == decoded[1:]  # the first may be the end of a cut word
    assert 0 in row["word_starts"]
    assert blocks["index"] == list(range(len(blocks)))


# ---- masking -------------------------------------------------------------------------------------------------------
def _mask_all(collator, blocks):
    outcomes = [collator.mask(b["input_ids"], b["special_tokens_mask"], b["word_starts"], b["index"]) for b in blocks]
    original = torch.tensor(blocks["input_ids"])
    return original, torch.stack([o[0] for o in outcomes]), torch.stack([o[1] for o in outcomes])


def _within(share: float, expected: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(share - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


def test_masking_proportions_follow_bert(encoder_tokenizer, blocks):
    """15% of the non-special tokens are chosen; of those 80% become [MASK], 10% a random token, 10% stay (a random
    token equal to the original counts as staying: 0.1 / V of the chosen); binomial bounds at 5 sigma."""
    original, inputs, labels = _mask_all(MaskingCollator(encoder_tokenizer, 0.15, seed=0), blocks)
    maskable = ~torch.isin(original, torch.tensor(encoder_tokenizer.all_special_ids))
    chosen = labels != -100
    n_maskable, n_chosen = int(maskable.sum()), int(chosen.sum())
    assert n_chosen > 1500
    assert _within(n_chosen / n_maskable, 0.15, n_maskable)
    assert torch.equal(labels[chosen], original[chosen])  # labels are the original tokens
    mask_id = encoder_tokenizer.mask_token_id
    as_mask = int((inputs[chosen] == mask_id).sum())
    unchanged = int((inputs[chosen] == original[chosen]).sum())
    randomised = n_chosen - as_mask - unchanged
    v = len(encoder_tokenizer)
    assert _within(as_mask / n_chosen, 0.8, n_chosen)
    assert _within(randomised / n_chosen, 0.1 * (1 - 1 / v), n_chosen)
    assert _within(unchanged / n_chosen, 0.1 + 0.1 / v, n_chosen)
    assert torch.equal(inputs[~chosen], original[~chosen])  # nothing else changes


def test_special_and_pad_tokens_are_never_masked(encoder_tokenizer):
    """Even spelled out in the text, [PAD] / [MASK] / [CLS] / [SEP] are special: never chosen, at any p."""
    docs = datasets.Dataset.from_dict({"text": ["open [PAD] the [MASK] file [SEP] now [CLS] please " * 6] * 8})
    text_blocks = pack_encoder_blocks(docs, encoder_tokenizer, 24)
    original, _, labels = _mask_all(MaskingCollator(encoder_tokenizer, 0.99, seed=1), text_blocks)
    special = torch.isin(original, torch.tensor(encoder_tokenizer.all_special_ids))
    assert int(special.sum()) > 4 * len(text_blocks)  # the spelled-out ones are there
    assert (labels[special] == -100).all() and (labels[~special] != -100).float().mean() > 0.9


def test_whole_word_masking_chooses_whole_words(split_words):
    encoder_tokenizer, blocks = split_words
    original, _, labels = _mask_all(MaskingCollator(encoder_tokenizer, 0.15, seed=2, whole_word_mask=True), blocks)
    chosen, starts = labels != -100, torch.tensor(blocks["word_starts"]).bool()
    special = torch.isin(original, torch.tensor(encoder_tokenizer.all_special_ids))
    words = 0
    for row in range(len(blocks)):
        word = []  # positions of the current word
        for t in range(original.shape[1] + 1):
            if t == original.shape[1] or starts[row, t] or special[row, t]:
                if word:
                    states = {bool(chosen[row, p]) for p in word}
                    assert len(states) == 1, (row, word)  # all of a word's tokens, or none
                    words += states.pop()
                word = [] if t == original.shape[1] or special[row, t] else [t]
            else:
                word.append(t)
    n_words = int((starts & ~special).sum())
    assert _within(words / n_words, 0.15, n_words)
    assert (torch.tensor(blocks["word_starts"]) == 0).float().mean() > 0.3  # most words are several tokens


def test_masks_depend_on_seed_epoch_and_block_only(encoder_tokenizer, blocks):
    collator = MaskingCollator(encoder_tokenizer, 0.15, seed=0)
    batch = [blocks[i] for i in (3, 5)]
    first = collator(batch)
    alone = collator([blocks[5]])  # the same block in another batch
    assert torch.equal(first["labels"][1], alone["labels"][0])
    collator.set_epoch(1)
    assert not torch.equal(collator(batch)["labels"], first["labels"])  # a new pass draws new masks
    collator.set_epoch(0)
    assert torch.equal(collator(batch)["labels"], first["labels"])
    held_out = MaskingCollator(encoder_tokenizer, 0.15, seed=0, epoch=EVAL_EPOCH)
    assert not torch.equal(held_out(batch)["labels"], first["labels"])


# ---- loss and pseudo-log-likelihood --------------------------------------------------------------------------------
def test_loss_counts_masked_positions_only():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 6, 11), torch.full((3, 6), -100)
    labels[0, 1], labels[0, 4], labels[1, 2], labels[2, 0], labels[2, 5] = 3, 7, 1, 9, 0
    loss = masked_token_loss(logits, labels)
    log_p = logits.log_softmax(-1)
    by_block = [-(log_p[0, 1, 3] + log_p[0, 4, 7]) / 2, -log_p[1, 2, 1], -(log_p[2, 0, 9] + log_p[2, 5, 0]) / 2]
    torch.testing.assert_close(loss, torch.stack(by_block).mean())
    scrambled = logits.clone()
    scrambled[labels == -100] = torch.randn_like(scrambled[labels == -100]) * 100  # unmasked positions: anything
    torch.testing.assert_close(masked_token_loss(scrambled, labels), loss)
    # the mean of per-block means: a batch split in two halves gives the same loss (1 process = 2 processes)
    halves = (masked_token_loss(logits[:1], labels[:1]) + 2 * masked_token_loss(logits[1:], labels[1:])) / 3
    torch.testing.assert_close(halves, loss)


def test_pseudo_log_likelihood_matches_one_forward_per_token():
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(
        BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).eval()
    ids, special = torch.tensor([2, 7, 8, 9, 10, 3]), torch.tensor([1, 0, 0, 0, 0, 1])
    pll, n = pseudo_log_likelihood(model, ids, special, mask_token_id=4, batch_size=3)
    expected = 0.0
    for t in range(1, 5):
        hidden = ids.clone()
        hidden[t] = 4
        with torch.no_grad():
            expected += model(input_ids=hidden[None]).logits[0, t].log_softmax(-1)[ids[t]].item()
    assert n == 4 and pll == pytest.approx(expected, abs=1e-5)


# ---- scripts/pretrain.py --------------------------------------------------------------------------------------------
def test_smoke_run_saves_a_fill_mask_model(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    assert pretrain.main(_args(corpus_file, out, "--max_steps", "12", "--eval_steps", "6")) == 0
    printed = capsys.readouterr().out
    assert f"Model saved to {out}" in printed and "Fill-mask on held-out text" in printed
    model = AutoModelForMaskedLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "BertForMaskedLM" and tokenizer.mask_token == "[MASK]"
    filled = pipeline("fill-mask", model=model, tokenizer=tokenizer)("open the [MASK] file")
    assert len(filled) == 5 and all(0 <= f["score"] <= 1 for f in filled)
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert len(losses) == 12 and losses[-1] < losses[0]
    final = metrics["final"]
    assert {"eval_loss", "eval_masked_accuracy", "pseudo_log_likelihood", "pseudo_perplexity"} <= set(final)
    assert 0 <= final["eval_masked_accuracy"] <= 1 and final["pseudo_perplexity"] > 1
    assert metrics["task"] == "fill-mask" and metrics["objective"] == "masked_lm"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mlm_probability", "0"], "--mlm_probability must be in (0, 1)"),
        (["--mlm_probability", "1"], "--mlm_probability must be in (0, 1)"),
        (["--mlm_probability", "1.5"], "--mlm_probability must be in (0, 1)"),
        (["--block_size", "128"], "block_size (128) is longer than max_position_embeddings (64)"),
        (["--num_attention_heads", "5"], "must divide --hidden_size"),
        (["--icl_warmup_steps", "3"], "--icl_warmup_steps applies to --objective causal_lm only"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, corpus_file, capsys, extra, message):
    assert pretrain.main(_args(corpus_file, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_tokenizer_without_a_mask_token_is_refused(tmp_path, corpus_file, capsys, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path / "bpe")
    assert pretrain.main(_args(corpus_file, tmp_path / "o", "--tokenizer_name_or_path", str(tmp_path / "bpe"))) == 2
    err = capsys.readouterr().err
    assert "has no mask token, which masked-LM pretraining needs" in err and "Traceback" not in err


def test_a_decoder_is_refused_by_masked_lm_and_an_encoder_by_causal_lm(
    tmp_path, corpus_file, capsys, gpt2_dir, bert_dir
):
    assert pretrain.main(_args(corpus_file, tmp_path / "o", "--model_name_or_path", str(gpt2_dir))) == 2
    err = capsys.readouterr().err
    assert "is a decoder-only model (model_type 'gpt2')" in err and "Traceback" not in err
    causal = ["--dataset", str(corpus_file), "--output_dir", str(tmp_path / "c"), "--model_name_or_path", str(bert_dir)]
    assert pretrain.main([*causal, "--report_to", "none"]) == 2
    err = capsys.readouterr().err
    assert "is an encoder (model_type 'bert'" in err and "--objective masked_lm" in err and "Traceback" not in err


def test_blocks_longer_than_a_pretrained_encoders_positions_are_refused(tmp_path, corpus_file, capsys, bert_dir):
    extra = ["--model_name_or_path", str(bert_dir), "--block_size", "40"]
    assert pretrain.main(_args(corpus_file, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert "block_size (40) is longer than the 32 positions of" in err and "Traceback" not in err


def test_continues_an_encoder_without_a_masked_lm_head_and_says_so(tmp_path, corpus_file, bert_dir, caplog):
    out = tmp_path / "tapt"
    extra = ["--model_name_or_path", str(bert_dir), "--max_steps", "3", "--learning_rate", "1e-3"]
    with caplog.at_level("WARNING"):
        assert pretrain.main(_args(corpus_file, out, *extra)) == 0
    assert any("holds no weights for cls: initialised fresh" in r.getMessage() for r in caplog.records)
    base, continued = BertModel.from_pretrained(bert_dir), AutoModelForMaskedLM.from_pretrained(out)
    assert continued.config.vocab_size == base.config.vocab_size  # its own tokenizer and vocabulary
    moved = continued.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(moved, base.encoder.layer[0].attention.self.query.weight)  # it trained the encoder


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_final_weights(tmp_path, corpus_file):
    """Masks are a function of (seed, epoch, block): a run killed at step 6 and resumed ends where an uninterrupted
    one does, loss by loss, across an epoch boundary (a tiny corpus: the run passes over it more than once)."""
    common = ["--max_steps", "14", "--save_steps", "4", "--gradient_accumulation_steps", "2", "--dropout", "0.1"]
    common += ["--block_size", "32"]

    def run(out, *extra, crash_at=None):
        launcher = [str(CRASH_AT_STEP), str(crash_at)] if crash_at else []
        return subprocess.run(
            [sys.executable, *launcher, str(SCRIPT), *_args(corpus_file, out, *common, *extra)],
            env=_env(),
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    straight = run(tmp_path / "a")
    assert straight.returncode == 0, why_failed(straight)
    blocks_per_epoch = int(re.search(r"Corpus: (\d+) training blocks", straight.stderr).group(1))
    assert 6 * 8 < blocks_per_epoch < 14 * 8  # 8 blocks a step: the resumed part crosses into epoch 1
    crashed = run(tmp_path / "b", crash_at=6)
    assert crashed.returncode == 17, why_failed(crashed)
    resumed = run(tmp_path / "b", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, why_failed(resumed)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    history = lambda out: json.loads((out / "metrics.json").read_text())["log_history"]  # noqa: E731
    losses = lambda h: [(e["step"], round(e["loss"], 5)) for e in h if "loss" in e]  # noqa: E731
    assert losses(history(tmp_path / "a")) == losses(history(tmp_path / "b"))


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, corpus_file):
    """2 gloo processes x batch 2 give the same losses, held-out metrics and weights as 1 process x batch 4."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"

    def launch(out, launcher, batch):
        args = _args(
            corpus_file, out, "--max_steps", "6", "--eval_steps", "3", "--per_device_train_batch_size", str(batch)
        )
        result = subprocess.run(
            [*launcher, str(SCRIPT), *args], env=_env(), capture_output=True, text=True, cwd=REPO, timeout=600
        )
        assert result.returncode == 0, why_failed(result, 3000)
        return json.loads((out / "metrics.json").read_text())

    one = launch(tmp_path / "one", [accelerate, "launch", "--num_processes", "1", "--cpu"], 4)
    two = launch(tmp_path / "two", [accelerate, "launch", "--multi_gpu", "--num_processes", "2"], 2)
    loss = lambda m: torch.tensor([e["loss"] for e in m["log_history"] if "loss" in e])  # noqa: E731
    torch.testing.assert_close(loss(two), loss(one), rtol=1e-5, atol=1e-5)
    for key in ("eval_loss", "eval_masked_accuracy"):
        assert two["final"][key] == pytest.approx(one["final"][key], rel=1e-5, abs=1e-6)
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)


def test_defaults_are_bert_recipe():
    args = MaskedLMArguments()
    assert (args.mlm_probability, args.whole_word_mask, args.output_dir) == (0.15, False, "outputs/bert-mlm")


def test_every_block_has_a_masked_token(encoder_tokenizer, blocks):
    """At p = 0.005 most draws choose nothing: those blocks get exactly one token instead, so every block adds to the
    loss (token-level and whole-word masking alike)."""
    for whole_words in (False, True):
        _, _, labels = _mask_all(MaskingCollator(encoder_tokenizer, 0.005, seed=3, whole_word_mask=whole_words), blocks)
        per_block = (labels != -100).sum(dim=1)
        assert (per_block >= 1).all()
        if not whole_words:
            assert (per_block == 1).float().mean() > 0.7


def test_bf16_mixed_precision_runs(tmp_path, corpus_file):
    out = tmp_path / "bf16"
    assert pretrain.main(_args(corpus_file, out, "--max_steps", "3", "--mixed_precision", "bf16")) == 0
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["final"]["eval_loss"])
