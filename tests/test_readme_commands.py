"""Every command that README.md and docs/ show runs, as written (#33).

The commands come from the ```bash blocks: each line that starts with `accelerate launch`, `python scripts/`,
`python demo/`, `python -m hfssl` or `python -c` (continuation lines joined, comments dropped, `&&` chains split),
once each, in the order a reader meets them: README first, then docs/ by name. Each runs in its own workspace
(the repository's `scripts/`, `demo/` and `recipes/` linked in, `../shared` beside it), so that two alternatives
that write the same default folder do not meet; a folder or file that an earlier command made (`outputs/gpt-stdlib`,
`add.jsonl`) is copied in when a later command names it.

The flags stay as written. The test adds only what keeps a command short: a step budget and a small evaluation
(`BUDGETS`; a budget flag already in the command is lowered, never raised or repeated), and a free `--port` for the
demo, which is started, asked for its page and stopped. The input files a command names as "yours"
(`my_corpus.txt`, `data.jsonl`, `models/SmolLM2-135M-Instruct.Q4_1.gguf`) are provided (`_provide_inputs`).

Commands that need what CI does not have (the network, a Hub token, GPUs, a second machine) are skipped by name
with the reason (`SKIPS`); every rule there must match a documented command, so none goes stale.
"""

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, SHARED_DATA, make_corpus

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"^(accelerate launch|python (scripts/|demo/|-m hfssl|-c ))")
LINKED = ("scripts", "demo", "recipes")
REFERENCE = Path.home() / ".cache" / "hfssl" / "reference"
COMMAND_TIMEOUT_S = 600

# script -> (flag, cap, when): the cap is appended when the flag is absent and lowers a larger value; `when`
# limits a cap to the commands it applies to (a flag of one objective or mode only, or one the command sets itself)
Budget = tuple[str, str, Callable[[list[str]], bool]]


def _always(argv: list[str]) -> bool:
    return True


def _objective(name: str) -> Callable[[list[str]], bool]:
    return lambda argv: (argv[argv.index("--objective") + 1] if "--objective" in argv else "causal_lm") == name


def _given(flag: str) -> Callable[[list[str]], bool]:
    return lambda argv: flag in argv


BUDGETS: dict[str, list[Budget]] = {
    "scripts/pretrain.py": [
        ("--max_steps", "2", _always),
        ("--max_eval_samples", "8", _always),
        ("--pll_samples", "2", _objective("masked_lm")),
    ],
    "scripts/finetune.py": [("--num_train_epochs", "1", _always)],
    "scripts/prompt_eval.py": [
        ("--max_eval_examples", "4", _always),
        ("--num_seeds", "2", _given("--num_seeds")),
        ("--num_samples", "2", _given("--num_samples")),
        ("--cot_max_new_tokens", "16", _given("--chain_of_thought")),
    ],
    "scripts/post_train.py": [
        ("--max_steps", "2", _always),
        ("--examples_per_task", "12", _always),
        ("--max_eval_examples", "4", _always),
    ],
    "scripts/meta_train.py": [
        ("--max_steps", "2", _always),
        ("--val_episodes", "2", _always),
        ("--test_episodes", "4", _always),
    ],
}
# a resumed command and the run it continues checkpoint every step, so that step 1 is there to resume from
RESUME_BUDGET = {"--save_steps": "1"}


def _hub_id_model(command: str) -> bool:
    return bool(re.search(r"--model_name_or_path (gpt2|HuggingFaceTB/)", command))


SKIPS: list[tuple[Callable[[str], bool], str]] = [
    (_hub_id_model, "downloads its model from the Hub: needs the network"),
    (lambda c: bool(re.search(r"--dataset (wikitext|stanfordnlp/)", c)), "downloads its data from the Hub"),
    (lambda c: "scripts/push.py" in c and "--dry_run" not in c, "uploads to the Hub: needs a token and the network"),
    (lambda c: "--push_to_hub" in c, "uploads to the Hub: needs a token and the network"),
    (
        lambda c: "--num_machines 2" in c,
        "needs a second machine (tests/training/test_scaling_out.py runs two 'machines' on one host)",
    ),
    (lambda c: "fsdp2.yaml" in c and not torch.cuda.is_available(), "FSDP2 needs GPUs"),
    (lambda c: "deepspeed" in c and not torch.cuda.is_available(), "DeepSpeed needs GPUs"),
]


