"""`scripts/pretrain.py --objective clip`: a tiny run into transformers' zero-shot pipeline, locked and cached towers,
gradient cache = one big batch, 2 processes = 1, resume after a kill, and bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, pipeline

from hfssl import DualEncoderModel
from tests.conftest import REPO, import_script, why_failed, with_flags
from tests.training.test_pretrain import CRASH_AT_STEP, SCRIPT, _env

pretrain = import_script("pretrain")
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"

TINY = [
    *"--objective clip --image_size 8 --resnet_layers 1 1 --resnet_widths 8 16 --projection_dim 16".split(),
    *"--per_device_train_batch_size 16 --report_to none --logging_steps 1 --eval_split_fraction 0.1".split(),
    *"--templates photo --max_steps 4 --eval_steps 2 --save_steps 0".split(),
]
# no BatchNorm (a ViT image tower) and no dropout in training (a locked, cached text tower), so that runs which split
# the batch differently (accumulation, processes) compute the same thing; one template: the caption is fixed
EXACT = [*"--backbone vit --augment false --lock_text_tower --learning_rate 1e-3".split()]


def _args(out, text_dir, *extra):
    return with_flags(["--output_dir", str(out), "--text_model_name_or_path", str(text_dir), *TINY], *extra)


def _weights(out) -> dict:
    return load_file(str(Path(out) / "model.safetensors"))


def test_a_tiny_run_serves_the_zero_shot_pipeline(tmp_path, bert_dir, capsys):
    out = tmp_path / "run"
    assert pretrain.main(_args(out, bert_dir, "--train_classes", *"0 1 2 3 4 5 6".split())) == 0
    assert "zero-shot-image-classification" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())["final"]
    assert {"zero_shot_top1", "zero_shot_top1_unseen", "zero_shot_top1_seen", "logit_scale"} <= set(metrics)
    assert 0 <= metrics["zero_shot_top1_unseen"] <= 1 and metrics["logit_scale"] > 1
    assert isinstance(AutoModel.from_pretrained(out), DualEncoderModel)
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    result = pipeline("zero-shot-image-classification", model=str(out))(image, candidate_labels=["7", "8", "9"])
    assert sorted(r["label"] for r in result) == ["7", "8", "9"]
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)


def test_locked_towers_keep_their_weights_and_never_run_with_gradients(tmp_path, bert_dir, simclr_dir, monkeypatch):
    """LiT (the image tower) and open_clip's --lock-text (the text tower) at once: both towers' outputs come from
    their caches in training, so neither tower runs with gradients enabled; only the projections and scale learn."""
    for tower in ("text_tower_features", "image_tower_features"):
        original = getattr(DualEncoderModel, tower)

        def guarded(self, *args, _original=original, _tower=tower, **kwargs):
            assert not torch.is_grad_enabled(), f"{_tower} ran in a training step"
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(DualEncoderModel, tower, guarded)
    out = tmp_path / "locked"
    flags = ["--lock_text_tower", "--lock_image_tower", "--image_model_name_or_path", str(simclr_dir)]
    assert pretrain.main(_args(out, bert_dir, *flags, "--resnet_widths", "8", "8")) == 0
    saved = _weights(out)
    for name, value in load_file(str(Path(bert_dir) / "model.safetensors")).items():
        torch.testing.assert_close(saved[f"text_encoder.{name}"], value, rtol=0, atol=0, msg=name)
    for name, value in load_file(str(Path(simclr_dir) / "model.safetensors")).items():
        if name.startswith("encoder."):
            torch.testing.assert_close(saved[f"image_encoder.{name}"], value, rtol=0, atol=0, msg=name)


def _losses(out) -> list[float]:
    return [e["loss"] for e in json.loads((Path(out) / "metrics.json").read_text())["log_history"] if "loss" in e]


def test_gradient_cache_equals_one_batch_twice_as_large(tmp_path, bert_dir):
    big, small = tmp_path / "big", tmp_path / "small"
    assert pretrain.main(_args(big, bert_dir, *EXACT, "--per_device_train_batch_size", "16")) == 0
    accumulated = ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]
    assert pretrain.main(_args(small, bert_dir, *EXACT, *accumulated)) == 0
    losses = _losses(big)
    assert len(losses) == 4 and losses[-1] < losses[0]  # it learns
    torch.testing.assert_close(torch.tensor(_losses(small)), torch.tensor(losses), rtol=1e-5, atol=1e-6)
    _assert_same_weights(_weights(small), _weights(big))


def _assert_same_weights(ours: dict, expected: dict) -> None:
    """Equal up to AdamW's reading of float noise: the attention key bias has a zero gradient (softmax ignores a
    shift shared by every key), and Adam turns the noise of a zero into steps of up to the learning rate; 1e-4 is a
    tenth of the 1e-3 one step may move a weight."""
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_global_batch(tmp_path, bert_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run(
        [sys.executable, str(SCRIPT), *_args(one, bert_dir, *EXACT, "--per_device_train_batch_size", "16")],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, why_failed(single)
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", str(SCRIPT)]
    double = subprocess.run(
        [*launch, *_args(two, bert_dir, *EXACT, "--per_device_train_batch_size", "8")],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert double.returncode == 0, why_failed(double, 3000)
    assert json.loads((two / "run_args.json").read_text())["num_processes"] == 2
    torch.testing.assert_close(torch.tensor(_losses(two)), torch.tensor(_losses(one)), rtol=1e-5, atol=1e-6)
    _assert_same_weights(_weights(two), _weights(one))


@pytest.mark.slow
def test_an_unlocked_text_tower_trains_on_two_processes(tmp_path, bert_dir):
    """Every trained parameter gets a gradient under DistributedDataParallel: BERT's pooler, which mean pooling never
    reads, is frozen (otherwise the reducer stops with "parameters that were not used in producing loss")."""
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", str(SCRIPT)]
    flags = ["--text_pooling", "mean", "--per_device_train_batch_size", "8", "--max_steps", "2"]
    result = subprocess.run(
        [*launch, *_args(tmp_path / "two", bert_dir, *flags)],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, why_failed(result, 3000)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_final_weights(tmp_path, bert_dir):
    """Augmentation, caption draws and the text tower's dropout all draw from the checkpointed random state."""
    common = ["--max_steps", "6", "--save_steps", "3", "--templates", "cifar"]

    def run(out, *extra, crash_at=None):
        launcher = [str(CRASH_AT_STEP), str(crash_at)] if crash_at else []
        return subprocess.run(
            [sys.executable, *launcher, str(SCRIPT), *_args(out, bert_dir, *common, *extra)],
            env=_env(),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
        )

    assert run(tmp_path / "a").returncode == 0
    crashed = run(tmp_path / "b", crash_at=5)
    assert crashed.returncode == 17, why_failed(crashed)
    resumed = run(tmp_path / "b", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, why_failed(resumed)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def _parquet(path: Path, captions=None, labels=(0, 1, 0, 1), corrupt=False) -> Path:
    image = Image.fromarray(np.full((8, 8, 3), 100, dtype=np.uint8))
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    good = buffer.getvalue()
    images = [{"bytes": b"not an image" if corrupt and i == 2 else good, "path": f"img{i}.png"} for i in range(4)]
    columns = {"image": images, "label": list(labels)}
    if captions is not None:
        columns["caption"] = captions
    datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image()).to_parquet(path)
    return path


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--per_device_train_batch_size", "1"], "no negatives"),
        (["--lock_text_tower", "--text_tower_init", "random"], "would freeze random weights"),
        (["--lock_image_tower"], "give one with --image_model_name_or_path"),
        (["--class_names", "zero"], "--class_names gives 1 names; built-in digits has 10 classes"),
        (["--class_names", *"a a b c d e f g h i".split()], "Class names must differ; given more than once: a"),
        (["--templates", "no-such-set"], "neither a template set"),
        (["--train_classes", "3", "eleven"], "--train_classes names eleven"),
        (["--logit_scale_init", "5"], "above its clamp of 100"),
    ],
)
def test_refused_settings_say_why_in_one_line(tmp_path, bert_dir, capsys, flags, message):
    out = tmp_path / "o"
    assert pretrain.main(_args(out, bert_dir, *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "data, flags, message",
    [
        ({}, ["--caption_column", "caption"], "has no caption column 'caption'"),
        ({"captions": ["a cat", "", "a dog", "a cat"]}, [], "column 'caption', row 2: no caption"),
        ({"corrupt": True}, [], "Corrupt or unreadable image"),
    ],
)
def test_bad_image_caption_data_is_named(tmp_path, bert_dir, capsys, data, flags, message):
    path = _parquet(tmp_path / "pairs.parquet", **data)
    out = tmp_path / "o"
    assert pretrain.main(_args(out, bert_dir, "--dataset", str(path), *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_a_text_tower_without_a_readable_width_is_one_error_line(tmp_path, bert_dir, capsys, monkeypatch):
    from hfssl.models.encoders import modeling_clip

    def unreadable(tower):
        raise ValueError(f"Cannot read the feature size of a {type(tower).__name__}")

    monkeypatch.setattr(modeling_clip, "tower_width", unreadable)
    assert pretrain.main(_args(tmp_path / "o", bert_dir)) == 2
    assert "error: Cannot read the feature size of a" in capsys.readouterr().err


@pytest.mark.parametrize(
    "scale, warned",
    [(1.2, "has collapsed toward 1"), (100.0, "sits at its clamp"), (14.3, None)],
)
def test_a_collapsed_or_clamped_scale_is_warned_about(caplog, scale, warned):
    from hfssl.training.clip import ClipObjective

    with caplog.at_level("WARNING", logger="hfssl.training.clip"):
        ClipObjective._check_scale(scale, 100.0)
    if warned is None:
        assert not caplog.records
    else:
        assert len(caplog.records) == 1 and warned in caplog.records[0].getMessage()


def test_renamed_classes_choose_the_training_classes_and_the_unseen_ones(tmp_path, bert_dir):
    words = "zero one two three four five six seven eight nine".split()
    out = tmp_path / "words"
    flags = ["--class_names", *words, "--train_classes", *words[:7]]
    assert pretrain.main(_args(out, bert_dir, *flags, "--max_steps", "2")) == 0
    metrics = json.loads((out / "metrics.json").read_text())["final"]
    assert {"zero_shot_top1_unseen", "zero_shot_top1_seen"} <= set(metrics)


def test_a_separate_held_out_set_is_scored_by_class_name(tmp_path, bert_dir):
    """Its labels are matched to the training classes by name, whatever order its own label column has."""
    from accelerate import Accelerator

    from hfssl.data.vision import load_images
    from hfssl.training.arguments import parse_pretrain_args
    from hfssl.training.clip import ClipObjective

    path = _parquet(tmp_path / "held.parquet", labels=("7", "3", "7", "3"))  # string labels: its names are ["3", "7"]
    objective = ClipObjective(parse_pretrain_args(_args(tmp_path / "o", bert_dir, "--eval_dataset", str(path))))
    _, held_out = objective._data(Accelerator(cpu=True))
    assert held_out is not None and held_out.label_names == [str(i) for i in range(10)]
    assert held_out.labels.tolist() == [7, 3, 7, 3]
    assert load_images(str(path), image_size=8).label_names == ["3", "7"]
