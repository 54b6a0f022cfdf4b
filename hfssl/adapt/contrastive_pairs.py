"""The pairs of SetFit-style contrastive fine-tuning (`finetune.py --method contrastive`): from K labelled examples
per class, seeded and balanced, one positive and one negative partner per example per round.

Tunstall et al. 2022 ("Efficient Few-Shot Learning Without Prompts", SetFit) fine-tune a sentence encoder on such
pairs with `hfssl.losses.cosine_similarity_loss`, then fit a logistic-regression head on the tuned embeddings. With R
rounds (SetFit's `num_iterations`) a task of N examples gives 2 R N pairs, exactly half of them positive.
"""

import torch

from ..run.errors import InputError


def check_pairable(labels: torch.Tensor, names: list[str]) -> None:
    """InputError unless there are two classes or more (negative pairs) and two examples of every class (positive
    pairs); names: the class names, for the message."""
    counts = torch.bincount(labels, minlength=len(names))
    present = [i for i, n in enumerate(counts.tolist()) if n > 0]
    if len(present) < 2:
        raise InputError("--method contrastive needs two classes or more: with one there is no negative pair.")
    single = [names[i] for i in present if counts[i] < 2]
    if single:
        raise InputError(
            f"--method contrastive needs two examples of every class (K >= 2) to make a positive pair; "
            f"{', '.join(repr(s) for s in single[:5])} {'has' if len(single) == 1 else 'have'} one."
        )


def sample_pairs(labels: torch.Tensor, rounds: int, seed: int) -> torch.Tensor:
    """Pairs (2 R N, 3) of (i, j, same) over examples with labels (N,): in each of `rounds` rounds, every example i
    gets a positive partner j (same class, j != i) and a negative one (another class), each drawn uniformly with a
    generator seeded by `seed`. Rows alternate positive, negative; the same (labels, rounds, seed) give the same
    pairs. Call `check_pairable` first."""
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    positive = torch.empty(rounds, n, dtype=torch.long)
    negative = torch.empty(rounds, n, dtype=torch.long)
    for label in labels.unique():
        members, others = (labels == label).nonzero().flatten(), (labels != label).nonzero().flatten()
        draw = torch.randint(len(members) - 1, (rounds, len(members)), generator=generator)
        draw = draw + (draw >= torch.arange(len(members)))  # uniform over the class, the anchor itself skipped
        positive[:, members] = members[draw]
        negative[:, members] = others[torch.randint(len(others), (rounds, len(members)), generator=generator)]
    anchors = torch.arange(n).expand(rounds, n)
    rows = [torch.stack([anchors, partner, torch.full_like(anchors, same)], dim=-1) for partner, same in
            ((positive, 1), (negative, 0))]  # fmt: skip
    return torch.stack(rows, dim=2).reshape(-1, 3)  # (rounds, n, 2, 3): round by round, anchor by anchor
