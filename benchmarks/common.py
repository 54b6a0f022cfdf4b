"""What every benchmark shares: paths, the results-file naming rule, results I/O, resume, plots, small formatting.

Imports only the standard library at module level (matplotlib and accelerate are imported where they are used), so
that `--help` and `--report` stay fast.

Results-file naming rule (benchmarks/README.md states the same):

    benchmarks/results/<script>[_<variant>...].<json|png>

`<script>` is the stem of the benchmark file that wrote it (`exp_meta` for benchmarks/exp_meta.py) and each
`<variant>` names a setting that differs from the script's default run, from VARIANTS below (`exp_lm_3seeds_7min`:
3 seeds at a 7-minute budget; `exp_adaptation_images_quick.png`: the images plot of the `--quick` run). A new
variant is added to VARIANTS (and to the README's table) before a file is named with it; tests/test_benchmarks_layout.py
checks every file in results/ against this rule.
"""

import argparse
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"  # the shared data folder beside the repository
OUTPUTS = ROOT / "outputs"  # models and work folders the experiments keep (not committed)

# <variant> -> the setting it names (the only place variants are defined; the README's table repeats it)
VARIANTS = {
    "quick": "the `--quick` run (fewer seeds, steps, K or queries: checks the script, numbers are noisier)",
    "3seeds": "3 seeds (`--seeds 0 1 2`) instead of the default",
    "7min": "a 7-minute CPU training budget per seed (`--budget_minutes 7`)",
    "15min": "a 15-minute CPU training budget per seed (`--budget_minutes 15`)",
    "images": "the image half (CIFAR-10) of a script that also runs text",
    "text": "the text half (SST-2) of a script that also runs images",
    "smollm2": "on the reference SmolLM2-135M-Instruct (`--model`) instead of the script's own small model",
    "4500steps": "the main command as it was before #27: 2,500 warm-up + 2,000 corpus steps (`--max_steps 4500`)",
}


def result_path(script: str, *variants: str, suffix: str = ".json") -> Path:
    """benchmarks/results/<script>[_<variant>...]<suffix>; empty variants are skipped (`"quick" if q else ""`)."""
    return RESULTS / ("_".join([script, *(v for v in variants if v)]) + suffix)


def save_json(path: Path, data, *, end: str = "\n") -> Path:
    """`json.dumps(data, indent=2) + end` written atomically (a temporary file beside it, then renamed over it), so
    a run stopped while saving leaves the previous results, never half a file. Creates the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + end)
    os.replace(tmp, path)
    return path


def load_json(path: Path):
    """The results saved in `path`."""
    return json.loads(Path(path).read_text())


def resume(out: Path, record: dict, fresh: bool, run_control: tuple[str, ...] = ()) -> dict:
    """`record` ({"settings": ..., "rows": []}), or the results saved in `out` when they were measured with the same
    settings, so that a stopped run continues with the cells it measured. Keys in `run_control` choose which cells
    run, not how they are measured, and are not compared. A file that is not JSON is reported by name."""
    if fresh or not out.is_file():
        return record
    try:
        saved = json.loads(out.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f"error: {out} is not a results file ({error}): pass --fresh to measure again.") from None

    def measured_as(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k not in run_control}

    if measured_as(saved.get("settings", {})) != measured_as(record["settings"]):
        print(f"{out} was measured with other settings {saved.get('settings')}: measuring again")
        return record
    print(f"continuing {out}: {len(saved.get('rows', []))} cells measured")
    return saved | {"settings": record["settings"]}


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a message) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    return plt


def save_figure(fig, path: Path, *, announce: bool = True) -> None:
    """tight_layout, save at 120 dpi, and (announce) print `wrote <path>`."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    if announce:
        print(f"wrote {path}")


def reset_accelerate(gradient_state: bool = True) -> None:
    """Forget Accelerate's process state between runs in one process (each run builds its own Accelerator)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    if gradient_state:
        GradientState._reset_state()


# ---- arguments ---------------------------------------------------------------------------------------------------
def argument_parser(doc: str) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: its module docstring as the description, line breaks kept."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_quick(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--quick: the short run, whose results go to <script>_quick.* where the script keeps them apart."""
    parser.add_argument("--quick", action="store_true", help=help)


def add_fresh(parser: argparse.ArgumentParser) -> None:
    """--fresh: ignore the cells `resume` would continue from."""
    parser.add_argument("--fresh", action="store_true", help="Measure every cell again (ignore saved results).")


def add_report(parser: argparse.ArgumentParser, help: str = "Print the saved tables and exit.") -> None:
    """--report: print the saved results and exit, measuring and writing nothing."""
    parser.add_argument("--report", action="store_true", help=help)


# ---- numbers and tables ------------------------------------------------------------------------------------------
def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation, 0.0 for a single value (one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def plus_minus(mean: float, spread: float, fmt: str = ".1f", scale: float = 1) -> str:
    """`mean ± spread` with both numbers scaled (100: percent) and formatted alike."""
    return f"{scale * mean:{fmt}} ± {scale * spread:{fmt}}"


def markdown_row(cells: Sequence) -> str:
    """| a | b | c |"""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_rule(text_columns: int, number_columns: int = 0) -> str:
    """The header rule of a markdown table: left-aligned text columns, then right-aligned number columns."""
    return "|" + "---|" * text_columns + "---:|" * number_columns