# ---- reading the documents -------------------------------------------------------------------------------------
def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def _commands_of_block(block: str) -> list[str]:
    """Whole commands of one block: continuation lines joined, comments dropped, `a && b` as two commands."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        part: list[str] = []
        for word in [*words, "&&"]:
            if word != "&&":
                part.append(word)
            elif part:
                command = shlex.join(part)
                if RUNNABLE.match(command):
                    commands.append(command)
                part = []
    return commands


def documented_commands() -> list[str]:
    seen: dict[str, None] = {}
    for document in DOCUMENTS:
        for block in _bash_blocks(document.read_text()):
            for command in _commands_of_block(block):
                seen.setdefault(command)
    return list(seen)


def _skip_reason(command: str) -> str | None:
    for matches, reason in SKIPS:
        if matches(command):
            return reason
    needs_reference = "hfssl/reference/" in command or "SmolLM2-135M-Instruct.Q4_1.gguf" in command
    if needs_reference and not (REFERENCE / "SmolLM2-135M-Instruct").is_dir():
        return "needs the reference models: python -m hfssl.reference fetch"
    if "../shared/" in command and not SHARED_DATA.is_dir():
        return "needs ../shared/data (the project's data sets, beside the checkout)"
    if "--engine learn2learn" in command and shutil.which("python") and not _importable("learn2learn"):
        return "needs learn2learn: bash scripts/install_learn2learn.sh"
    return None


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---- the budget ------------------------------------------------------------------------------------------------
def _script(argv: list[str]) -> str | None:
    return next((word for word in argv if word.startswith(("scripts/", "demo/"))), None)


def _capped(argv: list[str], caps: dict[str, str]) -> list[str]:
    """`argv` with each flag of `caps` appended when absent, lowered to the cap when the command sets more."""
    argv = list(argv)
    for flag, cap in caps.items():
        if flag in argv:
            at = argv.index(flag) + 1
            argv[at] = str(min(float(argv[at]), float(cap))).removesuffix(".0")
        else:
            argv += [flag, cap]
    return argv


def with_budget(argv: list[str]) -> list[str]:
    """`argv` plus the budget flags of its script (`BUDGETS`)."""
    budgets = BUDGETS.get(_script(argv) or "", [])
    return _capped(argv, {flag: cap for flag, cap, applies in budgets if applies(argv)})


# ---- the workspace ---------------------------------------------------------------------------------------------
def _provide_inputs(workspace: Path) -> None:
    """The files that documented commands call the user's own: a small corpus, a reasoning set, the GGUF."""
    from hfssl.data.reasoning_tasks import write_reasoning_file

    text = "\n\n".join(make_corpus(num_docs=200)) + "\n"
    for name in ("my_corpus.txt", "my_text.txt", "my_unlabelled.txt"):
        (workspace / name).write_text(text)
    write_reasoning_file("multi_digit_addition", workspace / "data.jsonl", n=40, seed=0)
    gguf = REFERENCE / "SmolLM2-135M-Instruct-GGUF" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if gguf.is_file():
        (workspace / "models").mkdir()
        (workspace / "models" / gguf.name).symlink_to(gguf)


def _new_workspace(root: Path) -> Path:
    case = Path(os.path.realpath(root)) / f"case{len(list(root.iterdir()))}"
    workspace = case / "main"
    workspace.mkdir(parents=True)
    for name in LINKED:
        (workspace / name).symlink_to(REPO / name)
    if SHARED_DATA.is_dir():
        (case / "shared").symlink_to(SHARED_DATA.parent)
    _provide_inputs(workspace)
    return workspace


def _made(workspace: Path) -> list[Path]:
    """What a command wrote: top-level files and folders, and the folders under outputs/ and models/."""
    made = []
    for entry in workspace.iterdir():
        if entry.is_symlink() or entry.name in LINKED:
            continue
        if entry.name in ("outputs", "models") and entry.is_dir():
            made += [sub for sub in entry.iterdir() if not sub.is_symlink()]
        elif not re.fullmatch(r"my_\w+\.txt|data\.jsonl", entry.name):
            made.append(entry)
    return made


class Products:
    """What earlier commands made, handed to a later command that names it (`outputs/gpt-stdlib`, `add.jsonl`)."""

    def __init__(self, store: Path):
        self.store = store
        self.names: list[str] = []  # relative paths: "outputs/gpt-stdlib", "add.jsonl"
        store.mkdir()

    def keep(self, workspace: Path) -> None:
        for path in _made(workspace):
            name = path.relative_to(workspace).as_posix()
            if name not in self.names:  # the first command that makes a path is its producer
                (self.store / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, self.store / name)
                self.names.append(name)

    def bring(self, command: str, workspace: Path) -> None:
        for name in self.names:
            if re.search(rf"(^|[\s=]){re.escape(name)}(/|\s|$)", command) and not (workspace / name).exists():
                (workspace / name).parent.mkdir(parents=True, exist_ok=True)
                copy = shutil.copytree if (self.store / name).is_dir() else shutil.copy2
                copy(self.store / name, workspace / name)


