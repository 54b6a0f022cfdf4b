"""The losses hfssl trains with (self-supervised NT-Xent; CLIP's image-text InfoNCE; the supervised pair loss of
contrastive fine-tuning), with the formula in each docstring."""

import torch
from torch import nn
from torch.nn import functional as F

from . import distributed
from .run.errors import InputError


def _global_pairs(a: torch.Tensor, b: torch.Tensor, gather: bool, loss: str, items: str) -> tuple:
    """(a, b, all_a, all_b, offset): the two (B, D) halves of B pairs, L2-normalised; with `gather` under several
    processes, every process's rows too, gathered *with gradients* in rank order (N = world x B rows, else the local
    ones), and where this process's rows start among them. InputError for halves of another shape, or a global
    batch of one pair (no negatives)."""
    if a.shape != b.shape or a.dim() != 2:
        raise InputError(f"{loss} needs two (B, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    if gather and distributed.is_distributed():
        all_a, all_b = distributed.all_gather_with_grad(a), distributed.all_gather_with_grad(b)
        offset = distributed.rank() * a.shape[0]  # where this process's rows sit in the global batch
    else:
        all_a, all_b, offset = a, b, 0
    if all_a.shape[0] < 2:
        raise InputError(f"{loss} needs at least 2 {items} in the (global) batch: with 1 there are no negatives.")
    return a, b, all_a, all_b, offset


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
        B = z_a.shape[0]
        z_a, z_b, all_a, all_b, offset = _global_pairs(z_a, z_b, self.gather_distributed, "NT-Xent", "images")
        n_global = all_a.shape[0]
        candidates = torch.cat([all_a, all_b], dim=0)  # (2N, D): view-1 rows, then view-2 rows
        anchors = torch.cat([z_a, z_b], dim=0)  # (2B, D)
        logits = anchors @ candidates.T / self.temperature  # (2B, 2N)
        local = torch.arange(B, device=z_a.device) + offset
        self_index = torch.cat([local, local + n_global])  # anchor i is candidate self_index[i]
        partner = torch.cat([local + n_global, local])  # its other view
        logits = logits.masked_fill(F.one_hot(self_index, 2 * n_global).bool(), float("-inf"))
        return F.cross_entropy(logits, partner)


class ImageTextContrastiveLoss(nn.Module):
    r"""CLIP's symmetric InfoNCE loss over image-text pairs.

    Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision",
    https://arxiv.org/abs/2103.00020, Figure 3's pseudo-code. For N pairs with L2-normalised image embeddings u_i and
    text embeddings v_j and the inverse temperature s = exp(t),

        logits_ij = s u_i^T v_j
        L = 1/2 [ 1/N sum_i -log softmax_j(logits_ij)[i]  +  1/N sum_j -log softmax_i(logits_ij)[j] ]

    i.e. each image must pick out its caption among the N texts (image -> text), and each caption its image among the
    N images (text -> image). The embeddings are normalised here too (a no-op on normalised input).

    With `gather_distributed=True` and several processes, the embeddings of every process are gathered *with
    gradients* (`hfssl.distributed.all_gather_with_grad`): each process scores its own B images against all N texts
    and its own B texts against all N images, and averages over its 2B anchors; data-parallel averaging of gradients
    then gives the one-process loss and gradients on the global batch (as for `NTXentLoss`).

    Shape:
        image_embeds, text_embeds: (B, D), row i of each a pair; scale: s, a scalar (tensor: it is learned).
        Returns a scalar.
    """

    def __init__(self, gather_distributed: bool = False):
        super().__init__()
        self.gather_distributed = gather_distributed

    def forward(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, scale: torch.Tensor | float
    ) -> torch.Tensor:
        B = image_embeds.shape[0]
        u, v, all_u, all_v, offset = _global_pairs(
            image_embeds, text_embeds, self.gather_distributed, "The image-text loss", "pairs"
        )
        targets = torch.arange(B, device=u.device) + offset
        image_to_text = F.cross_entropy(scale * u @ all_v.T, targets)  # (B, N): each image against every caption
        text_to_image = F.cross_entropy(scale * v @ all_u.T, targets)  # (B, N): each caption against every image
        return (image_to_text + text_to_image) / 2


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
