"""scripts/meta_train.py end to end on a tiny zip of images: metrics, a loadable model, exact resume."""

import io
import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import REPO, TINY_META_FLAGS, import_script, why_failed, with_flags

TINY = [*TINY_META_FLAGS, *"--eval_steps 2 --val_episodes 3 --test_episodes 4".split()]


@pytest.fixture
def glyph_zip(tmp_path):
    """An Omniglot-shaped archive: root/alphabet/character/*.png, 15 characters x 4 drawings of 16x16."""
    path = tmp_path / "glyphs.zip"
    g = torch.Generator().manual_seed(0)
    with zipfile.ZipFile(path, "w") as archive:
        for c in range(15):
            base = torch.rand(16, 16, generator=g) > 0.5
            for d in range(4):
                noisy = base ^ (torch.rand(16, 16, generator=g) > 0.9)
                buffer = io.BytesIO()
                Image.fromarray((noisy.numpy() * 255).astype("uint8")).save(buffer, format="PNG")
                archive.writestr(f"root/alpha{c // 5}/char{c:02d}/{d}.png", buffer.getvalue())
    return path


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "protonet"])
def test_meta_train_saves_model_and_metrics(glyph_zip, tmp_path, monkeypatch, algorithm, capsys):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / algorithm
    code = import_script("meta_train").main(
        ["--algorithm", algorithm, "--dataset", str(glyph_zip), "--max_steps", "3", "--output_dir", str(out), *TINY]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["meta_test"]) == {"3-way 1-shot", "3-way 2-shot"}
    for row in metrics["meta_test"].values():
        assert 0 <= row["accuracy"] <= 1 and row["episodes"] == 4 and row["ci95"] >= 0
    assert [h["step"] for h in metrics["history"]] == [2, 3]
    assert not (out / "checkpoints").exists()  # no checkpoint was due (save_steps 200)
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert model(torch.zeros(2, 3, 12, 12)).logits.shape == (2, 3)
    assert "3-way 1-shot" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_run_resumes_exactly(glyph_zip, tmp_path):
    env = {**os.environ, "HFSSL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    script = str(REPO / "scripts" / "meta_train.py")

    def run(out, *extra, crash_at=None):
        launcher = [str(REPO / "tests" / "helpers" / "crash_at_step.py"), str(crash_at)] if crash_at else []
        return subprocess.run(
            [
                sys.executable,
                *launcher,
                script,
                "--dataset",
                str(glyph_zip),
                "--output_dir",
                str(out),
                "--max_steps",
                "4",
                "--save_steps",
                "1",
                *TINY,
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, why_failed(straight)
    crashed = run(tmp_path / "resumed", crash_at=2)
    assert crashed.returncode != 0 and (tmp_path / "resumed" / "checkpoints" / "step-000001").is_dir()
    resumed = run(tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, why_failed(resumed)
    assert "resumed from" in resumed.stderr
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())["meta_test"]
    mb = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["meta_test"]
    assert ma == mb


def test_bad_input_is_clear(glyph_zip, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    main = import_script("meta_train").main
    argv = ["--dataset", str(glyph_zip), "--output_dir", str(tmp_path / "x"), *TINY]
    assert main(with_flags(argv, "--shots", "4")) == 2
    assert "fewer than shots + queries" in capsys.readouterr().err
    assert main(with_flags(argv, "--ways", "9")) == 2
    assert "classes, but this split has only" in capsys.readouterr().err
    assert main(["--dataset", str(glyph_zip), "--algorithm", "reptile"]) == 2
    assert "--algorithm must be one of" in capsys.readouterr().err
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    assert main(["--dataset", str(broken), "--output_dir", str(tmp_path / "y"), *TINY]) == 2
    assert "broken.zip is not a readable zip archive" in capsys.readouterr().err
    checkpoint = tmp_path / "z" / "checkpoints" / "step-000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 1}')
    (checkpoint / "training_state.pt").write_bytes(b"truncated")
    argv = [
        "--dataset",
        str(glyph_zip),
        "--output_dir",
        str(tmp_path / "z"),
        *TINY,
        "--resume_from_checkpoint",
        "latest",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Could not restore checkpoint" in err and "training_state.pt" in err


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_meta_train_on_text_with_a_pretrained_gpt(gpt_dir, tmp_path, algorithm, capsys):
    """Text episodes: 9 classes of 4 sentences each, a tiny hfssl GPT as the body."""
    subjects = [
        "the cat",
        "a dog",
        "the old man",
        "my sister",
        "the teacher",
        "a small bird",
        "the river",
        "our king",
        "the ship",
    ]
    lines = [
        f"c{c} {subject} {verb} the house"
        for c, subject in enumerate(subjects)
        for verb in ("sees", "likes", "finds", "calls")
    ]
    data = tmp_path / "topics.txt"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / f"text-{algorithm}"
    code = import_script("meta_train").main(
        [
            "--algorithm",
            algorithm,
            "--model_name_or_path",
            str(gpt_dir),
            "--dataset",
            str(data),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--ways",
            "3",
            "--shots",
            "1",
            "--queries",
            "2",
            "--meta_batch_size",
            "2",
            "--eval_steps",
            "0",
            "--test_episodes",
            "3",
            "--test_shots",
            "1",
            "--class_split",
            "0.34",
            "0.33",
            "0.33",
            "--inner_lr",
            "0.1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["meta_test"]["3-way 1-shot"]["episodes"] == 3
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model(**tokenizer(["the cat sees the house"], return_tensors="pt")).logits.shape == (1, 3)