# ---- running ---------------------------------------------------------------------------------------------------
def _executable(argv: list[str]) -> list[str]:
    """The shell's view of a command: `python` and `accelerate` from this environment, `~` expanded."""
    bin_dir = Path(sys.executable).parent
    head = {"python": sys.executable, "accelerate": str(bin_dir / "accelerate")}.get(argv[0], argv[0])
    return [head, *(os.path.expanduser(word) if word.startswith("~/") else word for word in argv[1:])]


def _environment() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_and_stop(argv: list[str], workspace: Path) -> None:
    """Start the demo, wait until it serves its page, stop it."""
    port = _free_port()
    process = subprocess.Popen(
        [*argv, "--port", str(port)],
        cwd=workspace,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the demo exited with {process.returncode}:\n{process.stdout.read().decode()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200
                    return
            except OSError:
                time.sleep(1)
        pytest.fail("the demo did not serve its page within 180 s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _run(argv: list[str], workspace: Path) -> None:
    argv = _executable(argv)
    result = subprocess.run(
        argv, cwd=workspace, env=_environment(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert result.returncode == 0, f"{shlex.join(argv)}\nexit {result.returncode}\n{result.stderr[-6000:]}"


def _stop_a_run_to_resume(argv: list[str], workspace: Path) -> None:
    """What `--resume_from_checkpoint latest` continues: the same run without the flag, which checkpoints at step 1
    and (like a killed run) leaves that checkpoint behind."""
    at = argv.index("--resume_from_checkpoint")
    _run(argv[:at] + argv[at + 2 :], workspace)


def run_documented(command: str, workspace: Path) -> None:
    argv = with_budget(shlex.split(command))
    if _script(argv) == "demo/app.py":
        _serve_and_stop(_executable(argv), workspace)
        return
    if "--resume_from_checkpoint" in argv:
        argv = _capped(argv, RESUME_BUDGET)
        _stop_a_run_to_resume(argv, workspace)
    _run(argv, workspace)


def _cases():
    for command in documented_commands():
        reason = _skip_reason(command)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        yield pytest.param(command, marks=marks, id=command[:120])


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    return tmp_path_factory.mktemp("readme_workspaces")


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return Products(tmp_path_factory.mktemp("readme_products") / "kept")


@pytest.mark.slow
@pytest.mark.parametrize("command", _cases())
def test_documented_command_runs(command, workspaces, products):
    workspace = _new_workspace(workspaces)
    if "--resume_from_checkpoint" not in command:  # a resumed run continues its own stopped run, not a finished one
        products.bring(command, workspace)
    if not SHARED_DATA.is_dir():
        _skip_if_an_input_was_not_made(command, workspace)
    run_documented(command, workspace)
    products.keep(workspace)


def _skip_if_an_input_was_not_made(command: str, workspace: Path) -> None:
    """Without ../shared/data the commands that train on it are skipped, so a later command that reads their
    folder (`push.py --model_dir outputs/lpft-sst2`) has nothing to read: skip it too, by name."""
    argv = shlex.split(command)
    for flag in ("--model_dir", "--model_name_or_path"):
        if flag in argv[:-1]:
            folder = argv[argv.index(flag) + 1]
            if folder.startswith("outputs/") and not (workspace / folder).exists():
                pytest.skip(f"needs {folder}, which an earlier command makes from ../shared/data")


def test_the_documents_show_the_main_commands_and_every_skip_rule_is_used():
    commands = documented_commands()
    assert "accelerate launch scripts/pretrain.py" in commands
    assert "accelerate launch scripts/pretrain.py --objective contrastive" in commands
    assert not [c for c in commands if "..." in c or "[--" in c], "a command with a placeholder cannot run as written"
    for matches, reason in SKIPS:
        assert any(matches(c) for c in commands) or "GPUs" in reason, f"no documented command is skipped for {reason!r}"


def test_the_budget_is_added_or_lowered_never_repeated():
    assert with_budget(["python", "scripts/meta_train.py", "--max_steps", "1000"]) == [
        "python",
        "scripts/meta_train.py",
        "--max_steps",
        "2",
        "--val_episodes",
        "2",
        "--test_episodes",
        "4",
    ]
    budgeted = with_budget(["accelerate", "launch", "scripts/pretrain.py", "--objective", "masked_lm"])
    assert budgeted.count("--max_steps") == 1 and budgeted[-2:] == ["--pll_samples", "2"]
    assert "--pll_samples" not in with_budget(["accelerate", "launch", "scripts/pretrain.py"])
    assert with_budget(["python", "scripts/prompt_eval.py", "--num_samples", "8"])[3] == "2"
    assert "--num_samples" not in with_budget(["python", "scripts/prompt_eval.py"])
