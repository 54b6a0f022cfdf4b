"""The kNN monitor: perfect on separable features, chance on noise, and the vote weighting."""

import torch

from hfssl.training.knn import knn_accuracy, knn_predict


def test_separable_features_are_classified_perfectly():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 10
    bank_labels = torch.arange(5).repeat_interleave(40)
    bank = centers[bank_labels] + torch.randn(200, 16, generator=g)
    query_labels = torch.arange(5).repeat(10)
    queries = centers[query_labels] + torch.randn(50, 16, generator=g)
    assert knn_accuracy(queries, query_labels, bank, bank_labels, 5, k=20) == 1.0
    assert knn_accuracy(queries, query_labels, bank, bank_labels, 5, k=200) == 1.0


def test_noise_is_near_chance():
    g = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(2000, 32, generator=g), torch.randn(1000, 32, generator=g)
    labels, query_labels = torch.randint(0, 4, (2000,), generator=g), torch.randint(0, 4, (1000,), generator=g)
    assert abs(knn_accuracy(queries, query_labels, bank, labels, 4, k=20) - 0.25) < 0.06


def test_closer_neighbours_outvote_more_numerous_far_ones():
    bank = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])  # one very close class-0, two farther class-1
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_predict(query, bank, labels, 2, k=3, temperature=0.05).item() == 0  # sharp weights
    assert knn_predict(query, bank, labels, 2, k=3, temperature=100.0).item() == 1  # ~ majority vote
