"""The losses hfssl trains with (self-supervised NT-Xent; the supervised pair loss of contrastive fine-tuning), with
the formula in each docstring."""

import torch
from torch import nn
from torch.nn import functional as F

from . import distributed
from .run.errors import InputError


class NTXentLoss(nn.Module):
    r"""Normalized temperature-scaled cross-entropy (NT-Xent), the SimCLR loss.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    https://arxiv.org/abs/2002.05709, eq. (1). For a batch of N images, each seen in two views, the
    2N projections z are L2-normalised and, with sim(u, v) = u^T v / (|u| |v|),

        l(i, j) = -log  exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau)

        L = 1/(2N) sum_{k=1}^{N} [ l(2k-1, 2k) + l(2k, 2k-1) ]

    i.e. each view must pick out its partner among the 2N - 1 other views of the batch.

    With `gather_distributed=True` and several processes, z of every process is gathered *with
    gradients* (`hfssl.distributed.all_gather_with_grad`), so each anchor is contrasted against the
    negatives of the global batch. Each process averages over its own 2B anchors; since data-parallel
    training averages gradients over processes, the result equals the one-process loss and gradients
    on the global batch.

    Shape:
        z_a, z_b: (B, D) projections of view 1 and view 2 of the same B images (row i of each is a pair).
        Returns a scalar.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False):
        super().__init__()
        if temperature <= 0:
            raise InputError(f"temperature must be positive, got {temperature}.")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        if z_a.shape != z_b.shape or z_a.dim() != 2:
            raise InputError(
                f"NT-Xent needs two (B, D) tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}."
            )
        B = z_a.shape[0]
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        if self.gather_distributed and distributed.is_distributed():
            all_a, all_b = distributed.all_gather_with_grad(z_a), distributed.all_gather_with_grad(z_b)
            offset = distributed.rank() * B  # where this process's rows sit in the global batch
        else:
            all_a, all_b, offset = z_a, z_b, 0
        n_global = all_a.shape[0]
        if n_global < 2:
            raise InputError("NT-Xent needs at least 2 images in the (global) batch: with 1 there are no negatives.")
        candidates = torch.cat([all_a, all_b], dim=0)  # (2N, D): view-1 rows, then view-2 rows
        anchors = torch.cat([z_a, z_b], dim=0)  # (2B, D)
        logits = anchors @ candidates.T / self.temperature  # (2B, 2N)
        local = torch.arange(B, device=z_a.device) + offset
        self_index = torch.cat([local, local + n_global])  # anchor i is candidate self_index[i]
        partner = torch.cat([local + n_global, local])  # its other view
        logits = logits.masked_fill(F.one_hot(self_index, 2 * n_global).bool(), float("-inf"))
        return F.cross_entropy(logits, partner)


def cosine_similarity_loss(u: torch.Tensor, v: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    r"""The pair loss SetFit fine-tunes a sentence encoder with (sentence-transformers' CosineSimilarityLoss,
    Reimers & Gurevych 2019; Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", sec. 3.1):

        L = 1/P sum_p ( cos(u_p, v_p) - s_p )^2,   cos(u, v) = u^T v / (|u| |v|),

    with s_p = 1 for a pair of one class and 0 for a pair of two classes: same-class sentences are pulled to cosine
    1, others pushed to cosine 0 (orthogonal, not opposite).

    Shape:
        u, v: (P, D) embeddings of the two sentences of P pairs; same: (P,) 1 or 0. Returns a scalar.
    """
    if u.shape != v.shape or u.dim() != 2 or same.shape != u.shape[:1]:
        raise InputError(
            f"cosine_similarity_loss needs u, v of one (P, D) shape and same of shape (P,), got {tuple(u.shape)}, "
            f"{tuple(v.shape)} and {tuple(same.shape)}."
        )
    return F.mse_loss(F.cosine_similarity(u, v, dim=1), same.to(u.dtype))
