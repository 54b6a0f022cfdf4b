"""The one Accelerate training loop shared by every pretraining objective.

Per optimizer step: `gradient_accumulation_steps` micro-batches under `accelerator.accumulate`, the mean
micro-batch loss reduced across processes (and checked to be finite), gradient clipping, AdamW, and a
linear-warmup + cosine learning-rate schedule. Data order is a pure function of (seed, epoch), so a
resumed run skips exactly the batches it had consumed and continues bit-for-bit. An objective may ask for a
warm-up phase (`PretrainingSetup.warmup`, e.g. the causal LM's in-context warm-up): its steps come first, on
its own dataset, and the corpus's schedule restarts after it. `--max_steps` counts the whole run, warm-up included.
"""

import logging
import math
import os
import time
from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..run.callbacks import CallbackList
from ..run.checkpoints import (
    RUN_ARGS_FILE,
    NonFiniteLossError,
    TrainerState,
    write_json_atomic,
)
from ..run.errors import InputError
from ..run.output import publish, save_pretrained_all
from ..run.results import PretrainResult, save_result
from ..run.start import prepare_run
from ..run.steps import checkpoint_due, epoch_generator, optimizer_step
from ..run.trackers import tracker_config, tracker_name
from .arguments import PretrainArguments
from .checkpointing import load_checkpoint, save_checkpoint
from .launch_checks import check_process_group, check_sharding_request, check_wrap_policy
from .objectives import build_objective

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "PretrainingLoop", "run_pretraining"]


class EpochShuffleSampler(Sampler[int]):
    """A permutation of range(n) that depends only on (seed, epoch): resumable and equal on every process."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


def _optimizer(model: torch.nn.Module, args: PretrainArguments) -> torch.optim.Optimizer:
    """AdamW; matrices of Linear layers get weight decay, biases / norms / embeddings do not."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
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


