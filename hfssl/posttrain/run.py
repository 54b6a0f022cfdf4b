"""`run_post_training(args)`: one post-training run, from the checked arguments to the saved model and metrics.json.

The model and its data are checked before any training (each failure one `InputError`); held-out rows are scored
before and after training (`hfssl.posttrain.evaluation`); the TRL trainer (`hfssl.posttrain.trainers`) trains; the
result (model or LoRA adapter, tokenizer, metrics.json) is written whole or not at all (`hfssl.run.output.publish`).

SFT batches are padded, or packed with --packing (`hfssl.posttrain.packing`: rows of TRL's packing with a
block-diagonal causal mask under any attention kernel, checked on the model before training).
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed

from ..data.instructions import check_checkable, check_response, instruction_data
from ..data.post_training import check_post_training_data, load_post_training_data
from ..data.splits import held_out_split
from ..models.helpers import context_window, ensure_pad_token
from ..models.kinds import is_causal_lm
from ..models.loading import load_config, load_pretrained, load_tokenizer
from ..models.registry import check_lora_targets, default_lora_targets
from ..run.errors import InputError, MissingDependencyError
from ..run.output import publish
from ..run.results import PostTrainingResult, save_result
from ..run.start import prepare_run
from .arguments import PostTrainArguments
from .evaluation import answer_scores, pairwise_accuracy
from .formatting import check_prompt_lengths, require_chat_template, resolve_max_length, to_model_format
from .packing import PackedRowsCollator, check_packing_keeps_examples_apart
from .trainers import RunLayerCallback, trainer_class, trl_config

logger = logging.getLogger(__name__)

# the columns each method's trainer reads (others are dropped before TRL sees the rows)
TRAINED_COLUMNS = {
    "sft": ("prompt", "completion", "messages"),
    "reward": ("prompt", "chosen", "rejected"),
    "dpo": ("prompt", "chosen", "rejected"),
    "grpo": ("prompt", "task", "answer"),
}


def _rows(args: PostTrainArguments, check: Callable[[datasets.Dataset, str], None]):
    """(training rows, held-out rows, where they came from), checked for args.method; `check(rows, name)` sees each
    table whole (a file's row numbers are its own) before any split."""
    if args.dataset is None:
        name = "built-in instruction tasks"
        tables = instruction_data(args.instruction_tasks, args.examples_per_task, args.seed, args.eval_split_fraction)
        train, held_out = (check_post_training_data(t, args.method, name) for t in tables)
        check(datasets.concatenate_datasets([train, held_out]), name)
        return train, held_out, name
    train = load_post_training_data(args.dataset, args.method)
    check(train, args.dataset)
    if args.eval_dataset:
        held_out = load_post_training_data(args.eval_dataset, args.method)
        check(held_out, args.eval_dataset)
        return train, held_out, args.dataset
    train_ids, eval_ids = held_out_split(len(train), args.eval_split_fraction, args.seed)
    return train.select(sorted(train_ids)), train.select(sorted(eval_ids)), args.dataset


def _check_causal_lm(name: str, args: PostTrainArguments):
    """The config of `name`, which must be a causal LM's."""
    config = load_config(name, args.gguf_file if name == args.model_name_or_path else None)
    if not is_causal_lm(config):
        raise InputError(
            f"{name} is not a causal LM (model_type {config.model_type!r}): --method {args.method} post-trains a "
            "decoder-only language model (hfssl's GPT, GPT-2, Llama, SmolLM2, ...)."
        )
    return config


def _lora_config(args: PostTrainArguments, model):
    from peft import LoraConfig

    listed = args.lora_target_modules or default_lora_targets(model)
    targets: list[str] | str | None = "all-linear" if listed == ["all-linear"] else listed  # peft's keyword: a string
    check_lora_targets(model, targets)
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        task_type="SEQ_CLS" if args.method == "reward" else "CAUSAL_LM",
    )


def _same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab()


