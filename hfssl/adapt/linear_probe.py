"""Linear probe: prediction W^T phi(x) + b with phi frozen, trained on cached features.

Classification: multinomial logistic regression,
    min_{W,b}  1/N sum_i CE(W^T x_i + b, y_i) + (l2 / 2) ||W||^2,
solved full-batch with L-BFGS (`solver="lbfgs"`, the default: deterministic, no learning rate to tune) or
with mini-batch SGD (`solver="sgd"`). Regression: ridge, closed form,
    W = (X^T X + l2 N I)^{-1} X^T y.
Features are standardised with the training mean and std (unless `standardize=False`); the returned head folds
that in, so it applies to raw features (and can become a model's classification head as it is).
"""

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..run.errors import InputError


@dataclass
class LinearProbeConfig:
    task: str = field(default="classification", metadata={"help": "'classification' or 'regression'."})
    solver: str = field(default="lbfgs", metadata={"help": "'lbfgs' (full batch) or 'sgd' (mini-batch)."})
    l2: float = field(default=1e-3, metadata={"help": "L2 penalty on W (not b)."})
    standardize: bool = field(
        default=True, metadata={"help": "Standardise each feature with the training mean and std before fitting."}
    )
    max_iter: int = field(default=300, metadata={"help": "L-BFGS iterations."})
    epochs: int = field(default=100, metadata={"help": "SGD epochs over the cached features."})
    learning_rate: float = field(default=0.1, metadata={"help": "SGD learning rate (momentum 0.9)."})
    batch_size: int = field(default=256, metadata={"help": "SGD batch size."})
    seed: int = field(default=0, metadata={"help": "Seed for SGD's shuffling."})

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise InputError(f"task must be 'classification' or 'regression', got {self.task!r}.")
        if self.solver not in ("lbfgs", "sgd"):
            raise InputError(f"solver must be 'lbfgs' or 'sgd', got {self.solver!r}.")


def sklearn_l2(num_examples: int, num_classes: int, c: float = 1.0) -> float:
    """The `l2` that makes this probe's objective scikit-learn's LogisticRegression(C=c) on the same features.

    sklearn minimises 1/2 ||W||^2 + C sum_i CE_i, i.e. (dividing by C N) the mean CE plus 1/(2CN) ||W||^2: l2 = 1/(CN).
    With two classes sklearn fits one vector w = w_1 - w_2; this probe fits both, and its penalty is smallest at
    w_1 = -w_2 = w/2, a quarter of l2 ||w||^2: l2 = 2/(CN) there.
    """
    return (2.0 if num_classes == 2 else 1.0) / (c * num_examples)


def _fold_standardisation(linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """W (x - m) / s + b  ==  (W / s) x + (b - W (m / s)): the same head on raw features."""
    head = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        head.weight.copy_(linear.weight / std)
        head.bias.copy_(linear.bias - (linear.weight * (mean / std)).sum(dim=1))
    return head


def fit_linear_probe(
    features: torch.Tensor, targets: torch.Tensor, num_outputs: int, config: LinearProbeConfig | None = None
) -> nn.Linear:
    """Fit the probe. features: (N, F) float; targets: (N,) int64 classes or (N,) / (N, O) float values.

    Returns an nn.Linear(F, num_outputs) that maps raw features to logits (or predictions).
    """
    config = config or LinearProbeConfig()
    x = features.double()
    mean, std = torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
    if config.standardize:
        mean = x.mean(dim=0)
        std = x.std(dim=0).clamp_min(1e-6) if len(x) > 1 else std
    x = (x - mean) / std
    linear = nn.Linear(x.shape[1], num_outputs).double()
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)

    if config.task == "regression":
        y = targets.double().reshape(len(x), -1)
        x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # bias column, not penalised
        penalty = config.l2 * len(x) * torch.eye(x1.shape[1], dtype=x.dtype)
        penalty[-1, -1] = 0
        solution = torch.linalg.solve(x1.T @ x1 + penalty, x1.T @ y)  # (F + 1, O)
        with torch.no_grad():
            linear.weight.copy_(solution[:-1].T)
            linear.bias.copy_(solution[-1])
    elif config.solver == "lbfgs":
        y = targets.long()
        optimizer: torch.optim.Optimizer = torch.optim.LBFGS(
            linear.parameters(),
            max_iter=config.max_iter,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            history_size=20,
        )

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(linear(x), y) + 0.5 * config.l2 * linear.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    else:
        y = targets.long()
        optimizer = torch.optim.SGD(linear.parameters(), lr=config.learning_rate, momentum=0.9)
        generator = torch.Generator().manual_seed(config.seed)
        for _ in range(config.epochs):
            for batch in torch.randperm(len(x), generator=generator).split(config.batch_size):
                loss = F.cross_entropy(linear(x[batch]), y[batch]) + 0.5 * config.l2 * linear.weight.pow(2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return _fold_standardisation(linear, mean, std).float()
