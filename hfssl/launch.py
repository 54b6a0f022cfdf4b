"""`accelerate launch`, with the multi-machine settings checked first and every wait bounded.

    python -m hfssl.launch --multi_gpu --num_machines 2 --machine_rank 1 --num_processes 2 \
        --main_process_ip 10.0.0.1 --main_process_port 29500 scripts/pretrain.py ...

Takes exactly `accelerate launch`'s arguments. Before handing over to it, it checks that --machine_rank is one of
the --num_machines machines and that --num_processes splits evenly over them, and, on a machine other than the
main one, that the main process answers at --main_process_ip:--main_process_port within --connect_timeout seconds
(default 120; this flag is ours and not passed on). Plain `accelerate launch` would wait on either mistake for 10
minutes or forever, then fail with a traceback from torch's rendezvous. The same bound is passed to the rendezvous
(`--rdzv_conf timeout=...`) unless one is given.
"""

import os
import shutil
import socket
import sys
import time

from .run.arguments import flag_value

DEFAULT_CONNECT_TIMEOUT = 120.0


class LaunchError(ValueError):
    pass


def _launcher_args(argv: list[str]) -> list[str]:
    """The arguments before the training script (the first argument ending in .py, or after -m MODULE)."""
    for i, token in enumerate(argv):
        if token.endswith(".py") or token == "-m":
            return argv[:i]
    return argv


def _int(argv: list[str], flag: str, default: int) -> int:
    value = flag_value(argv, flag)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise LaunchError(f"{flag} must be a whole number, got {value!r}.") from None


def check_machines(argv: list[str]) -> None:
    """LaunchError for a --machine_rank outside --num_machines, or processes that do not split over the machines."""
    own = _launcher_args(argv)
    machines, rank = _int(own, "--num_machines", 1), _int(own, "--machine_rank", 0)
    processes = _int(own, "--num_processes", machines)
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
    if machines > 1 and flag_value(own, "--main_process_ip") is None:
        raise LaunchError("--num_machines > 1 needs --main_process_ip, the main machine's address.")


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
    argv = list(argv)
    timeout = DEFAULT_CONNECT_TIMEOUT
    if "--connect_timeout" in argv:
        i = argv.index("--connect_timeout")
        try:
            timeout = float(argv[i + 1])
        except (IndexError, ValueError):
            raise LaunchError("--connect_timeout takes a number of seconds.") from None
        del argv[i : i + 2]
    check_machines(argv)
    own = _launcher_args(argv)
    machines, rank = _int(own, "--num_machines", 1), _int(own, "--machine_rank", 0)
    if machines > 1:
        if rank > 0:
            wait_for_main_process(
                flag_value(own, "--main_process_ip"), _int(own, "--main_process_port", 29500), timeout
            )
        if flag_value(own, "--rdzv_conf") is None and (flag_value(own, "--rdzv_backend") or "static") == "static":
            argv = ["--rdzv_conf", f"timeout={int(timeout)}", *argv]
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    return [accelerate, "launch", *argv]


def main(argv: list[str] | None = None) -> int:
    try:
        command = prepare(sys.argv[1:] if argv is None else argv)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.execv(command[0], command)  # accelerate launch takes over this process
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
