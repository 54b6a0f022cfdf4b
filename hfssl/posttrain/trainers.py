"""TRL's trainers, run by hfssl's run layer: what TRL does and what hfssl adds.

TRL (1.x) does the post-training: `SFTTrainer` (tokenising prompt and response, the loss on response tokens only, the
end-of-text token after each response), `RewardTrainer` (the Bradley-Terry loss on a one-output sequence-classification
head), `DPOTrainer` (the DPO loss against a frozen reference, the reference's log-probabilities computed once with
`precompute_ref_log_probs`, peft's disabled adapter as the reference under LoRA) and `GRPOTrainer` (groups of sampled
answers, group-normalised advantages, a KL penalty to the reference). Accelerate (inside transformers' Trainer) runs
them on 1..N processes.

hfssl adds, around each: checkpoints in its own layout (`output_dir/checkpoints/step-N`, written into a temporary
folder and renamed into place, with the run's arguments, which `--resume_from_checkpoint` compares), the stop on a
non-finite loss naming the last good checkpoint, its callbacks (`hfssl.run.callbacks`), Ctrl-C's report, and a
config built from hfssl's one CLI vocabulary (`PostTrainArguments`).
"""

import dataclasses
import math
from typing import Any

import torch
from transformers import TrainerCallback

from ..run.callbacks import CallbackList
from ..run.checkpoints import TrainerState, check_finite, checkpoints_dir, list_checkpoints, write_checkpoint
from ..run.steps import RUNNING
from .arguments import PostTrainArguments
from .packing import REAL_TOKENS


def _trl_classes(method: str):
    """(trainer class, config class) of `method` in TRL."""
    from trl import (  # type: ignore[attr-defined]  # exported lazily: mypy sees none
        DPOConfig,
        DPOTrainer,
        GRPOConfig,
        GRPOTrainer,
        RewardConfig,
        RewardTrainer,
        SFTConfig,
        SFTTrainer,
    )

    return {
        "sft": (SFTTrainer, SFTConfig),
        "reward": (RewardTrainer, RewardConfig),
        "dpo": (DPOTrainer, DPOConfig),
        "grpo": (GRPOTrainer, GRPOConfig),
    }[method]


