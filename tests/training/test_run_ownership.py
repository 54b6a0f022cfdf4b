"""One run owns its output folder, and faults end in one line with nothing half-done (#34, items 5 and 6).

- a second run into a folder that a live run holds is refused, naming the owner; a stale lock is taken over;
- a checkpoint save removes only the temporary folders of this process or of processes that are gone;
- Ctrl-C says where the run stopped and how to resume (exit code 130), and leaves no partial checkpoint;
- a full disk while checkpointing or saving the model says so, removes its partial files and keeps the last good
  checkpoint (torch and safetensors report it as a RuntimeError, not an OSError).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import PreTrainedModel

from hfssl.run.callbacks import register_callback, unregister_callback
from hfssl.run.checkpoints import TrainerState, list_checkpoints, write_checkpoint
from hfssl.run.lock import LOCK_FILE
from hfssl.run.output import WORK_DIR, check_output_dir
from tests.conftest import REPO, TINY_LM_FLAGS, import_script

pretrain = import_script("pretrain")
DISK_FULL_TORCH = "PytorchStreamWriter failed writing file data/0: file write failed"
DISK_FULL_SAFETENSORS = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left" })'


def _argv(corpus_file, out, *extra):
    return ["--dataset", str(corpus_file), "--output_dir", str(out), *TINY_LM_FLAGS, *extra]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def lock_holder(tmp_path):
    """Another process that takes the lock of tmp_path/run and keeps it until killed."""
    out = tmp_path / "run"
    code = (
        "import sys, time; from hfssl.run.lock import acquire_output_lock; "
        f"acquire_output_lock({str(out)!r}); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    yield holder, out
    holder.kill()
    holder.wait()


def test_a_second_run_into_a_held_folder_is_refused_naming_the_owner(lock_holder, corpus_file, capsys):
    holder, out = lock_holder
    before = _snapshot(out)
    assert pretrain.main(_argv(corpus_file, out, "--max_steps", "2", "--overwrite_output_dir")) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"in use by another run (pid {holder.pid} on {socket.gethostname()}" in err
    assert _snapshot(out) == before  # nothing of the live run was touched


def test_a_stale_lock_is_taken_over_and_every_run_releases_its_own(lock_holder, corpus_file, caplog):
    holder, out = lock_holder
    holder.kill()  # killed: its lock file stays behind
    holder.wait()
    assert (out / WORK_DIR / LOCK_FILE).is_file()
    assert pretrain.main(_argv(corpus_file, out, "--max_steps", "2")) == 0
    assert "stale lock" in caplog.text
    assert not (out / WORK_DIR / LOCK_FILE).exists()


def test_a_refused_run_leaves_no_folder_behind(lock_holder, corpus_file, tmp_path):
    """A run that stops on bad input after taking a fresh folder's lock removes the folders it created."""
    out = tmp_path / "fresh"
    assert pretrain.main(_argv(corpus_file, out, "--max_steps", "2", "--eval_dataset", str(tmp_path / "nope.txt"))) == 2
    assert not out.exists()


@pytest.mark.parametrize("after_look", [1, 2])
def test_the_main_process_taking_the_lock_mid_check_is_not_another_run(tmp_path, monkeypatch, after_look):
    """Every process of a run checks the output folder while the main one takes its lock, which creates the folder.
    Whichever look at the folder it happens after, the other process must not see a folder holding something (a
    race that once failed a 2-process CI run with 'already holds')."""
    out = tmp_path / "run"
    looks = []

    def interleaved(original, name):
        def look(self, *args, **kwargs):
            try:
                result = original(self, *args, **kwargs)
                return iter(list(result)) if name == "iterdir" else result  # iterdir looks when iterated
            finally:
                looks.append(name) if self == out else None
                if len(looks) == after_look and not os.path.exists(out):  # now the main process takes the lock
                    os.makedirs(out / WORK_DIR)
                    (out / WORK_DIR / LOCK_FILE).write_text("{}")

        return look

    for name in ("exists", "is_dir", "iterdir"):
        monkeypatch.setattr(Path, name, interleaved(getattr(Path, name), name))
    check_output_dir(out, resume=False, overwrite=False)
    assert len(looks) >= after_look and os.path.exists(out / WORK_DIR / LOCK_FILE)  # the interleaving happened


