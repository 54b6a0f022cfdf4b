"""What the experiment trackers behind `--report_to` (TensorBoard, W&B, MLflow, ...) receive.

Accelerate's trackers document one contract for a run's configuration: a flat mapping of `bool`, `str`, `float` or
`int` values (TensorBoard's `add_hparams` refuses anything else, `None` included). A run's arguments hold lists
(`--resnet_widths 64 128`), paths and nested mappings, so every configuration goes through `tracker_config` here,
the one place that flattens it; the full arguments stay in `run_args.json`.
"""

import json
import logging
from collections.abc import Mapping
from enum import Enum

logger = logging.getLogger(__name__)

TrackerValue = bool | int | float | str
TRACKER_CHOICES = ("tensorboard", "all", "none")


def tracker_config(config: Mapping[str, object], prefix: str = "") -> dict[str, TrackerValue]:
    """A run's configuration as every tracker accepts it.

    - `bool`, `int`, `float` and `str` values pass unchanged; `None` values are left out (an unset option);
    - lists and tuples become their JSON text: `{"resnet_widths": [64, 128]}` -> `{"resnet_widths": "[64, 128]"}`;
    - nested mappings are flattened with dotted keys: `{"lora": {"r": 8}}` -> `{"lora.r": 8}`;
    - an `Enum` gives its value, anything else (a `Path`, a dtype) its `str`.
    """
    flat: dict[str, TrackerValue] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping):
            flat.update(tracker_config(value, prefix=f"{name}."))
        elif isinstance(value, Enum):
            flat.update(tracker_config({name: value.value}))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value), default=str)
        else:
            flat[name] = str(value)
    return flat


def tracker_name(report_to: str) -> str | None:
    """Accelerate's `log_with` for `--report_to`: None for "none", and for "tensorboard" when it is not installed."""
    if report_to == "none":
        return None
    if report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            logger.warning("tensorboard is not installed: metrics go to metrics.json only.")
            return None
    return report_to
