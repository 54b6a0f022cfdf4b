"""Pseudo-log-likelihood of a masked LM (Salazar et al. 2020, "Masked Language Model Scoring").

    PLL(W) = sum_{t=1..|W|} log P(w_t | W without w_t),

each token scored with `[MASK]` in its place and every other token visible. Over a sample of sequences the
pseudo-perplexity is PPPL = exp(-(sum_W PLL(W)) / N), N the number of tokens scored (special tokens are not).
Cost: a sequence of T scored tokens takes T forward passes of its full length, O(T^2) token positions, so it runs
at the end of training on a small held-out sample only (`--pll_samples` blocks).
"""

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@torch.no_grad()
def pseudo_log_likelihood(
    model: nn.Module,
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    batch_size: int = 64,
) -> tuple[float, int]:
    """(PLL summed over the tokens of `input_ids` (T,) that are not special, number of those tokens)."""
    positions = (~special_tokens_mask.bool()).nonzero().flatten()  # (N,)
    total = 0.0
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]  # (n,)
        copies = input_ids.repeat(len(chunk), 1)  # (n, T): copy i hides token chunk[i]
        rows = torch.arange(len(chunk))
        copies[rows, chunk] = mask_token_id
        device = cast("PreTrainedModel", model).device  # a transformers masked LM
        logits = model(input_ids=copies.to(device)).logits.float()  # (n, T, V)
        log_probs = logits[rows, chunk.to(logits.device)].log_softmax(dim=-1)  # (n, V)
        total += log_probs[rows, input_ids[chunk].to(logits.device)].sum().item()
    return total, len(positions)


def pseudo_perplexity(model: nn.Module, blocks, mask_token_id: int) -> dict[str, float]:
    """{"pseudo_log_likelihood": mean PLL per token, "pseudo_perplexity": PPPL} over `blocks` (rows with
    input_ids and special_tokens_mask)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for block in blocks:
        pll, n = pseudo_log_likelihood(
            model, torch.tensor(block["input_ids"]), torch.tensor(block["special_tokens_mask"]), mask_token_id
        )
        total, count = total + pll, count + n
    model.train(was_training)
    mean = total / max(count, 1)
    return {"pseudo_log_likelihood": mean, "pseudo_perplexity": math.exp(min(-mean, 50.0))}
