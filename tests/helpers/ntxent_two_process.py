"""Run under `accelerate launch --multi_gpu --num_processes 2`: the contrastive losses (NT-Xent, CLIP's image-text
loss) with the real gloo all-gather.

Each process takes its shard of one seeded global batch, computes the gathered loss and backpropagates.
Process r's gradient is sum_r' dL_r'/dz_r (the collective's backward); data-parallel training divides by
the world size, which must give the one-process gradient of the global batch (the CLIP loss's learned scale too:
each process's gradient for it, averaged). Writes the comparison, per loss, to the JSON file named on the command
line.
"""

import json
import sys

import torch
from accelerate import Accelerator

from hfssl import distributed
from hfssl.losses import ImageTextContrastiveLoss, NTXentLoss

LOSSES = {
    "nt_xent": lambda gather: lambda a, b, s: NTXentLoss(0.2, gather_distributed=gather)(a, b),
    "image_text": lambda gather: ImageTextContrastiveLoss(gather_distributed=gather),
}


def compare(name: str, accelerator: Accelerator) -> dict:
    world, rank = distributed.world_size(), distributed.rank()
    B, D = 3, 5
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(world * B, D, generator=g, dtype=torch.float64)
    z_b = torch.randn(world * B, D, generator=g, dtype=torch.float64)
    scale = torch.tensor(7.0, dtype=torch.float64)

    reference_a, reference_b = z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)
    reference_scale = scale.clone().requires_grad_(True)
    reference = LOSSES[name](False)(reference_a, reference_b, reference_scale)
    reference.backward()

    mine_a = z_a[rank * B : (rank + 1) * B].clone().requires_grad_(True)
    mine_b = z_b[rank * B : (rank + 1) * B].clone().requires_grad_(True)
    mine_scale = scale.clone().requires_grad_(True)
    loss = LOSSES[name](True)(mine_a, mine_b, mine_scale)
    loss.backward()
    mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
    grads = torch.cat([mine_a.grad, mine_b.grad], dim=1) / world  # what DDP's averaging makes of it
    all_grads = accelerator.gather(grads)  # (world * B, 2D), rank order
    expected = torch.cat([reference_a.grad, reference_b.grad], dim=1)
    scale_grad = mine_scale.grad if mine_scale.grad is not None else torch.zeros((), dtype=torch.float64)
    mean_scale_grad = accelerator.reduce(scale_grad, reduction="mean").item()
    reference_scale_grad = reference_scale.grad.item() if reference_scale.grad is not None else 0.0
    return {
        "world_size": world,
        "loss": mean_loss,
        "reference_loss": reference.item(),
        "max_grad_diff": (all_grads - expected).abs().max().item(),
        "max_grad": expected.abs().max().item(),
        "scale_grad": mean_scale_grad,
        "reference_scale_grad": reference_scale_grad,
    }


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    results = {name: compare(name, accelerator) for name in LOSSES}
    if accelerator.is_main_process:
        with open(out_path, "w") as f:
            json.dump(results, f)
    # Tear the gloo group down before interpreter exit: leaving it to destructors aborted rank 0 in CI
    # ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
