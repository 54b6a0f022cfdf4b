"""learn2learn as a second meta-learning engine (`--engine learn2learn`), for cross-checks and the benchmark.

Same interface and the same mathematics as `FunctionalMetaLearner` (see algorithms.py): MAML / FOMAML
wrap the whole model in `l2l.algorithms.MAML` and clone it per task; ANIL wraps only the head. learn2learn
0.2.0 is unmaintained and needs a special install (scripts/install_learn2learn.sh); it is an optional extra.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..models.helpers import classification_head
from ..run.errors import InputError, MissingDependencyError
from .algorithms import _logits, allow_second_order, features, loop_meta_backward, text_mask, use_batch_statistics


def import_learn2learn():
    try:
        import learn2learn
    except ImportError as err:
        raise MissingDependencyError(
            f"--engine learn2learn needs learn2learn 0.2.0: run bash scripts/install_learn2learn.sh ({err})."
        ) from err
    return learn2learn


class Learn2LearnMetaLearner:
    """MAML / FOMAML / ANIL through learn2learn's `MAML` wrapper (protonet needs no engine)."""

    def __init__(self, model: nn.Module, algorithm: str, inner_lr: float = 0.4, steps: int = 1):
        if algorithm not in ("maml", "fomaml", "anil"):
            raise InputError(f"The learn2learn engine runs maml, fomaml and anil, not {algorithm!r}.")
        l2l = import_learn2learn()
        use_batch_statistics(model)
        if algorithm == "maml":
            allow_second_order(model)
        self.model, self.algorithm, self.steps = model, algorithm, steps
        wrapped = classification_head(model) if algorithm == "anil" else model
        self.maml = l2l.algorithms.MAML(wrapped, lr=inner_lr, first_order=algorithm == "fomaml")

    def task_loss(
        self, x_s, y_s, x_q, y_q, steps: int | None = None, create_graph: bool = True
    ) -> tuple[torch.Tensor, float]:
        steps = self.steps if steps is None else steps
        learner = self.maml.clone()
        if self.algorithm == "anil":
            phi_s, phi_q = features(self.model, x_s), features(self.model, x_q)
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(phi_s), y_s), first_order=not create_graph)
            logits = learner(phi_q)
        else:
            for _ in range(steps):
                learner.adapt(
                    F.cross_entropy(_logits(learner(x_s, **text_mask(self.model, x_s))), y_s),
                    first_order=not create_graph or self.algorithm == "fomaml",
                )
            logits = _logits(learner(x_q, **text_mask(self.model, x_q)))
        loss = F.cross_entropy(logits, y_q)
        return loss, (logits.argmax(-1) == y_q).float().mean().item()

    def meta_backward(self, tasks: list[tuple]) -> tuple[float, list[float]]:
        """Task by task, one learner clone each (learn2learn has no vectorised path)."""
        return loop_meta_backward(self, tasks)
