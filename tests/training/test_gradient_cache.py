"""Gradient cache (hfssl.training.gradient_cache): k micro-batches of B/k give the loss and gradients of one batch of B,
in float64, on one process and across 2 gloo processes; and `--gradient_accumulation_steps` for the contrastive
objective end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hfssl.losses import NTXentLoss
from hfssl.models.encoders import SimCLRConfig, SimCLRModel
from hfssl.training.gradient_cache import gradient_cache_step
from tests.conftest import REPO, import_script, why_failed

HELPER = REPO / "tests" / "helpers" / "gradient_cache_two_processes.py"


def _tiny_simclr(dropout: bool = False) -> nn.Module:
    torch.manual_seed(0)
    config = SimCLRConfig(image_size=8, resnet_layers=[1, 1], resnet_widths=[4, 8], projection_dims=[16, 8])
    model = SimCLRModel(config).double()
    if dropout:  # a random op in the forward: the second pass must replay the first's draws
        model.projection_head = nn.Sequential(nn.Dropout(0.3), model.projection_head)
    return model.eval()  # BatchNorm on running statistics: per-micro-batch statistics would differ by design


def _embed(model, pair):
    return model(pixel_values=pair[0], pixel_values_2=pair[1], return_loss=False).projections.chunk(2)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_k_micro_batches_give_the_gradients_of_one_big_batch():
    torch.manual_seed(1)
    views = torch.randn(2, 8, 3, 8, 8, dtype=torch.float64)  # 8 images, two views each
    loss_fn = NTXentLoss(0.5)
    model = _tiny_simclr()
    big = loss_fn(*_embed(model, (views[0], views[1])))
    big.backward()
    expected = _grads(model)

    model = _tiny_simclr()
    micro = [(views[0][i : i + 2], views[1][i : i + 2]) for i in range(0, 8, 2)]  # 4 micro-batches of 2
    loss = gradient_cache_step(model, micro, _embed, loss_fn)
    got = _grads(model)
    torch.testing.assert_close(loss, big.detach(), rtol=1e-12, atol=1e-12)
    assert expected.keys() == got.keys() and len(got) > 4
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-12, msg=name)


def test_the_second_pass_replays_the_first_passs_random_draws():
    """With dropout, the surrogate's gradient equals the gradient of the loss computed in the first pass: the
    embeddings of pass 1 and pass 3 are the same draw."""
    torch.manual_seed(1)
    views = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64)
    loss_fn = NTXentLoss(0.5)
    model = _tiny_simclr(dropout=True)
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    loss = gradient_cache_step(model, [(views[0], views[1])], _embed, loss_fn)
    got = _grads(model)
    model = _tiny_simclr(dropout=True)
    torch.random.set_rng_state(state)
    direct = loss_fn(*_embed(model, (views[0], views[1])))  # one pass, the same draw as the first pass above
    direct.backward()
    torch.testing.assert_close(loss, direct.detach(), rtol=1e-12, atol=1e-12)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(got[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_batchnorm_running_statistics_are_updated_once_per_micro_batch():
    torch.manual_seed(1)
    views = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64)
    model = _tiny_simclr().train()
    reference = _tiny_simclr().train()
    gradient_cache_step(model, [(views[0][:2], views[1][:2]), (views[0][2:], views[1][2:])], _embed, NTXentLoss(0.5))
    with torch.no_grad():
        for i in (0, 2):  # what two plain forward passes of the micro-batches do to the running statistics
            _embed(reference, (views[0][i : i + 2], views[1][i : i + 2]))
    for (name, a), b in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.slow
def test_two_processes_with_accumulation_give_the_gradients_of_one_big_batch(tmp_path):
    """2 gloo processes x 2 micro-batches x 2 images = one process with a batch of 8 (float64)."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    out = tmp_path / "grads"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", str(HELPER), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, why_failed(result, 3000)
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["compared"] > 4
    assert report["max_abs_diff"] < 1e-10 and report["loss_diff"] < 1e-12


def test_contrastive_pretraining_accumulates_with_the_gradient_cache(tmp_path):
    out = tmp_path / "simclr"
    flags = (
        "--image_size 8 --resnet_layers 1 1 --resnet_widths 8 8 --projection_dims 8 --max_steps 3 --report_to none "
        "--per_device_train_batch_size 4 --gradient_accumulation_steps 2 --knn_bank_size 50 --eval_steps 0 "
        "--logging_steps 1"
    )
    assert import_script("pretrain").main(["--objective", "contrastive", "--output_dir", str(out), *flags.split()]) == 0
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    losses = [e["loss"] for e in history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    # 8 images a step in two views: the loss starts near log(2 * 8 - 1), the uniform guess among 15 candidates
    assert abs(losses[0] - torch.log(torch.tensor(15.0)).item()) < 0.6
