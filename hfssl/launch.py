"""`accelerate launch`, with the multi-machine settings checked first and every wait bounded.

    python -m hfssl.launch --multi_gpu --num_machines 2 --machine_rank 1 --num_processes 2 \
        --main_process_ip 10.0.0.1 --main_process_port 29500 scripts/pretrain.py ...

Takes exactly `accelerate launch`'s arguments. Before handing over to it, it checks that --machine_rank is one of
the --num_machines machines and that --num_processes splits evenly over them, and, on a machine other than the
main one, that the main process answers at --main_process_ip:--main_process_port within --connect_timeout seconds
(default 120; this flag is ours and not passed on). Plain `accelerate launch` would wait on either mistake for 10
minutes or forever, then fail with a traceback from torch's rendezvous. The same bound is passed to the rendezvous
(`--rdzv_conf timeout=...`) unless one is given. The settings are read as Accelerate reads them: from the flags,
else from the `--config_file` YAML (recipes/accelerate/multi_node.yaml), else Accelerate's defaults.
"""

import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import yaml

from .run.arguments import flag_value
from .run.errors import InputError

DEFAULT_CONNECT_TIMEOUT = 120.0


class LaunchError(InputError):
    """A launch that cannot start as asked (the message names the flag or the setting)."""


def _launcher_args(argv: list[str]) -> list[str]:
    """The arguments before the training script (the first argument ending in .py, or after -m MODULE)."""
    for i, token in enumerate(argv):
        if token.endswith(".py") or token == "-m":
            return argv[:i]
    return argv


# the launcher settings this module checks, and where a --config_file YAML keeps them (the same names)
_SETTINGS = ("num_machines", "machine_rank", "num_processes", "main_process_ip", "main_process_port", "rdzv_backend")


def _config_file_settings(own: list[str]) -> dict:
    """The settings of the --config_file YAML among `own` ({} without one); LaunchError naming a bad file."""
    spec = flag_value(own, "--config_file")
    if spec is None:
        return {}
    path = Path(spec)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LaunchError(f"--config_file {path} cannot be read as YAML ({type(err).__name__}: {err}).") from None
    if not isinstance(config, dict):
        raise LaunchError(f"--config_file {path} must be a mapping of Accelerate settings.")
    return {key: str(config[key]) for key in _SETTINGS if config.get(key) is not None}


def _settings(own: list[str]) -> dict[str, str]:
    """Each setting as Accelerate will see it: the flag, else the --config_file's value (absent when neither)."""
    settings = _config_file_settings(own)
    for key in _SETTINGS:
        value = flag_value(own, f"--{key}")
        if value is not None:
            settings[key] = value
    return settings


def _int(settings: dict[str, str], key: str, default: int) -> int:
    value = settings.get(key)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise LaunchError(f"--{key} must be a whole number, got {value!r}.") from None


def check_machines(argv: list[str]) -> None:
    """LaunchError for a --machine_rank outside --num_machines, or processes that do not split over the machines."""
    settings = _settings(_launcher_args(argv))
    machines, rank = _int(settings, "num_machines", 1), _int(settings, "machine_rank", 0)
    processes = _int(settings, "num_processes", machines)
    if machines < 1:
        raise LaunchError(f"--num_machines must be at least 1, got {machines}.")
    if not 0 <= rank < machines:
        raise LaunchError(
            f"--machine_rank {rank} is not one of the {machines} machines: use 0 to {machines - 1} (0 on the machine "
            "that runs the main process)."
        )
    if processes % machines:
        raise LaunchError(
            f"--num_processes {processes} (the total over all machines) does not split evenly over {machines} machines."
        )
    if machines > 1 and settings.get("main_process_ip") is None:
        raise LaunchError("--num_machines > 1 needs --main_process_ip, the main machine's address.")


def _take_connect_timeout(argv: list[str]) -> tuple[float, list[str]]:
    """(--connect_timeout in seconds, argv without it); LaunchError unless it is a finite number > 0."""
    own = _launcher_args(argv)
    value = flag_value(own, "--connect_timeout")
    if value is None:
        if "--connect_timeout" in own:
            raise LaunchError("--connect_timeout takes a number of seconds.")
        return DEFAULT_CONNECT_TIMEOUT, argv
    try:
        timeout = float(value)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise LaunchError(f"--connect_timeout must be a number of seconds > 0, got {value!r}.")
    i = next(i for i, token in enumerate(own) if token == "--connect_timeout" or token.startswith("--connect_timeout="))
    return timeout, argv[:i] + argv[i + (1 if "=" in argv[i] else 2) :]


def wait_for_main_process(host: str, port: int, timeout: float) -> None:
    """Return once something listens at host:port; LaunchError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"The main process at {host}:{port} did not answer within {timeout:.0f} s ({err.strerror or err}): "
                    "start machine 0 first, and check --main_process_ip, --main_process_port and the firewall."
                ) from None
            time.sleep(1.0)


def prepare(argv: list[str]) -> list[str]:
    """The `accelerate launch` command line for `argv`, after the checks (LaunchError on a problem)."""
    timeout, argv = _take_connect_timeout(list(argv))
    check_machines(argv)
    own = _launcher_args(argv)
    settings = _settings(own)
    machines, rank = _int(settings, "num_machines", 1), _int(settings, "machine_rank", 0)
    if machines > 1:
        if rank > 0:
            wait_for_main_process(settings["main_process_ip"], _int(settings, "main_process_port", 29500), timeout)
        if flag_value(own, "--rdzv_conf") is None and settings.get("rdzv_backend", "static") == "static":
            argv = ["--rdzv_conf", f"timeout={math.ceil(timeout)}", *argv]
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    return [accelerate, "launch", *argv]


def main(argv: list[str] | None = None) -> int:
    try:
        command = prepare(sys.argv[1:] if argv is None else argv)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.execv(command[0], command)  # accelerate launch takes over this process: execv does not return (or raises)


if __name__ == "__main__":
    sys.exit(main())
