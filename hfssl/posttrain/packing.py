"""Packed SFT batches whose examples do not attend to each other, under SDPA or eager attention (CPU included).

TRL packs with best-fit decreasing (`packing_strategy="bfd"`): short examples share a row of at most max_length
tokens, and `seq_lengths` records the examples of each row. Its collator then flattens the whole batch into one
padding-free row whose `position_ids` restart at each example and passes no attention mask: FlashAttention reads the
borders from those positions, and TRL's docs warn that other attention kernels let examples attend across them.

transformers (>= 5.4) reads the same borders for every kernel: given `position_ids` and neither an attention mask nor a
cache (TRL's SFT passes `use_cache=False`), `masking_utils.create_causal_mask` makes the causal mask block-diagonal,
one block per example. hfssl keeps TRL's packing and replaces only the flattening (`PackedRowsCollator`): each packed
row stays a row of the batch, so SDPA's masked attention costs (rows x max_length^2), not (all tokens)^2.

A model whose code builds its own mask would still mix examples. `check_packing_keeps_examples_apart` runs two short
sequences packed in one row and each alone, before any training, and refuses the run when their logits differ.
"""

from dataclasses import dataclass
from typing import Any

import torch

from ..run.errors import InputError

PROBE_LENGTHS = (5, 7)  # two short random sequences, packed in one row by the probe


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
            lengths = row.get("seq_lengths") or [len(ids)]
            input_ids[i, : len(ids)] = ids
            labels[i, : len(ids)] = torch.as_tensor(row.get("labels", row["input_ids"]), dtype=torch.long)
            position_ids[i, : len(ids)] = torch.cat([torch.arange(n) for n in lengths])
        labels[position_ids == 0] = -100
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


@torch.no_grad()
def packing_leak(model) -> float:
    """The largest |logit difference| of the second of two random sequences (PROBE_LENGTHS tokens), packed after the
    first in one row (`PackedRowsCollator`) versus alone: 0 up to rounding when the model keeps packed examples
    apart. Seeded, in eval mode (no dropout); the model's training mode is restored."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    first, second = (torch.randint(vocab, (n,), generator=generator) for n in PROBE_LENGTHS)
    row = {"input_ids": torch.cat([first, second]), "seq_lengths": list(PROBE_LENGTHS)}
    batch = PackedRowsCollator(pad_token_id=0)([row])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        packed = model(
            input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device), use_cache=False
        ).logits[0, len(first) :]
        alone = model(input_ids=second[None].to(device), use_cache=False).logits[0]
    finally:
        model.train(was_training)
    return float((packed.float() - alone.float()).abs().max())


def check_packing_keeps_examples_apart(model, name: str) -> None:
    """Refuse --packing for a model whose attention crosses example borders in a packed row (`packing_leak` above a
    tolerance of 1e-4 in float32, 1e-2 in half precision)."""
    leak = packing_leak(model)
    tolerance = 1e-4 if next(model.parameters()).dtype == torch.float32 else 1e-2
    if not leak <= tolerance:
        raise InputError(
            f"--packing: {name} lets packed examples attend to each other (a packed sequence's logits differ from the "
            f"same sequence alone by {leak:.2g}; attention {getattr(model.config, '_attn_implementation', None)!r}): "
            "its code does not build the causal mask from the position ids. Drop --packing (batches are then padded)."
        )
