"""Run under `accelerate launch --multi_gpu --num_processes 2`: NT-Xent with the real gloo all-gather.

Each process takes its shard of one seeded global batch, computes the gathered loss and backpropagates.
Process r's gradient is sum_r' dL_r'/dz_r (the collective's backward); data-parallel training divides by
the world size, which must give the one-process gradient of the global batch. Writes the comparison to
the JSON file named on the command line.
"""

import json
import sys

import torch
from accelerate import Accelerator

from hfssl import distributed
from hfssl.losses import NTXentLoss


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    world, rank = distributed.world_size(), distributed.rank()
    B, D = 3, 5
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(world * B, D, generator=g, dtype=torch.float64)
    z_b = torch.randn(world * B, D, generator=g, dtype=torch.float64)

    reference_a, reference_b = z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)
    reference = NTXentLoss(0.2)(reference_a, reference_b)
    reference.backward()

    mine_a = z_a[rank * B : (rank + 1) * B].clone().requires_grad_(True)
    mine_b = z_b[rank * B : (rank + 1) * B].clone().requires_grad_(True)
    loss = NTXentLoss(0.2, gather_distributed=True)(mine_a, mine_b)
    loss.backward()
    mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
    grads = torch.cat([mine_a.grad, mine_b.grad], dim=1) / world  # what DDP's averaging makes of it
    all_grads = accelerator.gather(grads)  # (world * B, 2D), rank order
    expected = torch.cat([reference_a.grad, reference_b.grad], dim=1)
    if accelerator.is_main_process:
        with open(out_path, "w") as f:
            json.dump(
                {
                    "world_size": world,
                    "loss": mean_loss,
                    "reference_loss": reference.item(),
                    "max_grad_diff": (all_grads - expected).abs().max().item(),
                    "max_grad": expected.abs().max().item(),
                },
                f,
            )
    # Tear the gloo group down before interpreter exit: leaving it to destructors aborted rank 0 in CI
    # ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
