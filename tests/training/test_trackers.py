"""The default tracker (`--report_to tensorboard`) on every objective: the run starts, writes its event files, and
TensorBoard's hparams view holds its arguments (lists included, flattened by `hfssl.run.trackers.tracker_config`)."""

from enum import Enum
from pathlib import Path

import pytest

from hfssl.run.trackers import tracker_config
from tests.conftest import TINY_LM_FLAGS, import_script
from tests.training.test_contrastive import TINY as TINY_CONTRASTIVE
from tests.training.test_masked_lm import TINY_MLM

pretrain = import_script("pretrain")


def _default_tracker(flags) -> list[str]:
    """The tiny flags of a test module without its `--report_to none`: the default tracker stays on."""
    flags = list(flags)
    at = flags.index("--report_to")
    return flags[:at] + flags[at + 2 :]


class Colour(Enum):
    RED = "red"


def test_tracker_config_flattens_what_trackers_refuse():
    config = {
        "resnet_widths": [64, 128],
        "knn_k": (20, 200),
        "lora": {"r": 8, "target_modules": ["q", "v"], "bias": None},
        "output_dir": Path("out/run"),
        "colour": Colour.RED,
        "unset": None,
        "seed": 0,
        "learning_rate": 3e-4,
        "blur": False,
        "objective": "contrastive",
    }
    assert tracker_config(config) == {
        "resnet_widths": "[64, 128]",
        "knn_k": "[20, 200]",
        "lora.r": 8,
        "lora.target_modules": '["q", "v"]',
        "output_dir": "out/run",
        "colour": "red",
        "seed": 0,
        "learning_rate": 3e-4,
        "blur": False,
        "objective": "contrastive",
    }
    assert all(isinstance(value, bool | int | float | str) for value in tracker_config(config).values())


def _hparams(log_dir: Path) -> dict:
    """The hyper-parameters TensorBoard's hparams plugin shows for the run under `log_dir`."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = EventMultiplexer().AddRunsFromDirectory(str(log_dir))
    runs.Reload()
    for tags in runs.PluginRunToTagToContent("hparams").values():
        for content in tags.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.WhichOneof("data") == "session_start_info":
                hparams = data.session_start_info.hparams
                return {
                    key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                    for key, value in hparams.items()
                }
    return {}


def _scalar_tags(log_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(log_dir))
    runs.Reload()
    return {tag for tags in runs.Runs().values() for tag in tags.get("scalars", [])}


@pytest.mark.parametrize(
    ("objective", "flags", "list_argument"),
    [
        ("causal_lm", TINY_LM_FLAGS, None),
        ("contrastive", TINY_CONTRASTIVE, ("resnet_widths", "[8, 16]")),
        ("masked_lm", TINY_MLM, None),
    ],
)
def test_default_tracker_writes_events_and_hparams(objective, flags, list_argument, tmp_path, corpus_file):
    out = tmp_path / "run"
    data = [] if objective == "contrastive" else ["--dataset", str(corpus_file)]
    assert pretrain.main([*data, "--output_dir", str(out), *_default_tracker(flags), "--max_steps", "2"]) == 0
    log_dir = out / "pretrain"
    assert list(log_dir.rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert "loss" in _scalar_tags(log_dir)
    hparams = _hparams(log_dir)
    assert hparams["objective"] == objective
    assert hparams["max_steps"] == 2
    if list_argument:
        name, text = list_argument
        assert hparams[name] == text
