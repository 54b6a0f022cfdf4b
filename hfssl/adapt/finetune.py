"""Fine-tuning a pretrained model on a labelled task: full, LP-FT, surgical, LoRA (peft).

One config dataclass (`FinetuneArguments`) and one entry function (`run_finetune`) returning the adapted
model and its metrics. The classifier is `AutoModelForSequenceClassification` /
`AutoModelForImageClassification` on the pretrained weights with a new head, so any compatible Hub model
works as well as ours. What is trained:

- full: everything (new random head);
- lp-ft: first a linear probe on the frozen features the head sees (fitted in closed form with L-BFGS),
  copied into the head, then everything (Kumar et al. 2022: keeps the features from being distorted by a
  random head early on);
- surgical: only the chosen blocks (first / middle / last / indices / name prefixes) plus the head
  (Lee et al. 2023: under distribution shift, tuning early or middle blocks can beat the last ones);
- lora: low-rank adapters on the default target modules (peft), with the head in `modules_to_save`;
  saved adapter-only (or merged with --merge_lora);
- contrastive (SetFit, Tunstall et al. 2022): the encoder is fine-tuned on seeded pairs of the labelled sentences
  (`hfssl.adapt.contrastive_pairs`, `hfssl.losses.cosine_similarity_loss`), then a logistic-regression head is fitted
  on the tuned, pooled embeddings at unit length (L-BFGS) and saved with them as one classifier that normalises
  before its head (benchmarks/exp_sentence_heads.py: unit length is what closes SetFit's lead at K = 8).
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import get_linear_schedule_with_warmup

from ..losses import cosine_similarity_loss
from ..models.encoders import PooledClassifierConfig, PooledModelForSequenceClassification
from ..models.helpers import classification_head, classification_head_name
from ..models.loading import load_config
from ..models.registry import check_lora_targets, default_lora_targets
from ..run.arguments import LoraArguments, require_choice, require_fraction, require_non_negative, require_positive
from ..run.callbacks import CallbackList
from ..run.checkpoints import (
    TrainerState,
    load_training_state,
    read_trainer_state,
    save_training_state,
    write_checkpoint,
)
from ..run.errors import InputError
from ..run.output import publish
from ..run.results import AdaptationResult, MultitaskResult, save_result
from ..run.start import prepare_run
from ..run.steps import adamw, checkpoint_due, epoch_generator, optimizer_step
from .classifier import Batcher, head_inputs, load_classifier, predict, surgical_parameters, take
from .contrastive_pairs import check_pairable, sample_pairs
from .linear_probe import LinearProbeConfig, fit_linear_probe
from .metrics import classification_scores
from .multitask import SAMPLING, WEIGHTING, minimum_tasks, parse_task_weights, parse_tasks, run_multitask
from .multitask_text import FORMATS, HEADS, TEXT_TO_TEXT, parse_task_presets
from .task import AdaptArguments, TaskData, load_task

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

METHODS = ("full", "lp-ft", "surgical", "lora", "contrastive")


@dataclass(kw_only=True)
class FinetuneArguments(AdaptArguments, LoraArguments):
    dataset: str = field(
        default="",
        metadata={
            "help": "Labelled training data (text: csv/tsv/jsonl/parquet/'label text' .txt or Hub name; images: "
            "parquet/image folder/Hub name/'digits'). Or --tasks for several."
        },
    )
    tasks: str | None = field(
        default=None,
        metadata={
            "help": "Multi-task: name=dataset,name=dataset,...: one shared encoder, one head per task, a folder "
            "per task in --output_dir (hfssl.adapt.multitask). With --multitask_format text_to_text one task is "
            "allowed too: the single-task baseline of that format."
        },
    )
    multitask_format: str = field(
        default="heads",
        metadata={
            "help": "With --tasks: heads (a shared encoder, a classification head per task) or text_to_text (one "
            "causal LM writes each task's label word after the task's prompt; hfssl.adapt.multitask_text)."
        },
    )
    task_presets: str | None = field(
        default=None,
        metadata={
            "help": "With --multitask_format text_to_text: name=preset,... (prompt presets such as sentiment, "
            "question_type: their label words, prefixes and instruction; default: the label names as words)."
        },
    )
    task_sampling: str = field(
        default="proportional", metadata={"help": "With --tasks: proportional, uniform or temperature."}
    )
    sampling_temperature: float = field(
        default=2.0, metadata={"help": "With --task_sampling temperature: p_t ~ n_t^(1/T) (T5's mixing)."}
    )
    loss_weighting: str = field(
        default="fixed", metadata={"help": "With --tasks: fixed (--task_weights) or uncertainty (Kendall et al.)."}
    )
    task_weights: str | None = field(
        default=None, metadata={"help": "With --tasks and fixed weighting: name=weight,... (default 1 each)."}
    )
    method: str = field(default="full", metadata={"help": "full, lp-ft, surgical, lora or contrastive (SetFit)."})
    contrastive_rounds: int = field(
        default=20,
        metadata={
            "help": "--method contrastive: R rounds of pair sampling, each giving every example one positive and one "
            "negative partner (2 R N pairs; SetFit's num_iterations). --num_train_epochs then counts passes over "
            "the pairs (SetFit: 1)."
        },
    )
    num_train_epochs: int = field(default=10, metadata={"help": "Passes over the (few-shot) training set."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Examples per optimizer step."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (LoRA likes ~1e-3)."})
    head_learning_rate: float | None = field(default=None, metadata={"help": "Head learning rate (default 10x)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warmup fraction, then linear decay."})
    surgical_blocks: list[str] = field(
        default_factory=lambda: ["last"],
        metadata={
            "help": "Blocks to train with --method surgical: first, middle, last, block indices, or module "
            "name prefixes. The head always trains."
        },
    )
    merge_lora: bool = field(default=False, metadata={"help": "Save the LoRA model merged instead of adapter-only."})
    save_steps: int = field(default=0, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the newest N checkpoints (0: all)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder: continue that run exactly."}
    )

    # a resumed fine-tune may checkpoint on another schedule and train for more epochs (hfssl.run.resume)
    RESUME_SAFE: ClassVar[frozenset] = AdaptArguments.RESUME_SAFE | {
        "num_train_epochs",
        "save_steps",
        "save_total_limit",
        "per_device_eval_batch_size",
    }

    # what fine-tuning did before each flag: clip at 1; no pair rounds (only --method contrastive reads them)
    ADDED_ARGUMENTS: ClassVar[dict] = {"max_grad_norm": 1.0, "contrastive_rounds": 20}

    def __post_init__(self):
        super().__post_init__()
        require_choice(self, "method", METHODS)
        require_positive(
            self,
            "num_train_epochs",
            "per_device_train_batch_size",
            "learning_rate",
            "head_learning_rate",
            "contrastive_rounds",
        )
        require_non_negative(self, "weight_decay", "max_grad_norm", "save_steps", "save_total_limit")
        require_fraction(self, "warmup_ratio")
        self.check_lora()
        self._check_tasks()

    def _check_tasks(self) -> None:
        if self.tasks and self.method == "contrastive":
            raise InputError("--method contrastive tunes one task's sentence encoder: not with --tasks.")
        require_choice(self, "task_sampling", SAMPLING)
        require_choice(self, "loss_weighting", WEIGHTING)
        require_choice(self, "multitask_format", FORMATS)
        if (self.multitask_format != HEADS or self.task_presets) and not self.tasks:
            raise InputError("--multitask_format and --task_presets need --tasks.")
        if self.task_presets and self.multitask_format != TEXT_TO_TEXT:
            raise InputError("--task_presets give text-to-text prompts: add --multitask_format text_to_text.")
        if self.multitask_format == TEXT_TO_TEXT and self.pooling is not None:
            raise InputError("--multitask_format text_to_text scores label words, pooling nothing: drop --pooling.")
        if self.multitask_format == TEXT_TO_TEXT and self.method not in ("full", "lora"):
            raise InputError(f"--multitask_format text_to_text trains --method full or lora, not {self.method}.")
        if self.tasks and self.task_presets:
            parse_task_presets(
                self.task_presets, [t.name for t in parse_tasks(self.tasks, minimum_tasks(self.multitask_format))]
            )
        if not (math.isfinite(self.sampling_temperature) and self.sampling_temperature > 0):
            raise InputError(f"--sampling_temperature must be a number > 0, got {self.sampling_temperature}.")
        if bool(self.dataset) == bool(self.tasks):
            raise InputError("Give --dataset (one task) or --tasks name=dataset,... (several), not both or neither.")
        if self.tasks:
            if self.eval_dataset:
                raise InputError(
                    "--eval_dataset is one task's data: with --tasks each task holds out --eval_split_fraction of its "
                    "own (the same examples as a single-task run with the same --seed)."
                )
            names = [t.name for t in parse_tasks(self.tasks, minimum_tasks(self.multitask_format))]
            parse_task_weights(self.task_weights, names)
            if self.task_weights and self.loss_weighting == "uncertainty":
                raise InputError("--task_weights are fixed weights: drop them, or drop --loss_weighting uncertainty.")
        elif self.task_weights or self.task_sampling != "proportional" or self.loss_weighting != "fixed":
            raise InputError("--task_sampling, --loss_weighting and --task_weights need --tasks.")


# ---- methods ---------------------------------------------------------------------------------------
def _fit_head(args: FinetuneArguments, model: nn.Module, batcher: Batcher, task: TaskData) -> None:
    """Fit the head as a linear probe (L-BFGS logistic regression) on the features it sees, in place."""
    head = classification_head(model)
    features = head_inputs(model, batcher, task.train_x, args.per_device_eval_batch_size)
    probe = fit_linear_probe(features, task.train_y, len(task.names), LinearProbeConfig(seed=args.seed))
    with torch.no_grad():
        head.weight.copy_(probe.weight)
        bias: torch.Tensor | None = head.bias  # None where the Linear was built with bias=False
        if bias is not None:
            bias.copy_(probe.bias)
        else:  # a bias-free head: keep the probe's weights; its bias is dropped (logged)
            logger.warning("The head has no bias: the probe's weights only.")


def _prepare_trainable(args: FinetuneArguments, model: nn.Module, batcher: Batcher, task: TaskData) -> nn.Module:
    head = classification_head(model)
    if args.method == "lp-ft":
        _fit_head(args, model, batcher, task)
    if args.method == "contrastive":
        if task.is_image:
            raise InputError("--method contrastive tunes a sentence encoder on text pairs; this task holds images.")
        check_pairable(task.train_y, task.names)
        head.requires_grad_(False)  # fitted afterwards, on the tuned embeddings
    # modules the load initialised besides the head (a masked-LM encoder's pooler) are trained by every method
    fresh = [m for m in getattr(model, "hfssl_new_modules", []) if m != classification_head_name(model)]
    if args.method == "surgical":
        trainable = set(surgical_parameters(model, args.surgical_blocks))
        head_ids = {id(p) for p in head.parameters()}
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable or id(p) in head_ids or name.startswith(tuple(f + "." for f in fresh)))
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        head_name = classification_head_name(model)
        check_lora_targets(model, args.lora_target_modules)
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules or default_lora_targets(model),
            modules_to_save=[head_name, *fresh],
            task_type=None if task.is_image else "SEQ_CLS",
        )
        model = get_peft_model(model, config)
    return model


def _optimizer(args: FinetuneArguments, model: nn.Module, num_examples: int):
    """AdamW (`adamw`: fused where it can be; the head at its own, by default 10x, learning rate) and a linear warmup
    + decay schedule."""
    head_params = {id(p) for p in classification_head(model).parameters()} if args.method != "lora" else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    body = [p for p in trainable if id(p) not in head_params]
    head = [p for p in trainable if id(p) in head_params]
    head_lr = args.head_learning_rate or 10 * args.learning_rate
    optimizer = adamw(
        [{"params": body, "lr": args.learning_rate}, {"params": head, "lr": head_lr}], weight_decay=args.weight_decay
    )
    total = math.ceil(num_examples / args.per_device_train_batch_size) * args.num_train_epochs
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)


def _train(
    args: FinetuneArguments, model: nn.Module, batcher: Batcher, task: TaskData, checkpoint=None, callbacks=None
) -> list[float]:
    """Cross-entropy on the labelled examples, epoch by epoch; the order of epoch e is a function of (seed, e), so a
    run resumed from `checkpoint` continues exactly. Returns the loss of every step."""
    callbacks = CallbackList(callbacks)
    pairs = sample_pairs(task.train_y, args.contrastive_rounds, args.seed) if args.method == "contrastive" else None
    num_items = len(task.train_y) if pairs is None else len(pairs)  # what an epoch walks through
    optimizer, scheduler = _optimizer(args, model, num_items)
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = TrainerState()
    if checkpoint is not None:
        state = read_trainer_state(checkpoint)
        load_training_state(checkpoint, model, optimizer, scheduler)
    model.train()
    while state.epoch < args.num_train_epochs:
        order = torch.randperm(num_items, generator=epoch_generator(args.seed, state.epoch))
        for index in order.split(args.per_device_train_batch_size)[state.batches_in_epoch :]:
            callbacks.on_step_begin(state.global_step + 1)
            loss = _batch_loss(model, batcher, task, index, pairs)
            loss.backward()
            optimizer_step(
                optimizer,
                scheduler,
                loss.item(),
                step=state.global_step + 1,
                output_dir=args.output_dir,
                advice="Lower --learning_rate",
                max_grad_norm=args.max_grad_norm,
                clip=lambda max_norm: torch.nn.utils.clip_grad_norm_(trainable, max_norm),
            )
            state.global_step, state.batches_in_epoch = state.global_step + 1, state.batches_in_epoch + 1
            state.log_history.append({"step": state.global_step, "loss": loss.item()})
            if checkpoint_due(args.save_steps, state.global_step, final=False):  # the last step's too: resumable
                save = lambda folder: save_training_state(folder, model, optimizer, scheduler)  # noqa: E731
                written = write_checkpoint(
                    args.output_dir, state, save, keep=args.save_total_limit, run_args=args.to_dict()
                )
                callbacks.on_save(written)
            callbacks.on_step_end(state.global_step, loss.item())
        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
    return [entry["loss"] for entry in state.log_history]


def _base(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft model (the model itself otherwise)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _batch_loss(model: nn.Module, batcher: Batcher, task: TaskData, index: torch.Tensor, pairs) -> torch.Tensor:
    """Cross-entropy of the examples `index`; with `pairs` (P, 3) of (i, j, same), the cosine-similarity loss of
    the pairs `index`, each sentence in them embedded once."""
    if pairs is None:
        logits = model(**batcher(take(task.train_x, index))).logits
        return F.cross_entropy(logits, task.train_y[index].to(logits.device))
    chosen = pairs[index]
    sentences, where = torch.unique(chosen[:, :2], return_inverse=True)  # where: (P, 2) rows into sentences
    embeddings = cast(PooledModelForSequenceClassification, model).pooled_output(
        **batcher(take(task.train_x, sentences))
    )
    u, v = embeddings[where[:, 0].to(embeddings.device)], embeddings[where[:, 1].to(embeddings.device)]
    return cosine_similarity_loss(u, v, chosen[:, 2].to(u.device))


def _changed_parameters(model: nn.Module, snapshot: dict, lora: bool) -> list[str]:
    base = _base(model) if lora else model
    return sorted(n for n, p in base.named_parameters() if n in snapshot and not torch.equal(p.detach(), snapshot[n]))


def run_finetune(args: FinetuneArguments, callbacks=None) -> AdaptationResult | MultitaskResult:
    """Adapt with args.method; save the adapted model (or LoRA adapter) and metrics.json to args.output_dir.
    With args.tasks: multi-task fine-tuning (`hfssl.adapt.multitask.run_multitask`)."""
    if args.tasks:
        return run_multitask(args, callbacks)
    checkpoint = prepare_run(args, [args.source.input_path])
    torch.manual_seed(args.seed)
    task = load_task(args, load_config(args.source))
    contrastive = args.method == "contrastive"  # it trains the pooled vector, whose cosines its head then reads
    model = load_classifier(args, task, pooled=contrastive, normalize=contrastive)
    batcher = Batcher(args, task, model)
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    model = _prepare_trainable(args, model, batcher, task)
    losses = _train(args, model, batcher, task, checkpoint, callbacks)
    if args.method == "contrastive":
        _fit_head(args, model, batcher, task)
    predictions = predict(model, batcher, task.eval_x, args.per_device_eval_batch_size)
    lora = args.method == "lora"
    # an adapter names its base by path; the pooled classifier around that base exists only in this run: merge
    merge = lora and (args.merge_lora or isinstance(_base(model).config, PooledClassifierConfig))
    if merge and not args.merge_lora:
        logger.info("LoRA saved merged: the adapter's base is hfssl's pooled classifier, not a folder to load.")
    result = AdaptationResult(
        method=args.method,
        task=task.task,
        **classification_scores(predictions.tolist(), task.eval_y.tolist()),
        num_train=len(task.train_y),
        num_eval=len(task.eval_y),
        num_labels_per_class=args.num_labels_per_class,
        labels=task.names,
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_parameters=sum(p.numel() for p in model.parameters()),
        first_loss=losses[0],
        last_loss=losses[-1],
        changed_parameters=_changed_parameters(model, snapshot, lora),
        args=args.to_dict(),
        saved="adapter" if lora and not merge else "model",
    )
    if merge:
        model = cast("PeftModel", model).merge_and_unload()
    adapted = cast("PreTrainedModel | PeftModel", model)

    def write(folder: Path) -> None:
        adapted.save_pretrained(str(folder))  # a peft model saves its adapter (and the head) only
        batcher.companion.save_pretrained(folder)
        save_result(result, folder)

    publish(args.output_dir, write)
    logger.info("%s fine-tune: accuracy %.4f, macro-F1 %.4f", args.method, result.accuracy, result.macro_f1)
    return result
