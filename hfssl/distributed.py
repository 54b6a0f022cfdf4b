"""The only place in hfssl that talks to torch.distributed: rank, world size, all-gather with gradients.

Everything here degrades to the single-process answer when no process group is initialised, so library
code calls these functions unconditionally and runs unchanged on one CPU.
"""

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (B, ...) from every process along dim 0 -> (world_size * B, ...), rank order.

    Unlike `accelerator.gather`, gradients flow back: the backward pass sums, onto each process's own
    slice, the gradients that every process computed for it. All processes must pass the same shape.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather  # autograd-aware collective

    return torch.cat(all_gather(tensor.contiguous()), dim=0)