def test_a_save_removes_only_its_own_or_dead_processes_leftovers(tmp_path, lock_holder):
    holder, _ = lock_holder
    root = tmp_path / "out" / "checkpoints"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    live = root / f".tmp-step-000001-{holder.pid}"
    dead = root / f".tmp-step-000001-{dead_pid}"
    for folder in (live, dead):
        folder.mkdir(parents=True)
        (folder / "part").write_text("x")
    write_checkpoint(tmp_path / "out", TrainerState(global_step=2), lambda f: (f / "w").write_text("w"), keep=0)
    assert live.is_dir() and not dead.exists()
    assert [p.name for p in list_checkpoints(tmp_path / "out")] == ["step-000002"]


def test_ctrl_c_says_where_and_how_to_resume_and_leaves_nothing_half_done(corpus_file, tmp_path, monkeypatch, capsys):
    import hfssl.training.loop as loop

    real_step = loop.optimizer_step

    def interrupted_at_3(*args, **kwargs):
        if kwargs["step"] == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "optimizer_step", interrupted_at_3)
    out = tmp_path / "run"
    assert pretrain.main(_argv(corpus_file, out, "--max_steps", "5", "--save_steps", "1")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert "interrupted after step 2; the last checkpoint is" in err and "step-000002" in err
    assert "--resume_from_checkpoint latest" in err
    assert not list((out / "checkpoints").glob(".tmp-*")) and not (out / WORK_DIR / LOCK_FILE).exists()
    monkeypatch.setattr(loop, "optimizer_step", real_step)
    assert (
        pretrain.main(
            _argv(corpus_file, out, "--max_steps", "5", "--save_steps", "1", "--resume_from_checkpoint", "latest")
        )
        == 0
    )


@pytest.mark.slow
def test_a_real_sigint_gives_one_line(corpus_file, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, str(REPO / "scripts" / "pretrain.py"), *_argv(corpus_file, out, "--max_steps", "100000")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (out / WORK_DIR / LOCK_FILE).is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # into the training steps
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "error: interrupted" in err


def test_a_swallowed_ctrl_c_still_stops_at_the_next_step(corpus_file, tmp_path, capsys):
    """Python drops a KeyboardInterrupt raised inside a finalizer or a library callback; the SIGINT handler also
    records the request, and the next optimizer step stops the run as Ctrl-C would."""
    from hfssl.run import cli

    def swallowed_ctrl_c(step: int, loss: float) -> None:
        if step == 3:
            with contextlib.suppress(KeyboardInterrupt):  # what "Exception ignored in ..." does to it
                cli._on_sigint(signal.SIGINT, None)

    class Callback:
        on_step_end = staticmethod(swallowed_ctrl_c)

    register_callback(Callback)
    try:
        code = pretrain.main(_argv(corpus_file, tmp_path / "run", "--max_steps", "10"))
    finally:
        unregister_callback(Callback)
    assert code == 130
    assert "error: interrupted after step 3" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def _fail_on_call(real, failing_call: int, message: str):
    calls = []

    def write(self, folder, *args, **kwargs):
        calls.append(folder)
        if len(calls) == failing_call:
            Path(folder, "partial.bin").write_bytes(b"half a file")
            raise RuntimeError(message)
        return real(self, folder, *args, **kwargs)

    return write


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(corpus_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Accelerator, "save_state", _fail_on_call(Accelerator.save_state, 2, DISK_FULL_TORCH))
    out = tmp_path / "run"
    assert pretrain.main(_argv(corpus_file, out, "--max_steps", "4", "--save_steps", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "disk full while writing checkpoint step-000002" in err and "step-000001" in err and "is intact" in err
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_a_full_disk_at_the_final_save_is_said_so_not_a_truncated_file(corpus_file, tmp_path, monkeypatch, capsys):
    real = PreTrainedModel.save_pretrained
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", _fail_on_call(real, 1, DISK_FULL_SAFETENSORS))
    out = tmp_path / "run"
    assert pretrain.main(_argv(corpus_file, out, "--max_steps", "2", "--save_steps", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err and "truncated" not in err
    assert f"disk full while writing the model to {out}" in err and "step-000001" in err
    assert not list(tmp_path.glob(".run.tmp-*")) and not (out / "model.safetensors").exists()
    assert json.loads((list_checkpoints(out)[-1] / "trainer_state.json").read_text())["global_step"] == 1
    assert torch.load  # the checkpoint is whole: it is what the resume hint names
