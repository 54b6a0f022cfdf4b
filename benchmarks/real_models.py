"""What the experiments on the real reference models share: the fetched folders, resumable results, matplotlib."""

import json
from pathlib import Path

import torch

from hfssl.models.loading import load_tokenizer
from hfssl.reference import reference_model_path


def reference(key: str) -> Path:
    """The fetched reference model's folder; SystemExit with the fetch command when it is absent."""
    folder = reference_model_path(key)
    if folder is None:
        raise SystemExit(f"error: the reference model {key!r} is not fetched: run `python -m hfssl.reference fetch`.")
    return folder


def random_init_copy(pretrained: Path, target: Path, auto_class) -> Path:
    """The pretrained model's config and tokenizer with fresh weights (torch seed 0), saved once in `target`."""
    from transformers import AutoConfig

    if not (target / "config.json").is_file():
        torch.manual_seed(0)
        auto_class.from_config(AutoConfig.from_pretrained(pretrained)).save_pretrained(target)
        load_tokenizer(str(pretrained)).save_pretrained(target)
    return target


def reset_accelerate() -> None:
    """Forget Accelerate's process state between runs in one process (each run builds its own Accelerator)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


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
