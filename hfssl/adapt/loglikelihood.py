"""Log-likelihood of (context, continuation) pairs under any causal LM, as lm-evaluation-harness defines it,
computed with batching and a shared-prefix KV cache.

Definition (lm-evaluation-harness 0.4, `LM._encode_pair` and `HFLM._loglikelihood_tokens`):
- trailing whitespace of the context moves to the front of the continuation;
- whole = encode(context + continuation), ctx = encode(context); the continuation tokens are
  whole[len(ctx):] and the context tokens whole[:len(ctx)] (so a token merged across the boundary
  counts as continuation); an empty context becomes [prefix token] (BOS, else EOS);
- log p(continuation | context) = sum_i log softmax(logits_{n_ctx + i - 1})[cont_i], and is_greedy says
  whether every continuation token is the argmax.
`acc` is the argmax over options of that sum, `acc_norm` the argmax of the sum divided by the option's
length in characters.

Speed: requests that share a prompt prefix (the instruction and demonstrations of a k-shot prompt) are
scored as one group: the longest token prefix common to the group is run once, and its KV cache is
expanded over batches of the remaining suffixes (queries and label options), right-padded.
"""

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from ..models.helpers import cache_kwargs, context_window, output_cache
from ..run.errors import InputError

if TYPE_CHECKING:
    from transformers.cache_utils import DynamicLayer


def prefix_token_id(tokenizer) -> int:
    """The token that stands in for an empty context: BOS, else EOS (as lm-evaluation-harness)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise InputError("The tokenizer has neither a BOS nor an EOS token to condition an empty context on.")
    return token


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without the tokenizer's own special tokens (lm-evaluation-harness' `tok_encode` for
    causal models); a chat-templated context carries its special tokens in the text."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens), split exactly as lm-evaluation-harness splits them."""
    if context == "":
        continuation_ids = encode(tokenizer, continuation)
        prefix = prefix_token_id(tokenizer)
        if continuation_ids and continuation_ids[0] == prefix:
            return continuation_ids[:1], continuation_ids[1:]
        return [prefix], continuation_ids
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    n_context = len(encode(tokenizer, context))
    return whole[:n_context], whole[n_context:]


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for i in range(n):
        token = first[i]
        if any(s[i] != token for s in sequences):
            return i
    return n


