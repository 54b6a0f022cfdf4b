"""The repository's promises: README starts with the two set-up commands, and CI runs the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README.md has no code block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_opens_with_install_and_test_commands():
    install_and_run, test = _setup_commands()
    assert "pip install" in install_and_run and "scripts/pretrain.py" in install_and_run
    assert "pytest" in test


def test_ci_runs_the_readme_test_command():
    _, test = _setup_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test.strip() in ci_lines
