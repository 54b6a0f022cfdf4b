"""MAML, first-order MAML, ANIL and Prototypical Networks on any classifier, with torch.func.

A task is (x_s, y_s) support and (x_q, y_q) query with labels 0..N-1. With theta the model's parameters:

- MAML (Finn et al. 2017): theta'_0 = theta, theta'_{t+1} = theta'_t - alpha * grad L_s(theta'_t) (`steps` times);
  meta-loss L_q(theta'); its gradient flows through the inner updates (second order: Hessian-vector terms).
- FOMAML: the same update, but the inner gradients are treated as constants, so
  d L_q(theta') / d theta = grad L_q evaluated at theta' (the first-order approximation).
- ANIL (Raghu et al. 2020): only the head (W, b) is adapted in the inner loop, on features phi(x) from the
  body; the meta-gradient reaches the body through phi (second order in the head only).
- ProtoNet (Snell et al. 2017): no inner loop. Prototypes c_k = mean of phi(x_s) over class k;
  logits_k(x) = -||phi(x) - c_k||^2; loss = cross-entropy on the query.

The model maps x -> logits (a tensor, or an output with `.logits`); phi(x) is the input of its
classification head (found by `hfssl.models.helpers.classification_head`), so ANIL and ProtoNet work with
any classifier, including a pretrained hfssl SimCLR encoder with a fresh N-way head.
BatchNorm uses the statistics of the batch at hand (`use_batch_statistics`), as in the MAML paper.

A MAML / FOMAML meta-batch runs its tasks in one of three ways (same meta-gradient up to float rounding):
task by task; on CPU, in `task_threads` threads with one intra-op thread each (the default when torch has
more than one thread: small per-task convolutions use two cores poorly, two tasks at once use them well;
see benchmarks/bench_meta.py); or all at once under `vmap` (`vectorize`).
"""

import copy
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from ..models.helpers import classification_head, classification_head_name
from ..run.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ALGORITHMS = ("maml", "fomaml", "anil", "protonet")