def _make_accelerator(args: PretrainArguments) -> Accelerator:
    check_sharding_request(_accelerator_available())
    accelerator = Accelerator(
        # without an accelerator device, cpu=True is what makes `accelerate launch --multi_gpu
        # --num_processes N` (torchrun env vars) start a gloo process group instead of N lone runs
        cpu=not _accelerator_available(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=tracker_name(args.report_to),
        project_dir=args.output_dir,
    )
    check_process_group(accelerator.num_processes)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(args.cpu_threads or _cores_per_process(accelerator))
    return accelerator


def _train_loader(
    dataset, collate_fn, batch_size: int, args: PretrainArguments
) -> tuple[DataLoader, EpochShuffleSampler]:
    sampler = EpochShuffleSampler(len(dataset), args.seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        drop_last=True,  # every optimizer step sees the same number of sequences
        num_workers=args.dataloader_num_workers,
        # a private generator: creating an iterator would otherwise draw from the global RNG and shift
        # the dropout stream of a resumed run relative to an uninterrupted one
        generator=torch.Generator().manual_seed(args.seed),
    )
    return loader, sampler


def _lr_schedule(optimizer: torch.optim.Optimizer, warmup_phase_steps: int, steps: int, warmup_ratio: float):
    """Linear warmup over warmup_ratio x steps, then cosine decay to 0 at `steps` (transformers' schedule).

    With a warm-up phase (its W steps come first): linear warmup over warmup_ratio x W, the peak rate for the
    rest of the phase, then the schedule above, restarted, for the `steps` corpus steps.
    """
    if warmup_phase_steps == 0:
        return get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    phase_ramp, ramp = max(1, int(warmup_ratio * warmup_phase_steps)), int(warmup_ratio * steps)

    def factor(step: int) -> float:
        if step < warmup_phase_steps:
            return min(1.0, (step + 1) / phase_ramp)
        step -= warmup_phase_steps
        if step < ramp:
            return step / max(1, ramp)
        progress = (step - ramp) / max(1, steps - ramp)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return LambdaLR(optimizer, factor)


class PretrainingLoop:
    """One run: built from its objective's arguments, then `train()` and `save()`.

    Every process runs the same code; Accelerate decides what each one sees and does. `callbacks` (and those
    registered with `hfssl.run.callbacks.register_callback`) are called at every step.
    """

    def __init__(self, args: PretrainArguments, callbacks=None):
        self.args, self.output_dir = args, Path(args.output_dir)
        self.callbacks = CallbackList(callbacks)
        self.accelerator = accelerator = _make_accelerator(args)
        self.run_args = {**args.to_dict(), "num_processes": accelerator.num_processes}
        resume = prepare_run(
            args,
            [
                args.source.input_path if args.model_name_or_path else None,
                getattr(args, "tokenizer_name_or_path", None),
            ],
            recorded=self.run_args,
            is_main=accelerator.is_main_process,
        )
        accelerator.wait_for_everyone()
        set_seed(args.seed)
        self.objective = build_objective(args)
        # a loss over the whole accumulated batch (gradient cache) instead of one loss per micro-batch
        self.cached_accumulation = args.gradient_accumulation_steps > 1 and self.objective.accumulates_groups
        self.setup = setup = self.objective.setup(accelerator, resuming=resume is not None)
        check_wrap_policy(setup.model)
        if args.gradient_checkpointing:  # transformers 5 renamed it; keep working with either name
            model = cast("PreTrainedModel", setup.model)
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        optimizer = self._prepare_data_and_model(setup)
        self._schedule(optimizer)
        self.state = TrainerState()
        if resume is not None:
            self.state = load_checkpoint(accelerator, resume, self.scheduler)
            logger.info("Resumed from %s at step %d", resume, self.state.global_step)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / RUN_ARGS_FILE, self.run_args)
        accelerator.init_trackers("pretrain", config=tracker_config(args.to_dict()))

    def _prepare_data_and_model(self, setup) -> torch.optim.Optimizer:
        """Data loaders, optimizer and model through `accelerator.prepare` (the loaders become per process)."""
        args, accelerator = self.args, self.accelerator
        train_loader, self.sampler = _train_loader(
            setup.train_dataset, setup.collate_fn, args.per_device_train_batch_size, args
        )
        self.warmup_steps = setup.warmup.steps if setup.warmup else 0
        self.warmup_name = setup.warmup.name if setup.warmup else ""
        if setup.warmup:
            warmup_loader, _ = _train_loader(
                setup.warmup.dataset, setup.collate_fn, setup.warmup.per_device_batch_size, args
            )  # one pass: epoch 0
            self.warmup_loader = accelerator.prepare(warmup_loader)
        self.eval_loader = None
        if setup.eval_dataset is not None and len(setup.eval_dataset) > 0:
            eval_loader = DataLoader(
                setup.eval_dataset,
                batch_size=args.per_device_eval_batch_size,
                collate_fn=setup.eval_collate_fn or setup.collate_fn,
            )
            self.eval_loader = accelerator.prepare(eval_loader)
        optimizer = _optimizer(setup.model, args)
        self.model, self.optimizer, self.train_loader = accelerator.prepare(setup.model, optimizer, train_loader)
        return optimizer

    def _schedule(self, optimizer: torch.optim.Optimizer) -> None:
        """Step counts (after prepare: the loader is now per process) and the learning-rate schedule."""
        args, accelerator = self.args, self.accelerator
        self.batches_per_epoch = len(self.train_loader)
        if self.batches_per_epoch == 0:
            items = len(cast(Sized, self.setup.train_dataset))
            raise InputError(
                f"The training set ({items} items) is smaller than one global batch "
                f"({args.per_device_train_batch_size} x {accelerator.num_processes} processes): lower the batch size."
            )
        steps_per_epoch = math.ceil(self.batches_per_epoch / args.gradient_accumulation_steps)
        if args.max_steps > 0:  # the run's total, a warm-up phase included (as Trainer's max_steps)
            corpus_steps = args.max_steps - self.warmup_steps
        else:
            corpus_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
        self.max_steps = self.warmup_steps + corpus_steps
        # not prepared: Accelerate's wrapper would step it once per process; checkpointed as JSON by save_checkpoint
        self.scheduler = _lr_schedule(optimizer, self.warmup_steps, corpus_steps, args.warmup_ratio)

    # ---- bookkeeping -------------------------------------------------------------------------------
    def log(self, entry: dict) -> None:
        self.state.log_history.append({"step": self.state.global_step, **entry})
        self.accelerator.log(entry, step=self.state.global_step)

    def evaluate(self) -> dict:
        if self.eval_loader is None:
            return {}
        metrics = self.objective.evaluate(self.model, self.eval_loader, self.accelerator)
        self._report(metrics)
        return metrics

    def step_metrics(self, final: bool = False) -> None:
        """The objective's metrics of this step, when it has any now (logged and printed like an evaluation)."""
        metrics = self.objective.step_metrics(self.accelerator.unwrap_model(self.model), self.state.global_step, final)
        if metrics:
            self._report(metrics)

    def _report(self, metrics: dict) -> None:
        """Log `metrics` at this step and print them as `step N: name=value, ...`."""
        self.log(metrics)
        self.accelerator.print(
            f"step {self.state.global_step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        )

    def _in_warmup(self) -> bool:
        return self.state.global_step < self.warmup_steps

    def _epoch_batches(self):
        """This epoch's batches (or the warm-up phase's), skipping those a resumed run had already consumed."""
        if self._in_warmup():
            loader, epoch = self.warmup_loader, 0  # one pass: state.epoch stays 0 until the corpus starts
        else:
            loader, epoch = self.train_loader, self.state.epoch
            self.objective.on_epoch_start(epoch)  # e.g. new masks each pass (hfssl.training.masking)
        if self.state.batches_in_epoch:
            loader = self.accelerator.skip_first_batches(loader, self.state.batches_in_epoch)
        # Accelerate's loaders set their sampler's epoch from their own count of passes, which a resumed run (and
        # the new loader skip_first_batches makes) starts at 0: tell them the run's epoch
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        return loader

    # ---- training ----------------------------------------------------------------------------------
    def _micro_step(self, batch, micro_losses: list) -> float | None:
        """Forward/backward one micro-batch; on the last of an accumulation group, the optimizer step.

        An objective that `accumulates_groups` (a contrastive loss: gradient cache) gets the group's micro-batches
        together instead, once the last has arrived. Returns the step's loss (mean over micro-batches and processes)
        after an optimizer step, else None.
        """
        accelerator, args = self.accelerator, self.args
        if self.cached_accumulation:
            micro_losses.append(batch)  # here: the group's micro-batches
            group_done = len(micro_losses) == args.gradient_accumulation_steps
            if not group_done and not accelerator.gradient_state.end_of_dataloader:
                return None
            loss = self.objective.accumulated_step(self.model, list(micro_losses), accelerator)
            micro_losses.clear()
            return self._optimizer_step(accelerator.reduce(loss, reduction="mean").item())
        with accelerator.accumulate(self.model):
            loss = self.objective.training_loss(self.model, batch)
            accelerator.backward(loss)
            micro_losses.append(loss.detach())
            if not accelerator.sync_gradients:
                return None
            step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
            micro_losses.clear()
            return self._optimizer_step(step_loss)

    def _optimizer_step(self, step_loss: float) -> float:
        """Clip, step, schedule; the loss is checked first, so the weights stay finite."""
        optimizer_step(
            self.optimizer,
            self.scheduler,
            step_loss,
            step=self.state.global_step + 1,
            output_dir=self.output_dir,
            advice="Lower --learning_rate or raise --warmup_ratio",
            max_grad_norm=self.args.max_grad_norm,
            clip=lambda max_norm: self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm),
        )
        return step_loss

    def _after_step(self, step_loss: float, items: int, seconds: float) -> bool:
        """Log, evaluate and checkpoint on schedule. Returns True when the run is done."""
        args, state = self.args, self.state
        was_warmup = self._in_warmup()
        state.global_step += 1
        final = state.global_step >= self.max_steps
        if state.global_step % args.logging_steps == 0 or final:
            self.log(
                {
                    "loss": step_loss,
                    "learning_rate": self.scheduler.get_last_lr()[0],
                    "items_per_second": items * self.accelerator.num_processes / max(seconds, 1e-9),
                }
            )
        if args.eval_steps > 0 and state.global_step % args.eval_steps == 0 and not final and not was_warmup:
            self.evaluate()
        self.step_metrics(final)
        if was_warmup:
            if not self._in_warmup():  # the phase is over: the corpus starts at its epoch 0
                state.epoch, state.batches_in_epoch = 0, 0
                logger.info("%s done after %d steps; training on the corpus", self.warmup_name, state.global_step)
        elif state.batches_in_epoch >= self.batches_per_epoch:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        if checkpoint_due(args.save_steps, state.global_step, final):
            checkpoint = save_checkpoint(
                self.accelerator, self.output_dir, state, args.save_total_limit, self.run_args, self.scheduler
            )
            self.callbacks.on_save(checkpoint)
        self.callbacks.on_step_end(state.global_step, step_loss)
        return final

    def train(self) -> None:
        state = self.state
        progress = tqdm(
            total=self.max_steps,
            initial=state.global_step,
            dynamic_ncols=True,
            disable=not self.accelerator.is_local_main_process,
            desc=f"pretrain ({self.args.objective})",
        )
        self.model.train()
        micro_losses: list = []  # the losses (or, for a cached accumulation, the batches) of this optimizer step
        items, window_start = 0, time.perf_counter()
        done = state.global_step >= self.max_steps
        if state.global_step == 0:
            self.step_metrics()  # where the curves start
        while not done:
            warmup_pass = self._in_warmup()
            phase = f", {self.warmup_name}" if warmup_pass else ""
            progress.set_description(f"pretrain ({self.args.objective}{phase})")
            for batch in self._epoch_batches():
                if not micro_losses:  # the first micro-batch of an optimizer step
                    self.callbacks.on_step_begin(state.global_step + 1)
                step_loss = self._micro_step(batch, micro_losses)
                items += self.objective.items_in_batch(batch)
                state.batches_in_epoch += 1
                if step_loss is None:
                    continue
                progress.update(1)
                progress.set_postfix(loss=f"{step_loss:.3f}")
                done = self._after_step(step_loss, items, time.perf_counter() - window_start)
                if (state.global_step % self.args.logging_steps) == 0:
                    items, window_start = 0, time.perf_counter()
                if done or (warmup_pass and not self._in_warmup()):
                    break
            else:  # loader exhausted (Accelerate syncs on the last batch, so the epoch has normally rolled over)
                if state.batches_in_epoch and not warmup_pass:
                    state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        progress.close()

    def save(self) -> PretrainResult:
        """Final evaluation, then the model, its companions and metrics.json, written atomically."""
        final_metrics = self.evaluate()
        accelerator = self.accelerator
        result = PretrainResult(
            objective=self.args.objective,
            task=self.objective.task,
            output_dir=str(self.output_dir),
            global_step=self.state.global_step,
            final=final_metrics,
            log_history=self.state.log_history,
            args={**self.args.to_dict(), "num_processes": accelerator.num_processes},
        )
        accelerator.wait_for_everyone()
        # the full weights, gathered on every rank's call (FSDP / DeepSpeed ZeRO-3 hold shards; DDP: the model's own)
        state_dict = accelerator.get_state_dict(self.model)
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            publish(self.output_dir, save_pretrained_all([_FullWeights(model, state_dict), *self.setup.companions]))
            result.final.update(self.objective.closing_metrics(model, accelerator))  # e.g. a masked LM's pseudo-PPL
            result.report = self.objective.finish(model, self.output_dir, accelerator)
            save_result(result, self.output_dir)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return result


class _FullWeights:
    """`save_pretrained` of the unwrapped model with the gathered full state dict (a sharded model's own parameters
    are shards)."""

    def __init__(self, model, state_dict):
        self.model, self.state_dict = model, state_dict

    def save_pretrained(self, folder) -> None:
        self.model.save_pretrained(folder, state_dict=self.state_dict)


def run_pretraining(args: PretrainArguments, callbacks=None) -> PretrainResult:
    """Train with args.objective; save the model, its companions and metrics.json to args.output_dir.

    `report` (the objective's closing text, e.g. a sample) is filled on the main process only.
    """
    loop = PretrainingLoop(args, callbacks)
    loop.train()
    return loop.save()
