"""Beyond one process group on one machine: two "machines" on this host (one process each, two launches), the model
side of FSDP2 sharding with torch's fully_shard, launch settings that are refused before training, and sharding
configs refused on a machine without GPUs."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfssl import GPTForCausalLM, launch
from hfssl.training.launch_checks import check_process_group, check_sharding_request, check_wrap_policy
from tests.conftest import REPO, TINY_LM_FLAGS, tiny_gpt_config, why_failed, with_flags
from tests.training.test_pretrain import CRASH_AT_STEP, SCRIPT, _env, _weights

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
FULLY_SHARD = REPO / "tests" / "helpers" / "fully_shard_two_processes.py"
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
LM = [*TINY_LM_FLAGS, "--max_steps", "6", "--logging_steps", "1", "--eval_split_fraction", "0.1"]
VISION = (
    "--objective contrastive --image_size 8 --resnet_layers 1 1 --resnet_widths 8 8 --projection_dims 8 --max_steps 3 "
    "--report_to none --logging_steps 1 --knn_bank_size 50 --eval_steps 0 --per_device_train_batch_size 4"
).split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_machines(script_and_args: list[str]) -> list[subprocess.CompletedProcess]:
    """The same run launched as machine 0 and machine 1 (one process each) on this host, through hfssl.launch."""
    port = _free_port()
    launches = []
    for rank in (1, 0):  # machine 1 first: it waits for the main process
        command = [sys.executable, "-m", "hfssl.launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2"]
        command += ["--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
        launches.append(
            subprocess.Popen(
                [*command, *script_and_args],
                env=_env(),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for process in launches:
        out, err = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def _losses(out: Path) -> list[float]:
    return [e["loss"] for e in json.loads((out / "metrics.json").read_text())["log_history"] if "loss" in e]


# ---- the launcher's checks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("--num_machines 2 --machine_rank 2 --main_process_ip 10.0.0.1", "--machine_rank 2 is not one of the 2"),
        ("--num_machines 2 --machine_rank -1 --main_process_ip 10.0.0.1", "--machine_rank -1 is not one of the 2"),
        ("--num_machines 2 --num_processes 3 --main_process_ip 10.0.0.1", "does not split evenly over 2 machines"),
        ("--num_machines 2 --machine_rank 1", "needs --main_process_ip"),
        ("--num_machines two", "--num_machines must be a whole number"),
        ("--connect_timeout -5", "--connect_timeout must be a number of seconds > 0, got '-5'"),
        ("--connect_timeout nan", "--connect_timeout must be a number of seconds > 0, got 'nan'"),
        ("--connect_timeout=inf", "--connect_timeout must be a number of seconds > 0, got 'inf'"),
        ("--connect_timeout", "--connect_timeout takes a number of seconds"),
    ],
)
def test_the_launcher_refuses_machine_settings_that_cannot_form_a_run(argv, message, capsys):
    assert launch.main([*argv.split(), "scripts/pretrain.py"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err and "Traceback" not in err


def test_an_unreachable_main_process_is_reported_after_the_timeout(capsys):
    argv = "--multi_gpu --num_machines 2 --machine_rank 1 --num_processes 2 --main_process_ip 127.0.0.1"
    argv += f" --main_process_port {_free_port()} --connect_timeout 2 scripts/pretrain.py"
    assert launch.main(argv.split()) == 2
    err = capsys.readouterr().err
    assert "did not answer within 2 s" in err and "start machine 0 first" in err


def test_the_launcher_reads_the_settings_of_a_config_file_and_flags_win(tmp_path, capsys):
    config = tmp_path / "multi_node.yaml"
    config.write_text(
        (REPO / "recipes" / "accelerate" / "multi_node.yaml")
        .read_text()
        .replace("10.0.0.1", "127.0.0.1")
        .replace("29500", str(_free_port()))
    )
    # machine 1 of the file's 2 waits for the file's main process, and reports it unreachable
    assert launch.main(["--config_file", str(config), "--machine_rank", "1", "--connect_timeout=1", "x.py"]) == 2
    assert "The main process at 127.0.0.1:" in capsys.readouterr().err
    assert launch.main(["--config_file", str(config), "--machine_rank", "2", "x.py"]) == 2
    assert "--machine_rank 2 is not one of the 2 machines" in capsys.readouterr().err
    command = launch.prepare(["--config_file", str(config), "--num_machines", "1", "x.py"])
    assert command[2:] == ["--config_file", str(config), "--num_machines", "1", "x.py"]  # one machine: no wait
    (tmp_path / "broken.yaml").write_text("num_machines: [2\n")
    assert launch.main(["--config_file", str(tmp_path / "broken.yaml"), "x.py"]) == 2
    assert "broken.yaml cannot be read as YAML" in capsys.readouterr().err


def test_the_launcher_bounds_the_rendezvous_and_keeps_everything_else():
    argv = "--num_machines 2 --machine_rank 0 --num_processes 2 --main_process_ip 127.0.0.1 --connect_timeout 30"
    command = launch.prepare([*argv.split(), "scripts/pretrain.py", "--max_steps", "3"])
    assert command[1:4] == ["launch", "--rdzv_conf", "timeout=30"]
    assert command[-3:] == ["scripts/pretrain.py", "--max_steps", "3"] and "--connect_timeout" not in command
    one_machine = launch.prepare(["--multi_gpu", "--num_processes", "2", "scripts/pretrain.py"])
    assert one_machine[2:] == ["--multi_gpu", "--num_processes", "2", "scripts/pretrain.py"]


def test_sharding_and_unjoined_processes_are_refused_before_training(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="asks for FSDP, but this machine has no GPU"):
        check_sharding_request(accelerator_available=False)
    check_sharding_request(accelerator_available=True)  # on GPUs Accelerate shards
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match="asks for DeepSpeed"):
        check_sharding_request(accelerator_available=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="2 processes were launched"):
        check_process_group(num_processes=1)
    check_process_group(num_processes=2)


def test_fsdp_transformer_wrapping_needs_a_layer_class(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    with pytest.raises(ValueError, match="declares no `_no_split_modules`"):
        check_wrap_policy(torch.nn.Linear(2, 2))
    check_wrap_policy(GPTForCausalLM(tiny_gpt_config()))  # declares GPTBlock
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "Linear")
    check_wrap_policy(torch.nn.Linear(2, 2))  # the config names one


# ---- end to end -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_fsdp_config_on_cpu_stops_with_a_clear_error(tmp_path, corpus_file):
    config = REPO / "recipes" / "accelerate" / "fsdp2.yaml"
    out = tmp_path / "fsdp"
    command = [ACCELERATE, "launch", "--config_file", str(config), str(SCRIPT), "--dataset", str(corpus_file)]
    result = subprocess.run(
        [*command, "--output_dir", str(out), *LM], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "error: The launch asks for FSDP, but this machine has no GPU" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_two_machines_match_one_process_on_the_global_batch(tmp_path, corpus_file):
    data = ["--dataset", str(corpus_file)]
    one = tmp_path / "one"
    single = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *data,
            "--output_dir",
            str(one),
            *with_flags(LM, "--per_device_train_batch_size", "4"),
        ],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, why_failed(single)
    two = tmp_path / "two"
    for result in _two_machines(
        [str(SCRIPT), *data, "--output_dir", str(two), *with_flags(LM, "--per_device_train_batch_size", "2")]
    ):
        assert result.returncode == 0, why_failed(result, 3000)
    assert json.loads((two / "run_args.json").read_text())["num_processes"] == 2
    torch.testing.assert_close(torch.tensor(_losses(two)), torch.tensor(_losses(one)), rtol=1e-5, atol=1e-5)
    w1, w2 = _weights(one), _weights(two)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_contrastive_on_two_machines_equals_two_processes_on_one(tmp_path):
    """Negatives are gathered across machines with gradients: the same run as 2 processes of one machine (BatchNorm
    statistics are per process in both)."""
    one_machine = tmp_path / "one-machine"
    command = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", str(SCRIPT), "--output_dir"]
    local = subprocess.run(
        [*command, str(one_machine), *VISION], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert local.returncode == 0, why_failed(local, 3000)
    two = tmp_path / "two-machines"
    for result in _two_machines([str(SCRIPT), "--output_dir", str(two), *VISION]):
        assert result.returncode == 0, why_failed(result, 3000)
    torch.testing.assert_close(torch.tensor(_losses(two)), torch.tensor(_losses(one_machine)), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_killed_two_machine_run_resumes_exactly_with_every_ranks_random_state(tmp_path, corpus_file):
    run = ["--dataset", str(corpus_file), *with_flags(LM, "--per_device_train_batch_size", "2", "--save_steps", "2")]
    run += ["--dropout", "0.1"]  # random draws on each rank: resuming needs every rank's RNG state
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    for result in _two_machines([str(SCRIPT), *run, "--output_dir", str(straight)]):
        assert result.returncode == 0, why_failed(result, 3000)
    for result in _two_machines([str(CRASH_AT_STEP), "4", str(SCRIPT), *run, "--output_dir", str(crashed)]):
        assert result.returncode != 0
    checkpoint = crashed / "checkpoints" / "step-000002"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in checkpoint.iterdir()}
    for result in _two_machines(
        [str(SCRIPT), *run, "--output_dir", str(crashed), "--resume_from_checkpoint", "latest"]
    ):
        assert result.returncode == 0, why_failed(result, 3000)
    assert _losses(crashed) == pytest.approx(_losses(straight), abs=1e-6)  # step by step, the resumed part included
    a, b = _weights(straight), _weights(crashed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_fully_shard_trains_gathers_and_reloads_our_models(tmp_path):
    """torch's FSDP2 over 2 gloo processes: GPT (tied embeddings) and SimCLR sharded per `_no_split_modules` unit, one
    AdamW step, the full state dict gathered, saved and reloaded with from_pretrained: the same outputs as the model
    trained unsharded."""
    env = {**_env(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [TORCHRUN, "--nproc_per_node", "2", str(FULLY_SHARD), str(tmp_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, why_failed(result, 3000)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world_size"] == 2
    for kind, units in (("gpt", 2), ("simclr", 2)):
        assert report[kind]["units"] == units and report[kind]["local_fraction"] == pytest.approx(0.5, abs=0.05)
        assert report[kind]["loss_diff"] < 1e-6 and report[kind]["max_abs_diff"] < 1e-5, report[kind]
    assert os.path.isfile(tmp_path / "gpt" / "model.safetensors")