def checked_reward(prompts, completions, task, answer, **_) -> list[float]:
    """GRPO's built-in reward of each sampled answer (`check_response`): 1.0 right and in the required format, 0.5
    right in another format, 0.1 in the format but wrong, 0.0 neither. The partial credits give a group whose
    answers are all wrong a gradient toward the format."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    rewards = []
    for name, text, expected in zip(task, texts, answer, strict=True):
        check = check_response(name, text, expected)
        rewards.append(1.0 if check.correct and check.formatted else 0.5 if check.correct else 0.1 * check.formatted)
    return rewards


def _reward(args: PostTrainArguments):
    """(GRPO's reward, its tokenizer): the reward model of --reward_model_name_or_path (one output), or
    `checked_reward` (no tokenizer)."""
    if args.reward_model_name_or_path is None:
        return checked_reward, None
    model = load_pretrained(AutoModelForSequenceClassification, args.reward_model_name_or_path)
    if model.config.num_labels != 1:
        raise InputError(
            f"--reward_model_name_or_path {args.reward_model_name_or_path} has a head of {model.config.num_labels} "
            "outputs; a reward model has one (a --method reward output)."
        )
    return model, ensure_pad_token(load_tokenizer(args.reward_model_name_or_path), model)


def _scores(args: PostTrainArguments, model, tokenizer, held_out: datasets.Dataset) -> dict[str, float]:
    if args.method == "reward":
        return pairwise_accuracy(model, tokenizer, held_out, args.per_device_eval_batch_size)
    if {"task", "answer"} <= set(held_out.column_names):
        return answer_scores(model, tokenizer, held_out, args.max_completion_length, args.per_device_eval_batch_size)
    return {}


def _load_model(args: PostTrainArguments, tokenizer):
    source = args.source
    if args.method == "reward":
        model = load_pretrained(AutoModelForSequenceClassification, source, new_head=True, num_labels=1)
    else:
        model = load_pretrained(AutoModelForCausalLM, source)
    ensure_pad_token(tokenizer, model)
    return model


def _trainer_inputs(args: PostTrainArguments, model, tokenizer) -> dict[str, Any]:
    """The method-specific keyword arguments of the TRL trainer: DPO's reference, GRPO's reward."""
    if args.method == "dpo" and args.ref_model_name_or_path:
        _check_causal_lm(args.ref_model_name_or_path, args)
        if not _same_tokenizer(load_tokenizer(args.ref_model_name_or_path), tokenizer):
            raise InputError(
                f"--ref_model_name_or_path {args.ref_model_name_or_path} has another tokenizer than "
                f"{args.model_name_or_path}: DPO compares both models' log-probabilities of the same tokens."
            )
        return {"ref_model": load_pretrained(AutoModelForCausalLM, args.ref_model_name_or_path)}
    if args.method == "grpo":  # DPO without a reference named: TRL's log-probabilities of the start, cached
        reward, reward_tokenizer = _reward(args)
        return {"reward_funcs": reward, "reward_processing_classes": reward_tokenizer}
    return {}


def _launch() -> PartialState:
    """This process's place in the launch. On CPU, Accelerate forms a gloo group only when asked (as transformers'
    Trainer will, with use_cpu): asked the same way here, so that both see the same processes."""
    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """Whether this is the main process of the launch."""
    return _launch().is_main_process


def _require_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        raise MissingDependencyError("Post-training needs TRL: pip install -e '.[post]'") from None


def _checked_rows(args: PostTrainArguments, tokenizer, max_length: int, window: int | None):
    """(training rows, held-out rows, where they came from), every prompt checked against the lengths first."""

    def check(rows: datasets.Dataset, name: str) -> None:
        if "prompt" in rows.column_names:
            prompts = rows["prompt"]
        else:  # chats: every turn before the last (the answer)
            require_chat_template(tokenizer, name)
            prompts = [chat[:-1] for chat in rows["messages"]]
        generated = args.max_completion_length if args.method == "grpo" else 0  # GRPO samples answers to them
        check_prompt_lengths(prompts, tokenizer, max_length, name, window=window, generated=generated)

    train, held_out, name = _rows(args, check)
    if len(train) == 0 or len(held_out) == 0:
        raise InputError(
            f"{name}: {len(train)} training and {len(held_out)} held-out rows; both need at least one (more rows, or "
            "another --eval_split_fraction)."
        )
    if args.method == "grpo" and args.reward_model_name_or_path is None:
        check_checkable(train, name)
    if args.max_eval_examples and len(held_out) > args.max_eval_examples:  # a seeded sample of the held-out rows
        held_out = held_out.shuffle(seed=args.seed).select(range(args.max_eval_examples))
    return train, held_out, name


def build_trainer(args: PostTrainArguments, model, tokenizer, train, name: str, max_length: int, callbacks):
    """The TRL trainer of args.method with hfssl's run layer (`trainer_class`), on the rows TRL reads."""
    columns = [c for c in TRAINED_COLUMNS[args.method] if c in train.column_names]
    trainer = trainer_class(args.method)(
        model=model,
        args=trl_config(args, max_length),
        train_dataset=to_model_format(train.select_columns(columns), tokenizer, name),
        processing_class=tokenizer,
        peft_config=_lora_config(args, model) if args.use_lora else None,
        callbacks=[RunLayerCallback(args.output_dir, callbacks)],
        **_trainer_inputs(args, model, tokenizer),
    )
    if args.packing:  # TRL's packed rows, each kept as a row (TRL would flatten the batch: FlashAttention's layout)
        trainer.data_collator = PackedRowsCollator(pad_token_id=tokenizer.pad_token_id)
    trainer.hfssl_args, trainer.hfssl_run_args = args, recorded_arguments(args)
    return trainer


