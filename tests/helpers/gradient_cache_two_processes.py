"""Run under `accelerate launch --multi_gpu --num_processes 2 THIS OUT_DIR`: each process takes its 4 of 8 images as 2
micro-batches of 2, computes gradients by gradient cache through a DDP-wrapped model (NT-Xent gathering negatives
from both processes), and compares them with one process's gradients on all 8 images. Writes OUT_DIR/report.json."""

import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelerate import Accelerator

from hfssl.losses import NTXentLoss
from hfssl.training.gradient_cache import gradient_cache_step
from tests.training.test_gradient_cache import _embed, _grads, _tiny_simclr


def main(out: Path) -> None:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(1)
    views = torch.randn(2, 8, 3, 8, 8, dtype=torch.float64)

    reference = _tiny_simclr()
    big = NTXentLoss(0.5)(*_embed(reference, (views[0], views[1])))
    big.backward()
    expected = _grads(reference)

    model = accelerator.prepare(_tiny_simclr())
    mine = views[:, 4 * rank : 4 * rank + 4]
    micro = [(mine[0][i : i + 2], mine[1][i : i + 2]) for i in (0, 2)]
    loss = gradient_cache_step(
        model,
        micro,
        _embed,
        NTXentLoss(0.5, gather_distributed=True),
        backward=accelerator.backward,
        micro_step=lambda i: accelerator.no_sync(model) if i < len(micro) - 1 else contextlib.nullcontext(),
    )
    got = _grads(accelerator.unwrap_model(model))  # all-reduced (averaged) by DDP on the last micro-batch
    loss = accelerator.reduce(loss, reduction="mean")
    diff = max((got[n] - expected[n]).abs().max().item() for n in expected)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        report = {
            "world_size": world,
            "compared": len(expected),
            "max_abs_diff": diff,
            "loss_diff": abs(loss.item() - big.item()),
        }
        (out / "report.json").write_text(json.dumps(report))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
