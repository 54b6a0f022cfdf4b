"""A checkpoint is data, never code (#34, item 1).

Checkpoints are shared and downloaded like models, so resuming from one must not run anything planted in it:
hfssl's own state (scheduler, step) is JSON, torch loads only with `weights_only=True`, and a file that only a
pickle could load (Accelerate's `custom_checkpoint_*.pkl`) is refused by name. RNG states that do not load make
the resume visibly not bit-exact instead of silently so.
"""

import json
import logging
import os

import pytest
import torch

from hfssl.run.checkpoints import list_checkpoints
from tests.conftest import TINY_LM_FLAGS, import_script

pretrain = import_script("pretrain")


class _PlantedPayload:
    """Unpickling this creates the folder `marker`: proof that loading ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _run(corpus_file, out, *extra) -> int:
    return pretrain.main(["--dataset", str(corpus_file), "--output_dir", str(out), *TINY_LM_FLAGS, *extra])


@pytest.fixture
def stopped_run(tmp_path, corpus_file):
    """A run of 3 steps that checkpointed at steps 1 and 2 (what a run killed at step 3 leaves)."""
    out = tmp_path / "run"
    assert _run(corpus_file, out, "--max_steps", "3", "--save_steps", "1") == 0
    return out


def test_checkpoints_hold_no_pickled_objects(stopped_run):
    checkpoint = list_checkpoints(stopped_run)[-1]
    names = {path.name for path in checkpoint.iterdir()}
    assert not [name for name in names if name.startswith("custom_checkpoint")], names
    assert "scheduler.json" in names  # the learning-rate schedule as JSON


def test_a_planted_pickle_is_refused_by_name_and_never_runs(stopped_run, corpus_file, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    torch.save({"state": _PlantedPayload(str(marker))}, list_checkpoints(stopped_run)[-1] / "custom_checkpoint_0.pkl")
    code = _run(corpus_file, stopped_run, "--max_steps", "3", "--save_steps", "1", "--resume_from_checkpoint", "latest")
    assert not marker.exists(), "resuming ran code from the checkpoint"
    assert code == 2
    err = capsys.readouterr().err
    assert "custom_checkpoint_0.pkl" in err and err.count("error:") == 1 and "Traceback" not in err


@pytest.mark.parametrize("written_before_scheduler_json", [False, True])
def test_a_planted_legacy_schedule_does_not_run(
    stopped_run, corpus_file, tmp_path, capsys, written_before_scheduler_json
):
    """Checkpoints of hfssl before scheduler.json kept the schedule in custom_checkpoint_0.pkl: it is read as data
    only, so a payload there is refused too."""
    marker = tmp_path / "payload-ran"
    checkpoint = list_checkpoints(stopped_run)[-1]
    if written_before_scheduler_json:
        (checkpoint / "scheduler.json").unlink()
    torch.save({"state": _PlantedPayload(str(marker))}, checkpoint / "custom_checkpoint_0.pkl")
    code = _run(corpus_file, stopped_run, "--max_steps", "3", "--save_steps", "1", "--resume_from_checkpoint", "latest")
    assert not marker.exists() and code == 2 and "custom_checkpoint_0.pkl" in capsys.readouterr().err


def test_a_legacy_checkpoint_with_a_pickled_schedule_still_resumes(stopped_run, corpus_file):
    checkpoint = list_checkpoints(stopped_run)[-1]
    schedule = json.loads((checkpoint / "scheduler.json").read_text())
    torch.save(schedule, checkpoint / "custom_checkpoint_0.pkl")  # what Accelerate wrote for a registered schedule
    (checkpoint / "scheduler.json").unlink()
    code = _run(corpus_file, stopped_run, "--max_steps", "3", "--save_steps", "1", "--resume_from_checkpoint", "latest")
    assert code == 0


def test_a_planted_payload_in_torch_files_does_not_run_either(stopped_run, corpus_file, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    checkpoint = list_checkpoints(stopped_run)[-1]
    torch.save({"state": _PlantedPayload(str(marker))}, checkpoint / "optimizer.bin")
    code = _run(corpus_file, stopped_run, "--max_steps", "3", "--save_steps", "1", "--resume_from_checkpoint", "latest")
    assert not marker.exists()
    assert code == 2 and "optimizer.bin" in capsys.readouterr().err


def test_unloadable_random_states_make_a_visible_not_bit_exact_warning(stopped_run, corpus_file, caplog):
    checkpoint = list_checkpoints(stopped_run)[-1]
    (checkpoint / "random_states_0.pkl").write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        code = _run(
            corpus_file, stopped_run, "--max_steps", "3", "--save_steps", "1", "--resume_from_checkpoint", "latest"
        )
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("random_states_0.pkl" in w and "not bit-exact" in w for w in warnings), warnings


def test_every_torch_load_in_hfssl_is_data_only():
    from tests.conftest import REPO

    calls = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "hfssl").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "torch.load(" in line and "weights_only=True" not in line
    ]
    assert calls == [], "torch.load without weights_only=True can run a pickle"
