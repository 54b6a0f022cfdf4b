"""N-way K-shot episodes for meta-learning, over any labelled data set (images or text).

An episode picks N classes, then K support and Q query examples of each, disjoint; labels are remapped to
0..N-1 in a random order, so a model cannot memorise class identities across episodes. Classes are split
into disjoint meta-train / meta-validation / meta-test sets (`split_classes`): tasks at test time are
about characters (or topics) never seen in meta-training.
"""

from dataclasses import dataclass

import torch

from ..run.errors import InputError


@dataclass
class Episode:
    """Indices into the data set and remapped labels. support: (N*K,), query: (N*Q,); classes: the N originals."""

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: list[int]


def split_classes(num_classes: int, fractions: tuple[float, ...], seed: int) -> tuple[list[int], list[int], list[int]]:
    """A seeded partition of class ids into (meta-train, meta-validation, meta-test) by the given fractions."""
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise InputError(f"Class split fractions must be non-negative and sum to 1, got {fractions}.")
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = round(fractions[0] * num_classes)
    n_val = round(fractions[1] * num_classes)
    return sorted(order[:n_train]), sorted(order[n_train : n_train + n_val]), sorted(order[n_train + n_val :])


class EpisodeSampler:
    """Seeded N-way K-shot (+ Q query) episodes from `labels` (M,), restricted to `classes`.

    Episode i depends only on (seed, i): sampling is reproducible and a resumed run sees the same tasks.
    Raises ValueError when N exceeds the number of classes or a class has fewer than K + Q examples.
    """

    def __init__(self, labels, classes: list[int] | None, ways: int, shots: int, queries: int, seed: int = 0):
        labels = torch.as_tensor(labels).long()
        classes = sorted(set(labels.tolist())) if classes is None else list(classes)
        if ways < 2:
            raise InputError(f"An episode needs at least 2 ways, got {ways}.")
        if shots < 1 or queries < 1:
            raise InputError(f"shots and queries must be >= 1, got {shots} and {queries}.")
        if ways > len(classes):
            raise InputError(f"{ways}-way episodes need {ways} classes, but this split has only {len(classes)}.")
        self.members = {}
        for c in classes:
            idx = torch.nonzero(labels == c).flatten()
            if len(idx) < shots + queries:
                raise InputError(f"Class {c} has {len(idx)} examples, fewer than shots + queries = {shots + queries}.")
            self.members[c] = idx
        self.classes, self.ways, self.shots, self.queries, self.seed = classes, ways, shots, queries, seed

    def __getitem__(self, index: int) -> Episode:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        picked = [self.classes[i] for i in torch.randperm(len(self.classes), generator=g)[: self.ways].tolist()]
        support, query = [], []
        for c in picked:  # position in `picked` is the remapped label
            idx = self.members[c][torch.randperm(len(self.members[c]), generator=g)[: self.shots + self.queries]]
            support.append(idx[: self.shots])
            query.append(idx[self.shots :])
        ways = torch.arange(self.ways)
        return Episode(
            torch.cat(support),
            ways.repeat_interleave(self.shots),
            torch.cat(query),
            ways.repeat_interleave(self.queries),
            picked,
        )
