"""Gradient cache: a contrastive loss over a batch larger than memory (Gao et al. 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", https://arxiv.org/abs/2101.06983).

A contrastive loss couples every item of the batch, so plain gradient accumulation (a loss per micro-batch) would
contrast each item against its own micro-batch only. With k micro-batches x_1 .. x_k:

1. embed every micro-batch without a graph: z_i = f_theta(x_i), no activations kept;
2. compute the loss L(z_1, ..., z_k) over the whole accumulated batch with the z as leaves, and its gradients
   g_i = dL/dz_i (the loss gathers the z of every process, so negatives are global);
3. for each micro-batch again, z_i = f_theta(x_i) with a graph, and backpropagate the surrogate <z_i, g_i>:
   its gradient is g_i^T dz_i/dtheta, and the sum over i is exactly dL/dtheta.

Memory is that of one micro-batch plus the (N, D) embeddings; compute is one extra forward pass per micro-batch
(in theory about 4/3 the step time of one big batch, whose backward costs ~2 forwards; measured 1.18-1.25x on CPU,
docs/scaling-out.md). The forward of step 3 replays step 1's random draws (dropout): the global RNG state is saved
before each micro-batch's first pass and restored before its second. BatchNorm normalises with per-micro-batch
statistics in both passes (they are not the global batch's: with accumulation, BN sees B/k items), and its running
statistics are updated once per micro-batch (step 1's updates are undone).
"""

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn


def _buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in model.buffers()]


def _restore_buffers(model: nn.Module, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for buffer, value in zip(model.buffers(), saved):
            buffer.copy_(value)


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.random.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.random.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def gradient_cache_step(
    model: nn.Module,
    inputs: Sequence,
    embed: Callable[[nn.Module, object], tuple[torch.Tensor, ...]],
    loss_fn: Callable[..., torch.Tensor],
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    micro_step: Callable[[int], contextlib.AbstractContextManager] = lambda i: contextlib.nullcontext(),
) -> torch.Tensor:
    """One optimizer step's gradients for `loss_fn` over all of `inputs` (the micro-batches), by gradient cache.

    embed(model, x) -> a tuple of tensors, each (b_i, D) (e.g. the projections of view 1 and view 2);
    loss_fn(*tensors) -> scalar, called with each tensor concatenated over the micro-batches, (sum b_i, D);
    backward(surrogate) backpropagates a micro-batch's surrogate (e.g. `accelerator.backward`), inside
    micro_step(i), the context of micro-batch i's second forward and backward (e.g. `accelerator.accumulate`, which
    skips the gradient all-reduce until the last one).
    Returns the loss (detached). Gradients accumulate into the parameters' .grad, as k backward passes would.
    """
    states, cached = [], []
    buffers = _buffers(model)
    with torch.no_grad():
        for x in inputs:  # 1. embeddings without a graph
            states.append(_rng_state())
            cached.append(tuple(t.detach() for t in embed(model, x)))
    _restore_buffers(model, buffers)  # BatchNorm's running statistics: updated in pass 3 only
    after_first_pass = _rng_state()
    leaves = [torch.cat([c[j] for c in cached]).requires_grad_() for j in range(len(cached[0]))]
    loss = loss_fn(*leaves)  # 2. the loss over the whole accumulated batch, gradients to the embeddings
    grads = torch.autograd.grad(loss, leaves)
    sizes = [c[0].shape[0] for c in cached]
    grad_chunks = [g.split(sizes) for g in grads]
    for i, x in enumerate(inputs):  # 3. backpropagate each micro-batch with its cached embedding gradients
        _set_rng_state(states[i])
        with micro_step(i):
            z = embed(model, x)
            backward(sum((t * g[i]).sum() for t, g in zip(z, grad_chunks)))
    _set_rng_state(after_first_pass)
    return loss.detach()
