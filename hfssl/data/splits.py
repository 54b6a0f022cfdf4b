"""Seeded held-out splits shared by pretraining (kNN queries) and adaptation (evaluation sets)."""

import torch


def held_out_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices) of a seeded permutation of range(n); at least one held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, round(fraction * n))
    return order[n_eval:], order[:n_eval]
