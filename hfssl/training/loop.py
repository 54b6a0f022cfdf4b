"""The one Accelerate training loop shared by every pretraining objective.

Per optimizer step: `gradient_accumulation_steps` micro-batches under `accelerator.accumulate`, the mean
micro-batch loss reduced across processes (and checked to be finite), gradient clipping, AdamW, and a
linear-warmup + cosine learning-rate schedule. Data order is a pure function of (seed, epoch), so a
resumed run skips exactly the batches it had consumed and continues bit-for-bit.
"""

import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from .arguments import DataArguments, ModelArguments, PretrainArguments
from .checkpointing import (
    METRICS_FILE,
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    write_json_atomic,
)
from .objectives import build_objective

logger = logging.getLogger(__name__)

# Fault injection for tests: the process dies (no cleanup, like a kill) when this optimizer step begins.
_CRASH_AT_STEP_ENV = "HFSSL_TEST_CRASH_AT_STEP"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class EpochShuffleSampler(Sampler[int]):
    """A permutation of range(n) that depends only on (seed, epoch): resumable and equal on every process."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def _optimizer(model: torch.nn.Module, args: PretrainArguments) -> torch.optim.Optimizer:
    """AdamW; matrices of Linear layers get weight decay, biases / norms / embeddings do not."""
    decay, no_decay = [], []
    embedding_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embedding_params else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2))


def _accelerator_available() -> bool:
    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, XPU, MPS, ...
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def _cores_per_process(accelerator: Accelerator) -> int:
    """CPU cores of this machine shared evenly among the processes running on it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    return max(1, cores // max(local_processes, 1))


def _tracker(report_to: str) -> str | None:
    if report_to == "none":
        return None
    if report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            logger.warning("tensorboard is not installed: metrics go to metrics.json only.")
            return None
    return report_to


def _prepare_output_dir(args: PretrainArguments) -> None:
    if args.resume_from_checkpoint is None and list_checkpoints(args.output_dir) and not args.overwrite_output_dir:
        raise FileExistsError(
            f"{args.output_dir} holds checkpoints of an earlier run. Continue it with --resume_from_checkpoint "
            "latest, start afresh with --overwrite_output_dir, or choose another --output_dir."
        )


def run_pretraining(model_args: ModelArguments, data_args: DataArguments, args: PretrainArguments) -> dict:
    """Train with the chosen objective; save the model, companions and metrics.json to args.output_dir.

    Returns a summary dict: output_dir, final metrics, and the objective's `finish` text (e.g. a sample).
    """
    _prepare_output_dir(args)
    accelerator = Accelerator(
        # without an accelerator device, cpu=True is what makes `accelerate launch --multi_gpu
        # --num_processes N` (torchrun env vars) start a gloo process group instead of N lone runs
        cpu=not _accelerator_available(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=_tracker(args.report_to),
        project_dir=args.output_dir,
    )
    set_seed(args.seed)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(args.cpu_threads or _cores_per_process(accelerator))
    output_dir = Path(args.output_dir)
    resume = resolve_checkpoint(args.resume_from_checkpoint, output_dir) if args.resume_from_checkpoint else None

    objective = build_objective(args.objective, model_args, data_args, args)
    setup = objective.setup(accelerator, resuming=resume is not None)
    model = setup.model
    if args.gradient_checkpointing:  # transformers 5 renamed it; keep working with either name
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()

    sampler = EpochShuffleSampler(len(setup.train_dataset), args.seed)
    train_loader = DataLoader(
        setup.train_dataset,
        batch_size=args.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=setup.collate_fn,
        drop_last=True,  # every optimizer step sees the same number of sequences
        num_workers=args.dataloader_num_workers,
        # a private generator: creating an iterator would otherwise draw from the global RNG and shift
        # the dropout stream of a resumed run relative to an uninterrupted one
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_loader = None
    if setup.eval_dataset is not None and len(setup.eval_dataset) > 0:
        eval_loader = DataLoader(
            setup.eval_dataset, batch_size=args.per_device_eval_batch_size, collate_fn=setup.collate_fn
        )
    optimizer = _optimizer(model, args)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    # step counts after prepare: the loader is now per process
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise ValueError(
            f"The training set ({len(setup.train_dataset)} sequences) is smaller than one global batch "
            f"({args.per_device_train_batch_size} x {accelerator.num_processes} processes): lower the batch size."
        )
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_epochs * steps_per_epoch)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * max_steps), max_steps)
    accelerator.register_for_checkpointing(scheduler)

    state = TrainerState()
    if resume is not None:
        state = load_checkpoint(accelerator, resume)
        logger.info("Resumed from %s at step %d", resume, state.global_step)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        run_args = {**asdict(model_args), **asdict(data_args), **asdict(args), "num_processes": accelerator.num_processes}
        write_json_atomic(output_dir / "run_args.json", run_args)
    accelerator.init_trackers("pretrain", config={k: v for k, v in asdict(args).items() if v is not None})

    def log(entry: dict) -> None:
        entry = {"step": state.global_step, **entry}
        state.log_history.append(entry)
        accelerator.log({k: v for k, v in entry.items() if k != "step"}, step=state.global_step)

    def evaluate() -> dict:
        metrics = objective.evaluate(model, eval_loader, accelerator) if eval_loader is not None else {}
        if metrics:
            log(metrics)
            accelerator.print(f"step {state.global_step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

    crash_at = int(os.environ.get(_CRASH_AT_STEP_ENV, "0"))
    progress = tqdm(total=max_steps, initial=state.global_step, disable=not accelerator.is_local_main_process,
                    desc=f"pretrain ({args.objective})", dynamic_ncols=True)
    model.train()
    micro_losses, items, window_start = [], 0, time.perf_counter()
    while state.global_step < max_steps:
        sampler.set_epoch(state.epoch)
        loader = train_loader
        if state.batches_in_epoch:
            loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch)
        for batch in loader:
            if crash_at and state.global_step + 1 == crash_at:
                os._exit(17)
            with accelerator.accumulate(model):
                loss = objective.training_loss(model, batch)
                accelerator.backward(loss)
                micro_losses.append(loss.detach())
                items += objective.items_in_batch(batch)
                if accelerator.sync_gradients:
                    step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
                    micro_losses = []
                    if not math.isfinite(step_loss):
                        kept = list_checkpoints(output_dir)
                        raise NonFiniteLossError(
                            f"Loss became {step_loss} at step {state.global_step + 1}; training stopped. "
                            + (f"Last good checkpoint: {kept[-1]}." if kept else "No checkpoint was written yet.")
                            + " Lower --learning_rate or raise --warmup_ratio, then resume or restart."
                        )
                    if args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.3f}")
            if state.global_step % args.logging_steps == 0 or state.global_step == max_steps:
                elapsed = time.perf_counter() - window_start
                log({"loss": step_loss, "learning_rate": scheduler.get_last_lr()[0],
                     "items_per_second": items * accelerator.num_processes / max(elapsed, 1e-9)})
                items, window_start = 0, time.perf_counter()
            if args.eval_steps > 0 and state.global_step % args.eval_steps == 0 and state.global_step < max_steps:
                evaluate()
            if state.batches_in_epoch >= batches_per_epoch:
                state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            if args.save_steps > 0 and state.global_step % args.save_steps == 0 and state.global_step < max_steps:
                save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
            if state.global_step >= max_steps:
                break
        else:  # loader exhausted (Accelerate syncs on the last batch, so the epoch has normally rolled over)
            if state.batches_in_epoch:
                state.epoch, state.batches_in_epoch = state.epoch + 1, 0
    progress.close()

    final_metrics = evaluate()
    summary = {"output_dir": str(output_dir), "global_step": state.global_step, **final_metrics}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(output_dir, safe_serialization=True)
        for companion in setup.companions:
            companion.save_pretrained(output_dir)
        write_json_atomic(output_dir / METRICS_FILE, {"final": final_metrics, "log_history": state.log_history})
        summary["sample"] = objective.finish(unwrapped, output_dir, accelerator)
    accelerator.end_training()
    return summary
