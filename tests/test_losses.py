"""NT-Xent and CLIP's image-text loss against slow references written from their papers, and their distributed
(gather) paths."""

import math

import numpy as np
import pytest
import torch

from hfssl import distributed
from hfssl.losses import ImageTextContrastiveLoss, NTXentLoss
from tests.conftest import why_failed


def nt_xent_reference(z_a: np.ndarray, z_b: np.ndarray, tau: float) -> float:
    """Chen et al. 2020, eq. (1), literally: views interleaved as 2k-1, 2k; loop over every anchor."""
    n = z_a.shape[0]
    z = np.empty((2 * n, z_a.shape[1]))
    z[0::2], z[1::2] = z_a, z_b  # z_{2k-1}, z_{2k} are the two views of image k

    def sim(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    def loss_ij(i, j):  # the paper's l(i, j)
        denominator = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        return -math.log(math.exp(sim(z[i], z[j]) / tau) / denominator)

    return sum(loss_ij(2 * k, 2 * k + 1) + loss_ij(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("batch", [2, 5, 16])
@pytest.mark.parametrize("dim", [3, 32])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_paper_reference(batch, dim, temperature):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z_a, z_b = (
        torch.randn(batch, dim, generator=g, dtype=torch.float64),
        torch.randn(batch, dim, generator=g, dtype=torch.float64),
    )
    ours = NTXentLoss(temperature)(z_a, z_b).item()
    assert ours == pytest.approx(nt_xent_reference(z_a.numpy(), z_b.numpy(), temperature), rel=1e-9, abs=1e-9)


def test_perfect_pairs_give_low_loss_and_random_pairs_high():
    z = torch.nn.functional.one_hot(torch.arange(8), 8).double() * 10
    assert NTXentLoss(0.1)(z, z).item() < 1e-3  # each view identical to its partner, orthogonal to the rest
    g = torch.Generator().manual_seed(0)
    random = NTXentLoss(0.5)(torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g)).item()
    assert random == pytest.approx(math.log(2 * 64 - 1), rel=0.05)  # chance level: log(2N - 1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="no negatives"):
        NTXentLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"same shape|one shape"):
        NTXentLoss()(torch.randn(3, 4), torch.randn(2, 4))


def test_gather_path_equals_global_batch(monkeypatch):
    """Two simulated processes (monkeypatched collective): mean of their losses and their summed gradients
    equal the one-process loss and gradients on the global batch."""
    g = torch.Generator().manual_seed(0)
    world, B, D = 2, 4, 8
    z_a = torch.randn(world * B, D, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(world * B, D, generator=g, dtype=torch.float64, requires_grad=True)
    global_loss = NTXentLoss(0.3)(z_a, z_b)
    global_grad_a, global_grad_b = torch.autograd.grad(global_loss, (z_a, z_b))

    loss_fn = NTXentLoss(0.3, gather_distributed=True)
    total, shards = 0.0, {}
    for r in range(world):
        # every "process" holds its own leaf tensors; the gather returns all shards, its own with grad
        leaves_a = [z_a[i * B : (i + 1) * B].detach().clone().requires_grad_(True) for i in range(world)]
        leaves_b = [z_b[i * B : (i + 1) * B].detach().clone().requires_grad_(True) for i in range(world)]
        normalized = {}

        def fake_gather(t, _r=r, _la=leaves_a, _lb=leaves_b, normalized=normalized):
            which = "a" if "a" not in normalized else "b"
            normalized[which] = True
            others = [torch.nn.functional.normalize(x, dim=1) for x in (_la if which == "a" else _lb)]
            others[_r] = t  # this process's own (normalised) slice keeps its graph
            return torch.cat(others)

        monkeypatch.setattr(distributed, "is_distributed", lambda: True)
        monkeypatch.setattr(distributed, "rank", lambda _r=r: _r)
        monkeypatch.setattr(distributed, "all_gather_with_grad", fake_gather)
        loss = loss_fn(leaves_a[r], leaves_b[r])
        # the real collective's backward sums every process's gradient for a slice onto its owner
        loss.backward()
        total += loss.item() / world
        for i in range(world):
            for name, leaves in (("a", leaves_a), ("b", leaves_b)):
                if leaves[i].grad is not None:
                    shards[(name, i)] = shards.get((name, i), 0) + leaves[i].grad / world  # DDP averages
    assert total == pytest.approx(global_loss.item(), rel=1e-12)
    grad_a = torch.cat([shards[("a", i)] for i in range(world)])
    grad_b = torch.cat([shards[("b", i)] for i in range(world)])
    torch.testing.assert_close(grad_a, global_grad_a)
    torch.testing.assert_close(grad_b, global_grad_b)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    out = tmp_path / "result.json"
    result = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            str(root / "tests" / "helpers" / "ntxent_two_process.py"),
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, why_failed(result, 3000)
    results = json.loads(out.read_text())
    assert set(results) == {"nt_xent", "image_text"}
    for r in results.values():
        assert r["world_size"] == 2
        assert r["loss"] == pytest.approx(r["reference_loss"], rel=1e-12)
        assert r["max_grad"] > 1e-3 and r["max_grad_diff"] < 1e-12
        assert r["scale_grad"] == pytest.approx(r["reference_scale_grad"], rel=1e-10, abs=1e-14)
    assert abs(results["image_text"]["reference_scale_grad"]) > 1e-4  # the learned scale gets a gradient


def clip_reference(image: np.ndarray, text: np.ndarray, t: float) -> float:
    """Radford et al. 2021, Figure 3's pseudo-code, literally: l2-normalise, scaled cosine logits, cross-entropy
    over axis 0 and over axis 1 with labels arange(n), averaged; with loops over every row and column."""
    n = image.shape[0]
    i_e = image / np.linalg.norm(image, axis=1, keepdims=True)
    t_e = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = (i_e @ t_e.T) * math.exp(t)  # [n, n]

    def cross_entropy(rows: np.ndarray) -> float:  # mean over rows of -log softmax(row)[its label]
        return sum(-rows[k, k] + math.log(sum(math.exp(x) for x in rows[k])) for k in range(n)) / n

    loss_i = cross_entropy(logits)  # each image row against the n texts
    loss_t = cross_entropy(logits.T)  # each text against the n images
    return (loss_i + loss_t) / 2


@pytest.mark.parametrize("batch", [2, 7])
@pytest.mark.parametrize("t", [0.0, math.log(1 / 0.07), math.log(100)])
def test_the_image_text_loss_matches_the_clip_paper(batch, t):
    g = torch.Generator().manual_seed(batch)
    image, text = (
        torch.randn(batch, 6, generator=g, dtype=torch.float64),
        torch.randn(batch, 6, generator=g, dtype=torch.float64),
    )
    ours = ImageTextContrastiveLoss()(image, text, torch.tensor(t, dtype=torch.float64).exp()).item()
    assert ours == pytest.approx(clip_reference(image.numpy(), text.numpy(), t), rel=1e-10)


def test_the_image_text_loss_matches_open_clip():
    open_clip = pytest.importorskip(
        "open_clip", reason="open_clip is a benchmark-only reference: pip install -e '.[bench]'"
    )
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    text = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    scale = torch.tensor(14.3)
    theirs = open_clip.ClipLoss()(image, text, scale)
    torch.testing.assert_close(ImageTextContrastiveLoss()(image, text, scale), theirs)


def test_the_image_text_loss_refuses_what_has_no_negatives_or_no_pairs():
    with pytest.raises(ValueError, match="at least 2 pairs"):
        ImageTextContrastiveLoss()(torch.randn(1, 4), torch.randn(1, 4), 10.0)
    with pytest.raises(ValueError, match="two \\(B, D\\) tensors of one shape"):
        ImageTextContrastiveLoss()(torch.randn(3, 4), torch.randn(2, 4), 10.0)
