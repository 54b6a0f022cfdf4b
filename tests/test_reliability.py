"""Nothing lost, resume that does not lie: regression tests for the defects of the issue "Nothing lost, nothing
escaped" that need a run to happen first (the one-line errors themselves are in test_bad_input.py)."""

import errno
import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import TINY_LM_FLAGS, import_script, with_flags

pretrain = import_script("pretrain")
TINY = [*TINY_LM_FLAGS, *"--eval_steps 0 --logging_steps 1".split()]


def _run(corpus, out, *extra) -> int:
    return pretrain.main(with_flags(["--dataset", str(corpus), "--output_dir", str(out), *TINY], *extra))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_overwrite_sets_the_old_run_aside_and_rotation_keeps_the_new_run(tmp_path, corpus_file):
    """--overwrite_output_dir --save_total_limit 1 over an older run used to delete the new run's checkpoint."""
    out = tmp_path / "run"
    assert _run(corpus_file, out, "--max_steps", "4", "--save_steps", "1", "--save_total_limit", "5") == 0
    old = _digests(out)
    assert (
        _run(
            corpus_file,
            out,
            "--max_steps",
            "3",
            "--save_steps",
            "1",
            "--save_total_limit",
            "1",
            "--overwrite_output_dir",
            "--seed",
            "7",
        )
        == 0
    )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]  # the new run's newest (not final)
    assert json.loads((out / "run_args.json").read_text())["seed"] == 7
    (aside,) = (out / ".hfssl").glob("replaced-*")
    kept = {
        k.removeprefix(str(aside.relative_to(out)) + "/"): v
        for k, v in _digests(out).items()
        if k.startswith(str(aside.relative_to(out)))
    }
    assert {k: v for k, v in old.items() if not k.startswith(".hfssl")} == kept  # every old file, byte for byte


def test_a_failed_run_leaves_a_saved_model_alone(tmp_path, corpus_file):
    """A failing run used to write its new tokenizer over the saved model in --output_dir before failing."""
    out = tmp_path / "run"
    assert _run(corpus_file, out, "--max_steps", "2", "--save_steps", "0") == 0
    before = _digests(out)
    small = tmp_path / "small.txt"
    small.write_text("One short line.\n")
    assert _run(small, out, "--max_steps", "2", "--eval_split_fraction", "0") == 2  # refused: the folder is taken
    assert _digests(out) == before
    assert _run(small, out, "--max_steps", "2", "--eval_split_fraction", "0", "--overwrite_output_dir") == 2
    (aside,) = (out / ".hfssl").glob("replaced-*")  # failed, but the saved model is set aside, not lost
    assert (aside / "model.safetensors").read_bytes() and (aside / "tokenizer.json").is_file()


def test_resume_applies_and_logs_safe_changes(tmp_path, corpus_file, caplog):
    out = tmp_path / "run"
    assert _run(corpus_file, out, "--max_steps", "4", "--save_steps", "2") == 0
    with caplog.at_level("INFO"):
        assert (
            _run(
                corpus_file,
                out,
                "--max_steps",
                "6",
                "--save_steps",
                "2",
                "--logging_steps",
                "2",
                "--resume_from_checkpoint",
                "latest",
            )
            == 0
        )
    assert "Resuming with --max_steps 6 (the checkpoint's run had 4)" in caplog.text
    recorded = json.loads((out / "run_args.json").read_text())
    assert (recorded["max_steps"], recorded["logging_steps"]) == (6, 2)  # what the run used, not the old values
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 6


def test_a_full_disk_while_checkpointing_is_one_error_line_and_keeps_the_last_checkpoint(
    tmp_path, corpus_file, monkeypatch, capsys
):
    from accelerate import Accelerator

    real, calls = Accelerator.save_state, {"n": 0}

    def save_state(self, folder, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, folder, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    out = tmp_path / "run"
    assert _run(corpus_file, out, "--max_steps", "6", "--save_steps", "2") == 2
    err = capsys.readouterr().err
    assert "error: no space left on the device" in err.lower() and "step-000002" in err and "Traceback" not in err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]  # intact, no half-written one


@pytest.mark.parametrize("flag", ["--num_labels_per_class", "--per_device_eval_batch_size"])
def test_counts_are_checked_where_the_arguments_are_built(flag):
    from hfssl.adapt.probe import ProbeArguments

    with pytest.raises(ValueError, match=f"{flag} must be > 0"):
        ProbeArguments(model_name_or_path="m", dataset="d", **{flag[2:]: -3})


def test_a_checkpoint_from_before_a_new_argument_resumes_with_the_value_its_run_had(tmp_path):
    """Fine-tuning clipped at 1.0 before --max_grad_norm existed: its checkpoints (no such key) resume at 1.0, and
    are refused at another value; meta-training did not clip, so its old checkpoints resume at 0."""
    from hfssl.adapt.finetune import FinetuneArguments
    from hfssl.meta.arguments import MetaArguments
    from hfssl.run.resume import check_resume

    (tmp_path / "run_args.json").write_text(json.dumps({"seed": 42}))  # written before the flag
    for cls, old in [(FinetuneArguments, 1.0), (MetaArguments, 0.0)]:
        added = cls.ADDED_ARGUMENTS
        now = {**added, "seed": 42}  # a new run has every argument, the later ones at their old runs' values
        assert check_resume(tmp_path, {**now, "max_grad_norm": old}, frozenset(), 0, added=added) == []
        with pytest.raises(ValueError, match="--max_grad_norm was"):
            check_resume(tmp_path, {**now, "max_grad_norm": old + 0.5}, frozenset(), 0, added=added)
