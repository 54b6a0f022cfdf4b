"""Packed SFT batches (hfssl.posttrain.packing): each packed example has the loss it has in a padded batch, under SDPA
and eager attention, on hfssl's GPT, transformers' Llama and GPT-2; a model that lets packed examples mix is refused."""

import datasets
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from hfssl.run.errors import InputError
from tests.conftest import tiny_llama_config

pytest.importorskip("trl")

from hfssl.posttrain.arguments import PostTrainArguments
from hfssl.posttrain.packing import PackedRowsCollator, check_packing_keeps_examples_apart, packing_leak
from hfssl.posttrain.run import build_trainer, run_post_training

ROWS = {  # lengths from 4 to 30 tokens: padding wastes much of a batch, packing fills rows of 64
    "prompt": ["the cat", "a dog ran far away from the park and the cat", "birds", "the sun rose", "a mat", "dogs"],
    "completion": [
        "sat on the mat in the sun all day long, then ran.",
        "yes.",
        "sing at dawn.",
        "early over the park and the birds sang on and on.",
        "is red.",
        "ran.",
    ],
}


@pytest.fixture(params=["hfssl-gpt", "llama", "gpt2", "llama-eager"])
def causal_lm(request, lm_dir, gpt2_dir, tmp_path, tiny_tokenizer):
    if request.param == "hfssl-gpt":
        return lm_dir
    if request.param == "gpt2":
        return gpt2_dir
    torch.manual_seed(0)
    attention = "eager" if request.param == "llama-eager" else "sdpa"
    config = tiny_llama_config(
        vocab_size=len(tiny_tokenizer), max_position_embeddings=128, attn_implementation=attention
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    tiny_tokenizer.save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


def _first_batch(folder, tmp_path, packing: bool):
    args = PostTrainArguments(
        model_name_or_path=str(folder), output_dir=str(tmp_path / "o"), max_steps=1, packing=packing, max_length=64
    )
    args.per_device_train_batch_size = len(ROWS["prompt"])  # every row in the one batch
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    trainer = build_trainer(args, model, tokenizer, datasets.Dataset.from_dict(ROWS), "rows", 64, None)
    assert isinstance(trainer.data_collator, PackedRowsCollator) == packing
    return model, next(iter(trainer.get_train_dataloader())), trainer


def _example_losses(model, batch) -> dict[tuple, float]:
    """{an example's tokens: its mean next-token loss on its learned tokens}, each example found by its positions
    (packed: they restart at 0) or its attention mask (padded)."""
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
        logits = model(**inputs, use_cache=False).logits
    token_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], reduction="none")
    losses = {}
    for row in range(len(batch["input_ids"])):
        if "position_ids" in batch:
            starts = (batch["position_ids"][row] == 0).nonzero()[:, 0].tolist()
            ends = [*starts[1:], batch["input_ids"].shape[1]]
        else:
            starts, ends = [0], [int(batch["attention_mask"][row].sum())]
        for start, end in zip(starts, ends, strict=True):
            learned = batch["labels"][row, start + 1 : end] != -100
            if learned.any():  # padding (its own segments) learns nothing
                key = tuple(batch["input_ids"][row, start:end].tolist())
                losses[key] = float(token_loss[row, start : end - 1][learned].mean())
    return losses


def test_a_packed_example_has_the_loss_it_has_in_a_padded_batch(causal_lm, tmp_path):
    """Per-example loss, packed vs padded, equal within 1e-4; and the same packed rows with an all-ones attention mask
    (no borders) differ: the comparison would catch examples attending to each other."""
    model, padded, _ = _first_batch(causal_lm, tmp_path, packing=False)
    _, packed, _ = _first_batch(causal_lm, tmp_path, packing=True)
    assert "attention_mask" not in packed and 1 < packed["input_ids"].shape[0] < len(ROWS["prompt"])  # shared rows
    assert int(packed["num_real_tokens"]) == int(padded["attention_mask"].sum())
    padded_losses, packed_losses = _example_losses(model, padded), _example_losses(model, packed)
    assert packed_losses.keys() == padded_losses.keys() and len(packed_losses) == len(ROWS["prompt"])
    for key, loss in padded_losses.items():
        assert packed_losses[key] == pytest.approx(loss, abs=1e-4)
    mixed = _example_losses(model, {**packed, "attention_mask": torch.ones_like(packed["input_ids"])})
    assert max(abs(mixed[key] - loss) for key, loss in padded_losses.items()) > 1e-3
    leak, deliberate = packing_leak(model)
    assert leak < 1e-5 and deliberate > 1e-3


def test_the_logged_token_count_of_packed_rows_is_their_real_tokens(lm_dir, tmp_path):
    """TRL counts a batch without attention mask by its width (padding included, one row's worth); hfssl's trainer
    counts the packed rows' real tokens."""
    _, packed, trainer = _first_batch(lm_dir, tmp_path, packing=True)
    real = int(packed["num_real_tokens"])
    assert real != packed["input_ids"].shape[1]
    trainer.model.train()
    trainer._total_train_tokens = 0
    trainer.compute_loss(trainer.model, dict(packed))
    assert trainer._total_train_tokens == real and trainer._metrics["train"]["num_tokens"] == [real]


def test_trl_flattened_packing_is_exact_under_sdpa_too(lm_dir, tmp_path):
    """TRL's own padding-free layout (the whole batch in one row) is kept apart by transformers' mask as well: hfssl's
    rows differ in cost (rows x max_length^2 attention, not all tokens^2), not in the losses."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, padded, _ = _first_batch(lm_dir, tmp_path, packing=False)
    _, _, trainer = _first_batch(lm_dir, tmp_path, packing=True)
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    flattened = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    assert flattened["input_ids"].shape[0] == 1
    flat_losses, padded_losses = _example_losses(model, flattened), _example_losses(model, padded)
    assert flat_losses.keys() == padded_losses.keys()
    for key, loss in padded_losses.items():
        assert flat_losses[key] == pytest.approx(loss, abs=1e-4)


def test_packing_is_refused_for_a_model_that_lets_examples_mix(lm_dir, monkeypatch):
    """A model whose mask ignores the position ids (here hfssl's GPT with its mask builder told none) is refused before
    training, with the size of the leak."""
    from hfssl.models.gpt import modeling_gpt

    real = modeling_gpt.create_causal_mask
    monkeypatch.setattr(modeling_gpt, "create_causal_mask", lambda **kw: real(**{**kw, "position_ids": None}))
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    with pytest.raises(InputError, match=r"--packing: gpt lets packed examples attend to each other .*Drop --packing"):
        check_packing_keeps_examples_apart(model, "gpt")


def test_a_packed_sft_run_trains_and_records_packing(lm_dir, tmp_path):
    args = PostTrainArguments(
        model_name_or_path=str(lm_dir),
        output_dir=str(tmp_path / "o"),
        max_steps=2,
        packing=True,
        examples_per_task=12,
        max_eval_examples=4,
        logging_steps=1,
        max_length=128,
    )
    result = run_post_training(args)
    assert result.global_step == 2 and result.args["packing"] is True
    assert result.first_loss is not None and result.first_loss > 0
    assert (tmp_path / "o" / "metrics.json").is_file()
