"""What `accelerate launch` (or torchrun, or SLURM's srun) asked for, checked before any training.

Accelerate falls back quietly where hfssl must not: on a machine without GPUs an FSDP or DeepSpeed config runs N
independent full copies (or plain DDP), and a multi-process launch that never forms a process group trains N
separate models that overwrite each other's output. Both are stopped here with one line saying what to do.
"""

import os

from ..run.errors import InputError


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def check_sharding_request(accelerator_available: bool) -> None:
    """ValueError if the launch asks for FSDP or DeepSpeed on a machine without an accelerator device."""
    if accelerator_available:
        return
    for env, what in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if _flag(env):
            raise InputError(
                f"The launch asks for {what}, but this machine has no GPU: Accelerate's {what} path needs one, and "
                "without it every process would train its own full copy. On CPU use data parallelism "
                "(`accelerate launch --multi_gpu --num_processes N`, gloo), which hfssl runs as one job; shard on GPUs "
                "(recipes/accelerate/)."
            )


def check_process_group(num_processes: int) -> None:
    """ValueError if more processes were launched than joined the run's process group."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and num_processes != launched:
        raise InputError(
            f"{launched} processes were launched (WORLD_SIZE) but the run's process group has {num_processes}: they "
            "would train separate models into one folder. Launch with `accelerate launch --multi_gpu` (one machine) "
            "or with --num_machines / --machine_rank (several), so that Accelerate starts a distributed run."
        )


def check_wrap_policy(model) -> None:
    """ValueError if FSDP's transformer wrap policy has nothing to wrap: neither the model's `_no_split_modules` nor
    fsdp_transformer_layer_cls_to_wrap in the config name a layer class."""
    if not _flag("ACCELERATE_USE_FSDP") or os.environ.get("FSDP_AUTO_WRAP_POLICY") != "TRANSFORMER_BASED_WRAP":
        return
    if os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP") or getattr(model, "_no_split_modules", None):
        return
    raise InputError(
        f"The FSDP config wraps by transformer layer, but {type(model).__name__} declares no `_no_split_modules` and "
        "the config names no fsdp_transformer_layer_cls_to_wrap: set the latter to the model's block class, or use "
        "fsdp_auto_wrap_policy: SIZE_BASED_WRAP."
    )