def trl_config(args: PostTrainArguments, max_length: int):
    """The TRL config of `args.method`, from hfssl's flags. Checkpoints are hfssl's (`AtomicCheckpoints`); nothing is
    reported to a tracker but the logs; activation checkpointing is off (TRL turns it on by default: small models on
    CPU are faster without)."""
    _, config_class = _trl_classes(args.method)
    gpu = torch.cuda.is_available()
    common: dict[str, Any] = dict(
        output_dir=str(checkpoints_dir(args.output_dir)),
        seed=args.seed,
        data_seed=args.seed,
        max_steps=args.max_steps or -1,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.peak_learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # transformers 5: a float below 1 is a fraction of the steps
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        logging_steps=args.logging_steps,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        save_total_limit=args.save_total_limit or None,
        eval_strategy="no",  # held-out scores before and after training: hfssl.posttrain.evaluation
        report_to=[],
        bf16=gpu and args.mixed_precision == "bf16",
        fp16=gpu and args.mixed_precision == "fp16",
        use_cpu=not gpu,
        remove_unused_columns=args.method != "grpo",  # the checkable reward reads the task and answer columns
        dataloader_num_workers=0,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (RunLayerMixin stops the run on it)
    )
    # TRL turns checkpointing on by default; transformers 5.x renamed the flag (the old name warns where both exist)
    names = {f.name for f in dataclasses.fields(config_class)}
    common["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = False
    if args.method in ("sft", "reward", "dpo"):
        common["max_length"] = max_length
    if args.method == "sft":
        # packed rows are re-collated by hfssl (hfssl.posttrain.packing: why), else padded batches
        common.update(packing=args.packing, packing_strategy="bfd", completion_only_loss=True)
    if args.method == "dpo":
        common.update(beta=args.beta, precompute_ref_log_probs=True)
    if args.method == "grpo":
        common.update(
            beta=args.beta,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            temperature=args.temperature,
        )
    return config_class(**common)


class RunLayerMixin:
    """Mixed in before a TRL trainer class: hfssl's run layer inside transformers' Trainer.

    - Checkpoints go to `output_dir/checkpoints/step-N` atomically (`hfssl.run.checkpoints.write_checkpoint`), with the
      run's arguments (`hfssl_run_args`, which a resume compares); transformers' own files are inside, so that
      `Trainer.train(resume_from_checkpoint=...)` restores weights, optimizer, schedule, RNG and data position.
    - Every micro-batch's loss is checked before the optimizer step: a NaN or infinite loss stops the run, naming the
      last good checkpoint (transformers would log a running average in its place and train on).
    """

    hfssl_args: PostTrainArguments
    hfssl_run_args: dict

    def training_step(self, model, inputs, num_items_in_batch=None):
        trainer: Any = self
        loss = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        step = trainer.state.global_step + 1
        check_finite(float(loss.detach()), step, self.hfssl_args.output_dir, "Lower --learning_rate")
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss; a batch of packed rows (`hfssl.posttrain.packing`) also brings its count of real tokens, which
        replaces TRL's count (the rows' width, padding included, where no attention mask is passed)."""
        trainer: Any = self
        real_tokens = inputs.pop(REAL_TOKENS, None)
        counted_before = getattr(trainer, "_total_train_tokens", None)
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[misc]
        if real_tokens is not None and counted_before is not None and model.training:
            gathered = trainer.accelerator.gather_for_metrics(real_tokens.reshape(1)).sum().item()
            trainer._total_train_tokens = counted_before + gathered
            trainer._metrics["train"]["num_tokens"] = [trainer._total_train_tokens]
        return result

    def _save_checkpoint(self, model, trial) -> None:  # transformers' Trainer calls this at every save step
        trainer: Any = self
        args = self.hfssl_args

        def write(folder) -> None:
            trainer.save_model(str(folder), _internal_call=True)
            trainer._save_optimizer_and_scheduler(str(folder))
            trainer._save_scaler(str(folder))
            trainer._save_rng_state(str(folder))
            if trainer.args.should_save:
                trainer.state.save_to_json(str(folder / "trainer_state.json"))

        write_checkpoint(
            args.output_dir,
            TrainerState(global_step=trainer.state.global_step),
            write,
            keep=args.save_total_limit,
            run_args=self.hfssl_run_args,
            is_main=trainer.args.should_save,
            barrier=trainer.accelerator.wait_for_everyone,
            write_state=False,
        )


class RunLayerCallback(TrainerCallback):
    """hfssl's callbacks (`hfssl.run.callbacks`) at transformers' step events; where the run is, for Ctrl-C's message
    (`hfssl.run.steps.RUNNING`), and a stop at the next step when an interrupt was swallowed."""

    def __init__(self, output_dir: str, callbacks=None):
        self.output_dir = output_dir
        self.callbacks = CallbackList(callbacks)
        self.last_loss = math.nan

    def on_step_begin(self, args, state, control, **kwargs):
        if RUNNING.interrupt_requested:
            raise KeyboardInterrupt
        self.callbacks.on_step_begin(state.global_step + 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        RUNNING.step, RUNNING.output_dir = state.global_step, self.output_dir
        self.callbacks.on_step_end(state.global_step, self.last_loss)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            self.callbacks.on_save(list_checkpoints(self.output_dir)[-1])


def trainer_class(method: str):
    """The TRL trainer of `method` with hfssl's run layer mixed in (`RunLayerMixin`); set `hfssl_args` and
    `hfssl_run_args` on it before training."""
    base, _ = _trl_classes(method)
    return type(f"Hfssl{base.__name__}", (RunLayerMixin, base), {})