def _normalise_with_batch_statistics(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta over all dims but channels, written out.

    Same function as F.batch_norm in training mode, as plain tensor ops: torch 2.14's batching rule for
    batch_norm's double backward is wrong under vmap (the vmapped MAML meta-gradient of a BatchNorm model
    disagreed with finite differences: 0.408 vs 0.404), while these ops batch correctly.
    """
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + module.eps)
    if module.affine:
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = y * module.weight.view(shape) + module.bias.view(shape)
    return y


_BATCH_STAT_CLASSES: dict[type, type] = {}


def _batch_stat_class(cls: type) -> type:
    """A subclass of a BatchNorm class whose forward is `_normalise_with_batch_statistics` (a class, not a
    bound method on the instance, so that copies made by learn2learn's clone use their own parameters)."""
    if cls not in _BATCH_STAT_CLASSES:
        _BATCH_STAT_CLASSES[cls] = type(
            f"BatchStatistics{cls.__name__}",
            (cls,),
            {"forward": _normalise_with_batch_statistics, "_hfssl_original": cls},
        )
    return _BATCH_STAT_CLASSES[cls]


def use_batch_statistics(model: nn.Module, vmap_safe: bool = False) -> None:
    """BatchNorm normalises with the current batch and stops updating running statistics (no in-place
    buffer writes inside the functional transforms); `restore_batch_norm` undoes it. vmap_safe: use the
    plain-ops normalisation (needed under vmap; slower than the fused kernel on CPU)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            if vmap_safe and not hasattr(type(module), "_hfssl_original"):
                module.__class__ = _batch_stat_class(type(module))


def restore_batch_norm(model: nn.Module) -> None:
    """Give BatchNorm layers back their own class (running statistics in eval mode)."""
    for module in model.modules():
        original = getattr(type(module), "_hfssl_original", None)
        if original is not None:
            module.__class__ = original
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = True


def allow_second_order(model: nn.Module) -> None:
    """Second-order MAML differentiates the backward pass: switch fused SDPA attention (no double backward
    on CPU) to transformers' eager attention, the same function."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) not in (None, "eager"):
        cast("PreTrainedModel", model).set_attn_implementation("eager")  # a transformers model: it has a config


def text_mask(model: nn.Module, x: torch.Tensor) -> dict:
    """The keyword inputs of a forward on x: right-padded token ids (B, T) get their attention mask (B, T), 1 on the
    tokens that are not padding, so an encoder does not attend to the padding; images get none."""
    pad = getattr(model.config, "pad_token_id", None) if hasattr(model, "config") else None
    if x.is_floating_point() or pad is None:
        return {}
    return {"attention_mask": (x != pad).long()}


def forward(model: nn.Module, x: torch.Tensor, params: dict | None = None):
    """model(x) (with `params` in place of its own through functional_call), text attention mask included."""
    if params is None:
        return model(x, **text_mask(model, x))
    return functional_call(model, params, (x,), text_mask(model, x))


def _logits(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def features(model: nn.Module, x: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """phi(x): the classification head's input, (B, F), differentiable w.r.t. the body's parameters.

    Heads that score every position and pool afterwards (transformers' GPT-2, Llama, ... sequence classifiers) see
    (B, T, F): phi is then the last real token's row (x holds right-padded token ids, as `TextEpisodeData` makes)."""
    captured: dict[str, torch.Tensor] = {}
    head = classification_head(model)
    handle = head.register_forward_hook(lambda module, args, out: captured.setdefault("x", args[0]))
    try:
        forward(model, x, params)
    finally:
        handle.remove()
    phi = captured["x"]
    if phi.dim() == 3:  # (B, T, F): pool at the last token that is not padding, as those heads' own pooling does
        pad = getattr(model.config, "pad_token_id", None)
        real = (x != pad) if pad is not None else torch.ones_like(x, dtype=torch.bool)
        last = (torch.arange(x.shape[1], device=x.device) * real).argmax(dim=1)
        phi = phi[torch.arange(phi.shape[0], device=phi.device), last]
    return phi


class FunctionalMetaLearner:
    """The torch.func engine: `task_loss` gives a task's meta-loss (and query accuracy) for backward();
    `meta_backward` does a whole meta-batch.

    algorithm: maml | fomaml | anil | protonet; inner_lr alpha; steps: inner gradient steps; vectorize: run
    a MAML / FOMAML meta-batch under vmap (exact, but slower than the task loop on CPU: see bench_meta.py);
    task_threads: MAML / FOMAML tasks run at once in worker threads (None: torch.get_num_threads() on CPU,
    1 on an accelerator; 1: one task at a time).
    """

    def __init__(
        self,
        model: nn.Module,
        algorithm: str,
        inner_lr: float = 0.4,
        steps: int = 1,
        vectorize: bool = False,
        task_threads: int | None = None,
    ):
        if algorithm not in ALGORITHMS:
            raise InputError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}.")
        if task_threads is not None and task_threads < 1:
            raise InputError(f"task_threads must be at least 1, got {task_threads}.")
        self.model, self.algorithm, self.inner_lr, self.steps = model, algorithm, inner_lr, steps
        self.vectorize = vectorize
        use_batch_statistics(model, vmap_safe=vectorize)
        if algorithm == "maml":
            allow_second_order(model)
        self.head = classification_head_name(model)
        self.task_threads = task_threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._replicas = threading.local()

    def threads_for(self, num_tasks: int) -> int:
        """How many tasks of this meta-batch run at once (1: the plain task loop)."""
        if self.vectorize or self.algorithm not in ("maml", "fomaml") or num_tasks < 2:
            return 1
        on_cpu = all(p.device.type == "cpu" for p in self.model.parameters())
        wanted = self.task_threads if self.task_threads is not None else (torch.get_num_threads() if on_cpu else 1)
        return max(1, min(wanted, num_tasks))

    def _adapt(self, loss_of: Callable, params: dict, steps: int, second_order: bool) -> dict:
        """`steps` gradient steps of loss_of(params) from params; differentiable through them if second_order.

        The inner gradient is `torch.func.grad` under vmap and `torch.autograd.grad` otherwise (the same numbers;
        functorch's transforms are not thread-safe, and the task threads need the latter)."""
        for _ in range(steps):
            if self.vectorize:
                grads = grad(loss_of)(params)
                if not second_order:
                    grads = {k: g.detach() for k, g in grads.items()}
            else:
                names = [k for k, p in params.items() if p.requires_grad]
                with torch.enable_grad():
                    values = torch.autograd.grad(
                        loss_of(params),
                        [params[k] for k in names],
                        create_graph=second_order,
                        allow_unused=True,
                        materialize_grads=True,
                    )
                grads = dict(zip(names, values))
            params = {k: p - self.inner_lr * grads[k] if k in grads else p for k, p in params.items()}
        return params

    def task_loss(
        self, x_s, y_s, x_q, y_q, steps: int | None = None, create_graph: bool = True
    ) -> tuple[torch.Tensor, float]:
        """(meta-loss on the query after adapting on the support, query accuracy). create_graph=False at test time."""
        steps = self.steps if steps is None else steps
        params = dict(self.model.named_parameters())
        if self.algorithm == "protonet":
            phi_s, phi_q = features(self.model, x_s), features(self.model, x_q)
            ways = int(y_s.max()) + 1
            prototypes = torch.stack([phi_s[y_s == k].mean(0) for k in range(ways)])  # (N, F)
            logits = -torch.cdist(phi_q, prototypes).pow(2)
        elif self.algorithm == "anil":
            prefix = self.head + "."
            head_params = {k[len(prefix) :]: p for k, p in params.items() if k.startswith(prefix)}
            head = classification_head(self.model)
            phi_s, phi_q = features(self.model, x_s), features(self.model, x_q)

            def support_loss(p):
                return F.cross_entropy(functional_call(head, p, (phi_s,)), y_s)

            adapted = self._adapt(support_loss, head_params, steps, second_order=create_graph)
            logits = functional_call(head, adapted, (phi_q,))
        else:

            def support_loss(p):
                return F.cross_entropy(_logits(forward(self.model, x_s, p)), y_s)

            second_order = create_graph and self.algorithm == "maml"
            adapted = self._adapt(support_loss, params, steps, second_order=second_order)
            logits = _logits(forward(self.model, x_q, adapted))
        loss = F.cross_entropy(logits, y_q)
        accuracy = (logits.argmax(-1) == y_q).float().mean().item()
        return loss, accuracy

    def meta_backward(self, tasks: list[tuple]) -> tuple[float, list[float]]:
        """Accumulate into `.grad` the meta-gradient of the mean meta-loss over a meta-batch of equally shaped
        tasks (x_s, y_s, x_q, y_q); return (mean meta-loss, query accuracies).

        With vectorize, MAML and FOMAML run all tasks at once with `torch.func.vmap`, the outer gradient taken by
        `torch.func.grad` as well; on CPU they run in task threads (see `task_threads`); otherwise (and for ANIL
        and ProtoNet) tasks are backpropagated one by one.
        """
        threads = self.threads_for(len(tasks))
        if threads > 1:
            return self._threaded_meta_backward(tasks, threads)
        if not self.vectorize or self.algorithm not in ("maml", "fomaml") or len(tasks) == 1:
            return loop_meta_backward(self, tasks)
        params = {k: p.detach() for k, p in self.model.named_parameters()}
        second_order = self.algorithm == "maml"

        def one_task(theta, x_s, y_s, x_q, y_q):
            def support_loss(p):
                return F.cross_entropy(_logits(forward(self.model, x_s, p)), y_s)

            adapted = self._adapt(support_loss, theta, self.steps, second_order=second_order)
            logits = _logits(forward(self.model, x_q, adapted))
            return F.cross_entropy(logits, y_q), (logits.argmax(-1) == y_q).float().mean()

        def meta_loss(theta, *batch):
            losses, accuracies = vmap(one_task, in_dims=(None, 0, 0, 0, 0))(theta, *batch)
            return losses.mean(), (losses, accuracies)

        # the outer gradient is taken by torch.func too: regular autograd through vmap(grad(...)) drops the
        # second-order terms (tested against the task loop)
        if any(len({task[i].shape for task in tasks}) > 1 for i in (0, 2)):  # x_s, x_q
            raise InputError(
                "vectorize needs equally shaped tasks (image episodes); text episodes, cut to their own length, run "
                "in the task loop (vectorize=False)."
            )
        batch = [torch.stack(parts) for parts in zip(*tasks)]
        meta_grads, (losses, accuracies) = grad(meta_loss, has_aux=True)(params, *batch)
        for name, p in self.model.named_parameters():
            p.grad = meta_grads[name] if p.grad is None else p.grad + meta_grads[name]
        return losses.mean().item(), accuracies.tolist()

    def _threaded_meta_backward(self, tasks: list[tuple], threads: int) -> tuple[float, list[float]]:
        """MAML / FOMAML tasks in `threads` worker threads, one intra-op thread each.

        Each worker owns a structural copy of the model (functional_call swaps a module's tensors while it
        runs, so two threads must not share one) and is handed the model's own parameters, so the graph of
        every task ends at the same leaves. Workers return d loss_t / d theta with torch.autograd.grad; the
        main thread adds them up in task order (deterministic) into `.grad`."""
        if self._pool is None or self._pool_size != threads:
            if self._pool is not None:
                self._pool.shutdown()
            self._replicas, self._pool_size = threading.local(), threads
            self._pool = ThreadPoolExecutor(
                threads, thread_name_prefix="hfssl-task", initializer=torch.set_num_threads, initargs=(1,)
            )
        theta = dict(self.model.named_parameters())
        buffers = dict(self.model.named_buffers())
        trainable = [k for k, p in theta.items() if p.requires_grad]
        intra_op = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            results = list(self._pool.map(lambda task: self._task_gradients(task, theta, buffers, trainable), tasks))
        finally:
            torch.set_num_threads(intra_op)
        for i, name in enumerate(trainable):
            g = sum(r[0][i] for r in results) / len(tasks)
            p = theta[name]
            p.grad = g if p.grad is None else p.grad + g
        losses = [r[1] for r in results]
        return sum(losses) / len(losses), [r[2] for r in results]

    def _task_gradients(
        self, task: tuple, theta: dict, buffers: dict, trainable: list[str]
    ) -> tuple[tuple, float, float]:
        """(d meta-loss / d theta for the trainable names, meta-loss, query accuracy) of one task, in a worker."""
        replica = getattr(self._replicas, "model", None)
        if replica is None:
            replica = self._replicas.model = copy.deepcopy(self.model)
        replica.train(self.model.training)
        x_s, y_s, x_q, y_q = task

        def support_loss(p):
            return F.cross_entropy(_logits(forward(replica, x_s, {**buffers, **p})), y_s)

        with torch.enable_grad():
            adapted = self._adapt(support_loss, theta, self.steps, second_order=self.algorithm == "maml")
            logits = _logits(forward(replica, x_q, {**buffers, **adapted}))
            loss = F.cross_entropy(logits, y_q)
            grads = torch.autograd.grad(loss, [theta[k] for k in trainable], allow_unused=True, materialize_grads=True)
        return grads, loss.item(), (logits.argmax(-1) == y_q).float().mean().item()


def loop_meta_backward(learner, tasks: list[tuple]) -> tuple[float, list[float]]:
    """Task by task: backward of loss_t / T frees each task's graph before the next one is built."""
    losses, accuracies = [], []
    for task in tasks:
        loss, accuracy = learner.task_loss(*task)
        (loss / len(tasks)).backward()
        losses.append(loss.item())
        accuracies.append(accuracy)
    return sum(losses) / len(losses), accuracies
