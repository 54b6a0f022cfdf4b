"""Weighted k-nearest-neighbour classification of features: the standard monitor of self-supervised encoders.

Wu et al. 2018 (InstDisc), as used by lightly and solo-learn: with L2-normalised features, the k bank
items most cosine-similar to a query vote for their class with weight exp(sim / T); the class with the
largest total vote wins. No parameters are trained, so the number reflects the features alone.
"""

import torch
from torch.nn import functional as F


def knn_predict(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Predicted class of each query.

    queries: (Q, F); bank: (N, F); bank_labels: (N,) int64 in [0, num_classes). Returns (Q,) int64.
    score_c(q) = sum_{i in topk(q)} [y_i = c] exp(cos(q, b_i) / T).
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, queries.shape[0], chunk_size):
        q = F.normalize(queries[start : start + chunk_size].float(), dim=1)
        sims, idx = (q @ bank.T).topk(k, dim=1)  # (q, k)
        weights = (sims / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(queries, query_labels, bank, bank_labels, num_classes, k=20, temperature=0.1) -> float:
    """Fraction of queries whose kNN prediction equals their label."""
    predicted = knn_predict(queries, bank, bank_labels, num_classes, k, temperature)
    return (predicted == query_labels).float().mean().item()