def recorded_arguments(args: PostTrainArguments) -> dict:
    """The arguments a checkpoint records and a resume compares: the flags and the number of processes."""
    return {**args.to_dict(), "num_processes": _launch().num_processes}


def _result(args: PostTrainArguments, trainer, train, held_out, before: dict, after: dict) -> PostTrainingResult:
    trained = trainer.model
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return PostTrainingResult(
        method=args.method,
        task="text-classification" if args.method == "reward" else "text-generation",
        num_train=len(train),
        num_eval=len(held_out),
        global_step=trainer.state.global_step,
        before=before,
        after=after,
        trainable_parameters=sum(p.numel() for p in trained.parameters() if p.requires_grad),
        total_parameters=sum(p.numel() for p in trained.parameters()),
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        saved="adapter" if args.use_lora and not args.merge_adapter else "model",
        log_history=trainer.state.log_history,
        args=args.to_dict(),
    )


def run_post_training(args: PostTrainArguments, callbacks=None) -> PostTrainingResult:
    """Post-train args.model_name_or_path with args.method; save the model (or adapter) and metrics.json."""
    _require_trl()
    inputs = [args.source.input_path, *filter(None, [args.ref_model_name_or_path, args.reward_model_name_or_path])]
    checkpoint = prepare_run(args, inputs, recorded=recorded_arguments(args), is_main=is_main_process())
    set_seed(args.seed)
    config = _check_causal_lm(args.model_name_or_path, args)
    tokenizer = ensure_pad_token(load_tokenizer(args.source))
    max_length = resolve_max_length(args.max_length, config)
    train, held_out, name = _checked_rows(args, tokenizer, max_length, context_window(config))
    model = _load_model(args, tokenizer)
    if args.packing:
        check_packing_keeps_examples_apart(model, args.model_name_or_path, _launch().device)  # where it will train
    before = _scores(args, model, tokenizer, held_out)
    trainer = build_trainer(args, model, tokenizer, train, name, max_length, callbacks)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    after = _scores(args, trainer.model, tokenizer, held_out)
    result = _result(args, trainer, train, held_out, before, after)
    trained = trainer.model.merge_and_unload() if args.use_lora and args.merge_adapter else trainer.model

    def write(folder: Path) -> None:
        trained.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        save_result(result, folder)

    if trainer.args.should_save:
        publish(args.output_dir, write)
    trainer.accelerator.wait_for_everyone()
    logger.info("%s: before %s, after %s", args.method, before, after)
    return result
