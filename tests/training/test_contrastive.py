"""`scripts/pretrain.py --objective contrastive`: smoke runs (1 and 2 processes), resume, bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel, pipeline

from tests.conftest import REPO, import_script, why_failed, with_flags

SCRIPT = REPO / "scripts" / "pretrain.py"
pretrain = import_script("pretrain")

TINY = [
    "--objective",
    "contrastive",
    "--image_size",
    "8",
    "--resnet_layers",
    "1",
    "1",
    "--resnet_widths",
    "8",
    "16",
    "--projection_dims",
    "32",
    "16",
    "--per_device_train_batch_size",
    "16",
    "--report_to",
    "none",
    "--logging_steps",
    "1",
    "--knn_k",
    "5",
    "20",
    "--knn_bank_size",
    "300",
    "--eval_split_fraction",
    "0.05",
]


def _args(out, *extra):
    return with_flags(["--output_dir", str(out), *TINY], *extra)


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def test_smoke_run_on_builtin_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain.main(_args(out, "--max_steps", "6", "--eval_steps", "3")) == 0
    assert f"Model saved to {out}" in capsys.readouterr().out
    model = AutoModel.from_pretrained(out)
    assert model.config.model_type == "hfssl_simclr" and model.config.id2label[3] == "3"
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.size == {"height": 8, "width": 8}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"knn_top1_k5", "knn_top1_k20"} <= set(metrics["final"])
    assert 0.0 <= metrics["final"]["knn_top1_k5"] <= 1.0
    knn_logs = [e for e in metrics["log_history"] if "knn_top1_k5" in e]
    assert [e["step"] for e in knn_logs] == [3, 6]  # every --eval_steps, and at the end
    assert pipeline("image-feature-extraction", model=str(out))  # loads with its processor


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--gradient_accumulation_steps", "2", "--per_device_train_batch_size", "1"],
            "per-device batch of at least 2",
        ),
        (["--per_device_train_batch_size", "1"], "no negatives"),
    ],
)
def test_refused_settings(tmp_path, capsys, extra, message):
    assert pretrain.main(_args(tmp_path / "o", "--max_steps", "2", *extra)) == 2
    assert message in capsys.readouterr().err


def test_dataset_without_image_column(tmp_path, capsys):
    path = tmp_path / "text.parquet"
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet(path)
    assert pretrain.main(_args(tmp_path / "o", "--dataset", str(path), "--max_steps", "2")) == 2
    err = capsys.readouterr().err
    assert "no image column 'image'" in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_final_weights(tmp_path):
    common = ["--max_steps", "6", "--save_steps", "3", "--eval_steps", "2"]  # evaluations before the checkpoint too

    def run(out, *extra, crash_at=None):
        launcher = [str(REPO / "tests" / "helpers" / "crash_at_step.py"), str(crash_at)] if crash_at else []
        return subprocess.run(
            [sys.executable, *launcher, str(SCRIPT), *_args(out, *common, *extra)],
            env=_env(),
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    assert run(tmp_path / "a").returncode == 0
    crashed = run(tmp_path / "b", crash_at=5)
    assert crashed.returncode == 17, why_failed(crashed)
    resumed = run(tmp_path / "b", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, why_failed(resumed)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in a:  # augmentation randomness and BatchNorm statistics were restored too
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_two_processes_run_and_gather_negatives(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    out = tmp_path / "two"
    result = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            str(SCRIPT),
            *_args(out, "--max_steps", "4", "--per_device_train_batch_size", "8"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, why_failed(result, 3000)
    assert json.loads((out / "run_args.json").read_text())["num_processes"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert len([e for e in metrics["log_history"] if "loss" in e]) == 4
    assert "knn_top1_k5" in metrics["final"]


def test_bf16_mixed_precision_runs(tmp_path):
    out = tmp_path / "run"
    assert pretrain.main(_args(out, "--max_steps", "2", "--mixed_precision", "bf16", "--eval_steps", "0")) == 0
    assert (out / "model.safetensors").is_file()
