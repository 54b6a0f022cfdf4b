"""Episode sampling and class splits: exact sizes, disjointness, remapped labels, seeds, clear errors."""

import pytest
import torch

from hfssl.data.episodes import EpisodeSampler, split_classes

LABELS = torch.arange(12).repeat_interleave(7)  # 12 classes x 7 examples


def test_episode_shapes_and_disjointness():
    sampler = EpisodeSampler(LABELS, list(range(12)), ways=5, shots=2, queries=3, seed=0)
    ep = sampler[4]
    assert ep.support.shape == (10,) and ep.query.shape == (15,)
    assert set(ep.support.tolist()).isdisjoint(ep.query.tolist())
    assert len(set(ep.classes)) == 5
    for way, original in enumerate(ep.classes):
        assert (LABELS[ep.support[ep.support_labels == way]] == original).all()
        assert (LABELS[ep.query[ep.query_labels == way]] == original).all()
        assert (ep.support_labels == way).sum() == 2 and (ep.query_labels == way).sum() == 3


def test_episodes_are_seeded_by_index():
    a = EpisodeSampler(LABELS, None, 5, 1, 2, seed=0)
    b = EpisodeSampler(LABELS, None, 5, 1, 2, seed=0)
    assert torch.equal(a[7].support, b[7].support) and torch.equal(a[7].query, b[7].query)
    assert not torch.equal(a[7].support, a[8].support)
    assert not torch.equal(a[7].support, EpisodeSampler(LABELS, None, 5, 1, 2, seed=1)[7].support)


def test_sampler_uses_only_its_classes():
    train, val, test = split_classes(12, (0.5, 0.25, 0.25), seed=3)
    assert sorted(train + val + test) == list(range(12)) and len(train) == 6 and len(val) == 3
    sampler = EpisodeSampler(LABELS, train, 3, 1, 1, seed=0)
    for i in range(20):
        assert set(sampler[i].classes) <= set(train)


def test_bad_requests_are_clear():
    with pytest.raises(ValueError, match="fewer than shots \\+ queries"):
        EpisodeSampler(LABELS, None, 5, 5, 3)
    with pytest.raises(ValueError, match="need 5 classes, but this split has only 3"):
        EpisodeSampler(LABELS, [0, 1, 2], 5, 1, 1)
    with pytest.raises(ValueError, match="sum to 1"):
        split_classes(12, (0.5, 0.5, 0.5), seed=0)
