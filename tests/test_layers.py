"""The house's structure: the layers of hfssl/ (pyproject.toml's import-linter contracts), the demo's imports, the one
error hierarchy, and the one line of the CLI frame only for hfssl's own errors (a bug keeps its traceback)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hfssl.run.cli import BUG_NOTE, run_cli
from hfssl.run.errors import HfsslError, InputError, MissingFileError, error_message
from tests.conftest import REPO


def _lint_imports() -> str | None:
    found = Path(sys.executable).parent / "lint-imports"
    return str(found) if found.exists() else shutil.which("lint-imports")


def _write_violation(root: Path) -> None:
    """A copy of hfssl whose ground floor imports a room above it (what the contract must refuse)."""
    shutil.copytree(REPO / "hfssl", root / "hfssl", ignore=shutil.ignore_patterns("__pycache__"))
    with (root / "hfssl" / "run" / "output.py").open("a") as f:
        f.write("\nfrom ..hub import errors as _hub_errors  # noqa\n")


@pytest.mark.skipif(_lint_imports() is None, reason="import-linter is not installed (pip install -e '.[dev]')")
def test_no_import_runs_up_a_layer_and_a_violation_is_caught(tmp_path):
    kept = subprocess.run([_lint_imports(), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert kept.returncode == 0, kept.stdout[-3000:] + kept.stderr[-2000:]
    assert "0 broken" in kept.stdout
    # the same contracts over a copy with one upward import: broken, and the import is named
    _write_violation(tmp_path)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    broken = subprocess.run(
        [_lint_imports(), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert broken.returncode != 0
    assert "hfssl.run.output -> hfssl.hub" in broken.stdout


def _hfssl_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.split(".")[0] == "hfssl"}


def test_the_demo_does_not_import_the_training_package():
    files = sorted((REPO / "demo").glob("*.py"))
    assert files
    for path in files:
        training = {n for n in _hfssl_imports(path) if n.startswith("hfssl.training")}
        assert not training, f"{path.name} imports {training}"


def test_every_error_hfssl_raises_on_purpose_derives_from_one_base():
    from hfssl.hub.errors import HubError
    from hfssl.launch import LaunchError
    from hfssl.models.gguf import GGUFMetadataError
    from hfssl.run.checkpoints import NonFiniteLossError

    for kind in (HubError, LaunchError, GGUFMetadataError, NonFiniteLossError, InputError, MissingFileError):
        assert issubclass(kind, HfsslError), kind
    assert issubclass(InputError, ValueError) and issubclass(MissingFileError, FileNotFoundError)  # callers' catches


def _library_raises_of_builtin_errors() -> list[str]:
    """`raise ValueError(...)`-style lines in hfssl/ outside the self-contained model files (which are saved beside the
    weights for trust_remote_code and may not import hfssl)."""
    builtins = {"ValueError", "FileNotFoundError", "OSError", "ImportError", "RuntimeError", "FileExistsError"}
    found = []
    for path in sorted((REPO / "hfssl").rglob("*.py")):
        if path.parent.name in ("gpt", "encoders"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            call = node.exc if isinstance(node, ast.Raise) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in builtins:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} raises {call.func.id}")
    return found


def test_the_library_raises_its_own_errors_not_builtin_ones():
    assert _library_raises_of_builtin_errors() == []


def test_the_cli_frame_gives_one_line_for_hfssl_errors_and_keeps_a_bugs_traceback(capsys):
    def bad_input():
        raise InputError("--foo must be > 0, got -1.\nSecond line.")

    assert run_cli(bad_input) == 2
    assert capsys.readouterr().err == "error: --foo must be > 0, got -1. Second line.\n"

    def bug():
        raise ValueError("shape mismatch deep inside torch")  # not hfssl's: a bug, whose traceback must survive

    with pytest.raises(ValueError, match="shape mismatch") as raised:
        run_cli(bug)
    assert raised.value.__notes__ == [BUG_NOTE]  # printed under the traceback: a user sees it is not their mistake
    assert error_message(KeyError("x")) is None and error_message(ValueError("x")) is None


def test_the_environments_refusals_are_one_line_too():
    import errno

    denied = PermissionError(errno.EACCES, "Permission denied", "/models/out")
    assert (
        error_message(denied)
        == "Permission denied: /models/out (check who may read or write it, or choose another path)"
    )
    assert error_message(OSError(errno.ENOSPC, "No space left on device")).startswith("no space left on the device")
    assert error_message(OSError(errno.EIO, "I/O error")) is None  # not a refusal: a traceback


def test_an_image_model_without_a_processor_is_named(tmp_path):
    from hfssl.models.loading import load_image_processor
    from hfssl.run.errors import StorageError

    with pytest.raises(StorageError, match=f"image processor .*{tmp_path.name}"):
        load_image_processor(str(tmp_path))
