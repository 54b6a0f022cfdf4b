"""Packed SFT batches whose examples do not attend to each other, under SDPA or eager attention (CPU included).

TRL packs with best-fit decreasing (`packing_strategy="bfd"`): short examples share a row of at most max_length
tokens, and `seq_lengths` records the examples of each row. Its collator then flattens the whole batch into one
padding-free row whose `position_ids` restart at each example, and passes no attention mask: FlashAttention's
variable-length kernel reads the borders from those positions (TRL 1.9 warns that other kernels may mix examples).

transformers (>= 5.4) reads the same borders for SDPA and eager attention too: given `position_ids` and neither an
attention mask nor a cache (TRL's SFT passes `use_cache=False`), `masking_utils.create_causal_mask` makes the causal
mask block-diagonal, one block per example. So TRL's flattened row is exact under SDPA as well; but SDPA computes
every block of its mask, masked or not: one row of all the batch's tokens costs (all tokens)^2 per head and layer.
hfssl keeps TRL's packing and replaces only the flattening (`PackedRowsCollator`): each packed row stays a row of the
batch, so the masked attention costs rows x max_length^2. (FlashAttention reads packed borders from one row only: a
batch of several rows is not kept apart there, and the probe below refuses it.)

A model whose code builds its own mask would still mix examples. `check_packing_keeps_examples_apart` runs two short
sequences packed in one row of a two-row batch and the second alone, before any training, and refuses the run when
their logits differ.
"""

from dataclasses import dataclass
from typing import Any

import torch

from ..run.errors import InputError

PROBE_LENGTHS = (5, 7, 9)  # the probe's random sequences: the first two packed in one row, the third a row of its own
REAL_TOKENS = "num_real_tokens"  # the batch's key for its tokens without padding (TRL would count the rows' width)


@dataclass
class PackedRowsCollator:
    """A batch of TRL's packed rows, each kept as a row: right-padded `input_ids` (B, T) with T the longest row,
    `labels` (B, T) (-100 on padding and on the first token of each example, which its predecessor in the row would
    otherwise be trained to predict), and `position_ids` (B, T) restarting at 0 at each example (and at every padding
    token). No attention mask: transformers derives the block-diagonal causal mask from the positions."""

    pad_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = torch.as_tensor(row["input_ids"], dtype=torch.long)
            input_ids[i, : len(ids)] = ids
            labels[i, : len(ids)] = torch.as_tensor(row["labels"], dtype=torch.long)
            position_ids[i, : len(ids)] = torch.cat([torch.arange(n) for n in row["seq_lengths"]])
        labels[position_ids == 0] = -100
        real_tokens = torch.tensor(sum(len(row["input_ids"]) for row in rows))
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, REAL_TOKENS: real_tokens}


@torch.no_grad()
def packing_leak(model, device=None) -> tuple[float, float]:
    """(leak, deliberate leak) in logits. Leak: the largest |logit difference| of the second of two random sequences
    packed after the first in one row of a two-row batch (`PackedRowsCollator`; the other row is shorter, so padded)
    against that sequence alone; 0 up to rounding when the model keeps packed examples apart. Deliberate leak: the
    same with an all-ones attention mask, which ignores the borders on purpose (the size of a real leak). Seeded, in
    eval mode (no dropout), on `device` (default: the model's); the model's training mode is restored."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.get_text_config().vocab_size
    first, second, other = (torch.randint(vocab, (n,), generator=generator) for n in PROBE_LENGTHS)
    rows = [
        {
            "input_ids": torch.cat([first, second]),
            "labels": torch.cat([first, second]),
            "seq_lengths": PROBE_LENGTHS[:2],
        },
        {"input_ids": other, "labels": other, "seq_lengths": PROBE_LENGTHS[2:]},
    ]
    batch = PackedRowsCollator(pad_token_id=0)(rows)
    device = device or next(model.parameters()).device
    model.to(device)
    inputs = {"input_ids": batch["input_ids"].to(device), "position_ids": batch["position_ids"].to(device)}
    was_training = model.training
    model.eval()
    try:
        alone = model(input_ids=second[None].to(device), use_cache=False).logits[0].float()
        packed = model(**inputs, use_cache=False).logits[0, len(first) : len(first) + len(second)].float()
        mixed = model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]), use_cache=False).logits
    finally:
        model.train(was_training)
    mixed = mixed[0, len(first) : len(first) + len(second)].float()
    return float((packed - alone).abs().max()), float((mixed - alone).abs().max())


def check_packing_keeps_examples_apart(model, name: str, device=None) -> None:
    """Refuse --packing for a model whose attention crosses example borders in a packed row: a leak (`packing_leak`)
    above 1e-4 and above a tenth of the deliberate one (half precision rounds the exact case to about 0.1)."""
    leak, deliberate = packing_leak(model, device)
    if leak > 1e-4 and not leak < 0.1 * deliberate:
        raise InputError(
            f"--packing: {name} lets packed examples attend to each other (a packed sequence's logits differ from the "
            f"same sequence alone by {leak:.2g}, {deliberate:.2g} with the borders ignored on purpose; attention "
            f"{getattr(model.config, '_attn_implementation', None)!r}): its code does not build the causal mask of a "
            "batch of packed rows from the position ids. Drop --packing (batches are then padded)."
        )
