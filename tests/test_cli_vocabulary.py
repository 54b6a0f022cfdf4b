"""Every script speaks one CLI vocabulary (HF examples' spelling): read from each script's own --help."""

import re

import pytest

from tests.conftest import REPO, import_script

WRITES_A_MODEL = ["--output_dir", "--seed", "--overwrite_output_dir", "--push_to_hub", "--hub_model_id"]
TRAINS = ["--save_steps", "--save_total_limit", "--resume_from_checkpoint"]
SHARED_FLAGS = {
    "pretrain": [
        *WRITES_A_MODEL,
        *TRAINS,
        "--model_name_or_path",
        "--dataset",
        "--eval_dataset",
        "--max_steps",
        "--num_train_epochs",
        "--per_device_train_batch_size",
        "--per_device_eval_batch_size",
        "--learning_rate",
        "--config",
    ],
    "finetune": [
        *WRITES_A_MODEL,
        *TRAINS,
        "--model_name_or_path",
        "--dataset",
        "--eval_dataset",
        "--num_train_epochs",
        "--per_device_train_batch_size",
        "--per_device_eval_batch_size",
        "--learning_rate",
        "--config",
    ],
    "probe": [
        *WRITES_A_MODEL,
        "--model_name_or_path",
        "--dataset",
        "--eval_dataset",
        "--per_device_eval_batch_size",
        "--config",
    ],
    # MAML's inner and outer learning rates keep names of their own (--inner_lr, --outer_lr)
    "meta_train": [
        *WRITES_A_MODEL,
        *TRAINS,
        "--model_name_or_path",
        "--dataset",
        "--eval_dataset",
        "--max_steps",
        "--config",
    ],
    "post_train": [
        *WRITES_A_MODEL,
        *TRAINS,
        "--model_name_or_path",
        "--gguf_file",
        "--dataset",
        "--eval_dataset",
        "--max_steps",
        "--num_train_epochs",
        "--per_device_train_batch_size",
        "--per_device_eval_batch_size",
        "--learning_rate",
        "--config",
    ],
    "prompt_eval": ["--model_name_or_path", "--dataset", "--seed", "--per_device_eval_batch_size", "--config"],
    "zero_shot_image": ["--model_name_or_path", "--dataset", "--seed", "--per_device_eval_batch_size", "--config"],
    "push": ["--config"],
    "analyze": ["--model_name_or_path", "--gguf_file", "--output_dir", "--overwrite_output_dir", "--seed", "--config"],
    "convert_gguf": ["--model_name_or_path", "--gguf_file", "--output_dir", "--overwrite_output_dir", "--config"],
}
# spellings the scripts used before they shared one vocabulary
RETIRED = ["--epochs", "--batch_size", "--meta_steps", "--resume", "--num_epochs", "--seeds"]


def _help(name: str, capsys) -> set[str]:
    main = import_script(name).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    return set(re.findall(r"--[a-z0-9_-]+", capsys.readouterr().out))


@pytest.mark.parametrize("script", sorted(SHARED_FLAGS))
def test_script_help_lists_the_shared_flags(script, capsys):
    flags = _help(script, capsys)
    assert set(SHARED_FLAGS[script]) <= flags, sorted(set(SHARED_FLAGS[script]) - flags)
    assert not flags & set(RETIRED), sorted(flags & set(RETIRED))


def test_every_script_is_covered():
    scripts = {p.stem for p in (REPO / "scripts").glob("*.py")}
    assert scripts == set(SHARED_FLAGS)


def test_contrastive_objective_help_lists_its_own_flags(capsys):
    main = import_script("pretrain").main
    with pytest.raises(SystemExit):
        main(["--objective", "contrastive", "--help"])
    flags = set(re.findall(r"--[a-z0-9_-]+", capsys.readouterr().out))
    assert {"--temperature", "--knn_k", "--resnet_widths", "--max_steps"} <= flags
    assert "--icl_warmup_steps" not in flags  # the causal LM's, not this objective's