def _expand_cache(prefix_cache: DynamicCache, batch: int, config) -> DynamicCache:
    """A new cache holding the (1, nh, P, hs) prefix keys/values as (batch, nh, P, hs) views (the prefix untouched)."""
    data = []
    for layer in cast("list[DynamicLayer]", prefix_cache.layers):  # filled by the prefix's forward pass
        keys, values = cast(torch.Tensor, layer.keys), cast(torch.Tensor, layer.values)
        data.append((keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1)))
    return DynamicCache(ddp_cache_data=data, config=config)


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _batch_rows(rows: list[list[int]], prefix_len: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows right-aligned (left-padded) after a cached prefix of prefix_len tokens: (ids, mask, positions).

    ids (B, W); mask (B, prefix_len + W) with 1 for the prefix and the real tokens; positions (B, W) count only real
    tokens, so every row's last token sits at index W - 1 and sees exactly its prefix and itself.
    """
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), prefix_len + width, dtype=torch.long, device=device)
    positions = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    mask[:, :prefix_len] = 1
    for b, row in enumerate(rows):
        pad = width - len(row)
        ids[b, pad:] = torch.tensor(row, device=device)
        mask[b, prefix_len + pad :] = 1
        positions[b, pad:] = torch.arange(prefix_len, prefix_len + len(row), device=device)
    return ids, mask, positions


@torch.no_grad()
def _score_group(
    model: nn.Module, pairs: list[tuple[list[int], list[int]]], batch_size: int, use_prefix_cache: bool
) -> list[tuple[float, bool]]:
    """(sum log-prob, is_greedy) of each (context ids, continuation ids) pair of one group.

    Work saved, three ways: the longest token prefix the group shares runs once and its KV cache serves every row;
    pairs whose model inputs are identical (the options of a query that are one token long) share one row, as
    lm-evaluation-harness' logits cache does; and rows are right-aligned, so the LM head runs only on the last
    positions a batch needs (`logits_to_keep`). Rows of similar length share a batch.
    """
    device = next(model.parameters()).device
    inputs = [ctx + cont for ctx, cont in pairs]  # position t predicts token t + 1: a row drops its last token
    prefix_len, prefix_cache = 0, None
    if use_prefix_cache and len(pairs) > 1:
        # the cached part must end before the last context token, whose logits predict the first answer token
        prefix_len = min(_common_prefix_length(inputs), min(len(ctx) for ctx, _ in pairs) - 1)
    if prefix_len > 0:
        prefix = torch.tensor([inputs[0][:prefix_len]], device=device)
        prefix_cache = output_cache(model(input_ids=prefix, use_cache=True))
    row_of: dict[tuple[int, ...], int] = {}  # unique rows and, per pair, which row it reads
    rows: list[list[int]] = []
    for sequence in inputs:
        key = tuple(sequence[prefix_len:-1])
        if key not in row_of:
            row_of[key] = len(rows)
            rows.append(list(key))
    pairs_of_row: list[list[int]] = [[] for _ in rows]
    for i, sequence in enumerate(inputs):
        pairs_of_row[row_of[tuple(sequence[prefix_len:-1])]].append(i)
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    keep_few = _accepts_logits_to_keep(model)
    order = sorted(range(len(rows)), key=lambda r: -len(rows[r]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask, positions = _batch_rows([rows[r] for r in chunk], prefix_len, device)
        keep = max(len(pairs[i][1]) for r in chunk for i in pairs_of_row[r])  # scored positions, from the end
        kwargs = {"logits_to_keep": keep} if keep_few else {}
        if prefix_cache is not None:
            kwargs.update(cache_kwargs(_expand_cache(prefix_cache, len(chunk), model.config)), use_cache=True)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs).logits[:, -keep:]
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, keep, V)
        for b, r in enumerate(chunk):
            for i in pairs_of_row[r]:
                cont = pairs[i][1]
                scored = log_probs[b, keep - len(cont) :]  # (len(cont), V): the row's last len(cont) positions
                target = torch.tensor(cont, device=device)
                total = scored.gather(1, target[:, None]).sum().item()
                results[i] = (total, bool((scored.argmax(dim=-1) == target).all()))
    return results  # type: ignore[return-value]


def loglikelihoods(
    model: nn.Module,
    tokenizer,
    groups: list[list[tuple[str, str]]],
    *,
    batch_size: int = 16,
    use_prefix_cache: bool = True,
) -> list[list[tuple[float, bool]]]:
    """Score (context, continuation) string pairs; `groups` are lists of pairs expected to share a prefix.

    Returns, for each group, a (log p(continuation | context), is_greedy) per pair. Raises ValueError if
    a continuation encodes to no tokens or a sequence is longer than the model's context window (nothing is
    truncated: build shorter prompts instead).
    """
    was_training = model.training
    model.eval()
    limit = context_window(model)
    out = []
    try:
        for group in groups:
            pairs = [encode_pair(tokenizer, ctx, cont) for ctx, cont in group]
            for (ctx, cont), (ctx_ids, cont_ids) in zip(group, pairs):
                if not cont_ids:
                    raise InputError(f"The continuation {cont!r} encodes to no tokens; choose another label word.")
                if limit is not None and len(ctx_ids) + len(cont_ids) - 1 > limit:
                    raise InputError(
                        f"A prompt of {len(ctx_ids) + len(cont_ids) - 1} tokens is longer than the model's context "
                        f"window ({limit}): {ctx[-80:]!r}"
                    )
            out.append(_score_group(model, pairs, batch_size, use_prefix_cache) if pairs else [])
    finally:
        model.train(was_training)
    return out
