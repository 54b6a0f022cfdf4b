"""Multi-task fine-tuning: one shared encoder, one classification head per task (`finetune.py --tasks a=PATH,b=PATH`).

The model minimises a weighted sum of the tasks' losses, min over theta of sum_t w_t L_t(theta_shared, theta_t), one
task per step (MT-DNN, T5): each step draws a task t with probability p_t, then a batch of t's examples, and takes a
step on w_t L_t (cross-entropy through the shared encoder and t's own head).

Task sampling, over tasks with n_t training examples:

    proportional  p_t = n_t / sum_u n_u
    uniform       p_t = 1 / T
    temperature   p_t ~ n_t^(1/tau)   (T5's mixing temperature tau = --sampling_temperature: 1 is proportional, large
                                     tau approaches uniform)

Loss weights: fixed (`--task_weights a=1,b=0.5`, default 1 each), or learned from each task's uncertainty (Kendall
et al. 2018, the classification form 1/sigma_t^2 L_t + log sigma_t): with s_t = log sigma_t^2 a learned scalar per task,

    loss_t = exp(-s_t) L_t + s_t / 2

so a task whose loss stays high is down-weighted, and the s_t / 2 term keeps sigma_t from growing without bound.

The encoder's parameters are one set of tensors shared by every task's classifier (each task's
`AutoModelForSequenceClassification` / `AutoModelForImageClassification` points at the same encoder module). The run
saves one standard folder per task, `OUTPUT_DIR/<task>/` (the shared encoder with that task's head, its tokenizer or
image processor, and its own metrics.json), so `pipeline("text-classification", model="OUTPUT_DIR/<task>")` picks a
head by folder, `push.py --model_dir OUTPUT_DIR/<task>` shares one with its card, and `load_multitask(OUTPUT_DIR)`
reloads them all. `OUTPUT_DIR/metrics.json` holds every task's scores. With `--method lora` the shared encoder gets
one set of LoRA adapters, merged into it when saving (the heads train in full).

`--multitask_format text_to_text` trains one causal LM on every task's prompts instead, with no heads
(`hfssl.adapt.multitask_text`: the sampling and weighting here, the loss on the answer words).
"""

import logging
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import get_linear_schedule_with_warmup

from ..models.helpers import classification_head
from ..models.loading import load_config
from ..models.registry import check_lora_targets
from ..run.callbacks import CallbackList
from ..run.checkpoints import TrainerState
from ..run.errors import InputError
from ..run.output import publish
from ..run.results import AdaptationResult, MultitaskResult, save_result
from ..run.start import prepare_run
from ..run.steps import adamw, epoch_generator, optimizer_step
from .classifier import Batcher, load_classifier, predict, surgical_parameters, take
from .metrics import classification_scores
from .multitask_text import TEXT_TO_TEXT, TextToTextTask, load_language_model, parse_task_presets
from .task import TaskData, load_task

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from .finetune import FinetuneArguments

logger = logging.getLogger(__name__)

SAMPLING = ("proportional", "uniform", "temperature")
WEIGHTING = ("fixed", "uncertainty")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str


def parse_tasks(spec: str, minimum: int = 2) -> list[TaskSpec]:
    """`"sst2=data/sst2.txt,trec=data/trec.txt"` -> task specs; InputError for a malformed list, a name used twice,
    a name that cannot be a folder name, or fewer than `minimum` tasks (two with heads; text to text takes one: the
    single-task baseline of that format, the same prompt, loss and scoring)."""
    tasks: list[TaskSpec] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, dataset = part.partition("=")
        name, dataset = name.strip(), dataset.strip()
        if not sep or not name or not dataset:
            raise InputError(f"--tasks entries look like name=dataset, got {part!r}.")
        if not _TASK_NAME.match(name):
            raise InputError(
                f"--tasks: task name {name!r} must be letters, digits, '_', '-' or '.' (it names a folder)."
            )
        if name in {t.name for t in tasks}:
            raise InputError(f"--tasks: the task name {name!r} is used twice; give each task its own name.")
        tasks.append(TaskSpec(name, dataset))
    if not tasks:
        raise InputError(f"--tasks needs a task (name=dataset), got {spec!r}.")
    if len(tasks) < minimum:
        raise InputError(f"--tasks needs at least two tasks (name=dataset,name=dataset), got {spec!r}.")
    return tasks


def minimum_tasks(multitask_format: str) -> int:
    """Tasks a run needs: two with heads (one would be finetune.py --dataset), one text to text."""
    return 1 if multitask_format == TEXT_TO_TEXT else 2


def parse_task_weights(spec: str | None, names: list[str]) -> dict[str, float]:
    """`"sst2=1,trec=0.5"` -> a weight per task (default 1); InputError for an unknown task or a weight <= 0."""
    weights = dict.fromkeys(names, 1.0)
    for part in (p.strip() for p in (spec or "").split(",") if p.strip()):
        name, _, value = part.partition("=")
        if name.strip() not in weights:
            raise InputError(f"--task_weights names {name.strip()!r}, which is not one of the --tasks {names}.")
        try:
            weight = float(value)
        except ValueError:
            raise InputError(f"--task_weights: {part!r} is not name=number.") from None
        if not math.isfinite(weight) or weight <= 0:
            raise InputError(f"--task_weights: the weight of {name.strip()!r} must be a number > 0, got {value!r}.")
        weights[name.strip()] = weight
    return weights


def sampling_probabilities(sizes: list[int], how: str, temperature: float = 1.0) -> list[float]:
    """p_t for tasks of `sizes` training examples (see the module docstring)."""
    if how == "uniform":
        return [1 / len(sizes)] * len(sizes)
    if how == "temperature" and not (math.isfinite(temperature) and temperature > 0):
        raise InputError(f"--sampling_temperature must be a number > 0, got {temperature}.")
    power = 1 / temperature if how == "temperature" else 1.0
    mass = [n**power for n in sizes]
    return [m / sum(mass) for m in mass]


def task_schedule(probabilities: list[float], steps: int, seed: int) -> list[int]:
    """The task of every step: `steps` independent draws from `probabilities`, a function of the seed only."""
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor(probabilities), steps, replacement=True, generator=generator).tolist()


class UncertaintyWeights(nn.Module):
    """s_t = log sigma_t^2 per task (initialised to 0: weight 1); `forward(t, loss)` = exp(-s_t) loss + s_t / 2."""

    def __init__(self, num_tasks: int):
        super().__init__()
        self.log_variance = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, task: int, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_variance[task]
        return torch.exp(-s) * loss + s / 2


# ---- building the shared model -------------------------------------------------------------------------------
def _encoder_name(model: nn.Module) -> str:
    """The attribute that holds a transformers classifier's encoder (`bert`, `model`, `simclr`, ...)."""
    return str(cast("PreTrainedModel", model).base_model_prefix)


def _use_encoder(models: list[nn.Module], encoder: nn.Module) -> None:
    for model in models:
        setattr(model, _encoder_name(model), encoder)


def _share_encoder(models: list[nn.Module]) -> nn.Module:
    """Point every task's classifier at the first one's encoder module; returns that encoder."""
    encoder = cast(nn.Module, getattr(models[0], _encoder_name(models[0])))
    _use_encoder(models[1:], encoder)
    return encoder


def _lora_encoder(args: "FinetuneArguments", encoder: nn.Module, task_type: str | None = None) -> "PeftModel":
    """One set of LoRA adapters on the shared module (an encoder, or the causal LM of a text-to-text run)."""
    from peft import LoraConfig, get_peft_model

    check_lora_targets(encoder, args.lora_target_modules)
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        task_type=task_type,
    )
    return get_peft_model(cast("PreTrainedModel", encoder), config)


def _trainable(args: "FinetuneArguments", models: list[nn.Module]) -> None:
    if args.method == "surgical":
        allowed = set(surgical_parameters(models[0], args.surgical_blocks))
        heads = {id(p) for m in models for p in classification_head(m).parameters()}
        for model in models:
            for name, p in model.named_parameters():
                p.requires_grad_(name in allowed or id(p) in heads)
    if args.method == "lp-ft":
        raise InputError("--method lp-ft is not available with --tasks (yet): use full, surgical or lora.")


# ---- training ------------------------------------------------------------------------------------------------
@dataclass
class _Task:
    """One task of the run: its shared model (a classifier with its own head, or the one causal LM) and either the
    batcher of its head or its text-to-text prompt."""

    spec: TaskSpec
    data: TaskData
    model: nn.Module
    weight: float
    batcher: Batcher | None = None
    text: TextToTextTask | None = None
    probability: float = 0.0

    def loss(self, index: torch.Tensor) -> torch.Tensor:
        """L_t of the training examples `index`: cross-entropy through the head, or the answers' token loss."""
        if self.text is not None:
            return self.text.loss(index)
        logits = self.model(**cast(Batcher, self.batcher)(take(self.data.train_x, index))).logits
        return F.cross_entropy(logits, self.data.train_y[index].to(logits.device))

    def predict(self, batch_size: int) -> torch.Tensor:
        """The predicted label id of every held-out example (N,)."""
        if self.text is not None:
            return self.text.predict(batch_size)
        return predict(self.model, cast(Batcher, self.batcher), self.data.eval_x, batch_size)


def _unique_parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    return list(seen.values())


def _train(args: "FinetuneArguments", tasks: list[_Task], weighting: UncertaintyWeights | None, callbacks) -> list:
    callbacks = CallbackList(callbacks)
    params = _unique_parameters([t.model for t in tasks] + ([weighting] if weighting is not None else []))
    optimizer = adamw(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    sizes = [len(t.data.train_y) for t in tasks]
    steps_per_epoch = math.ceil(sum(sizes) / args.per_device_train_batch_size)
    total = steps_per_epoch * args.num_train_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    task_draws = task_schedule([t.probability for t in tasks], total, args.seed)
    epochs, orders = [0] * len(tasks), [torch.empty(0, dtype=torch.long) for _ in tasks]
    state, log = TrainerState(), []
    for t in tasks:
        t.model.train()
    for step, index in enumerate(task_draws, start=1):
        task = tasks[index]
        if len(orders[index]) < 1:  # this task's next epoch: a seeded order of its examples
            orders[index] = torch.randperm(sizes[index], generator=epoch_generator(args.seed + index, epochs[index]))
            epochs[index] += 1
        batch, orders[index] = (
            orders[index][: args.per_device_train_batch_size],
            orders[index][args.per_device_train_batch_size :],
        )
        callbacks.on_step_begin(step)
        task_loss = task.loss(batch)
        loss = weighting(index, task_loss) if weighting is not None else task.weight * task_loss
        loss.backward()
        optimizer_step(
            optimizer,
            scheduler,
            loss.item(),
            step=step,
            output_dir=args.output_dir,
            advice="Lower --learning_rate",
            max_grad_norm=args.max_grad_norm,
            clip=lambda max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm),
        )
        state.global_step = step
        log.append({"step": step, "task": task.spec.name, "loss": task_loss.item()})
        callbacks.on_step_end(step, loss.item())
    return log


def load_multitask(output_dir: str | Path) -> dict[str, nn.Module]:
    """Every task's classifier of a multi-task run (`OUTPUT_DIR/<task>/`), by task name, in the run's order."""
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from ..run.results import load_result

    result = load_result(output_dir)
    if not isinstance(result, MultitaskResult):
        raise InputError(f"{output_dir} holds no multi-task run (its metrics.json is not one).")
    if result.args.get("multitask_format") == TEXT_TO_TEXT:
        raise InputError(f"{output_dir} is a text-to-text run (one causal LM, no heads): use load_text_to_text.")
    auto = (
        AutoModelForImageClassification if result.task == "image-classification" else AutoModelForSequenceClassification
    )
    return {name: auto.from_pretrained(Path(output_dir) / name) for name in result.tasks}


def _task_arguments(args: "FinetuneArguments", spec: TaskSpec) -> "FinetuneArguments":
    """One task's arguments: its dataset, the multi-task options reset."""
    return replace(
        args,
        dataset=spec.dataset,
        tasks=None,
        task_weights=None,
        task_sampling="proportional",
        loss_weighting="fixed",
        multitask_format="heads",
        task_presets=None,
    )


def _head_tasks(args: "FinetuneArguments", specs: list[TaskSpec], weights: dict[str, float]):
    """A classifier per task sharing one encoder (LoRA-adapted with --method lora); (tasks, the peft model or None)."""
    config = load_config(args.source)
    tasks: list[_Task] = []
    for spec in specs:
        task_args = _task_arguments(args, spec)
        data = load_task(task_args, config)  # a task with one class is refused there
        model = load_classifier(task_args, data)
        tasks.append(_Task(spec, data, model, weights[spec.name], batcher=Batcher(task_args, data, model)))
    encoder = _share_encoder([t.model for t in tasks])
    adapted = _lora_encoder(args, encoder) if args.method == "lora" else None
    if adapted is not None:
        _use_encoder([t.model for t in tasks], adapted)
    _trainable(args, [t.model for t in tasks])
    return tasks, adapted


def _text_tasks(args: "FinetuneArguments", specs: list[TaskSpec], weights: dict[str, float]):
    """One causal LM for every task, each task its prompt (LoRA-adapted with --method lora); (tasks, peft or None)."""
    if args.method not in ("full", "lora"):
        raise InputError(f"--multitask_format text_to_text trains --method full or lora, not {args.method}.")
    model, tokenizer = load_language_model(args)
    presets = parse_task_presets(args.task_presets, [s.name for s in specs])
    tasks: list[_Task] = []
    for spec in specs:
        data = load_task(_task_arguments(args, spec), model.config)
        if data.is_image:
            raise InputError(f"Task {spec.name!r} holds images: --multitask_format text_to_text takes text tasks.")
        text = TextToTextTask(spec.name, data, model, tokenizer, presets.get(spec.name))
        tasks.append(_Task(spec, data, model, weights[spec.name], text=text))
    adapted = None
    if args.method == "lora":
        adapted = _lora_encoder(args, model, task_type="CAUSAL_LM")
        _use_language_model(tasks, adapted)
    return tasks, adapted


def _use_language_model(tasks: list[_Task], model: nn.Module) -> None:
    for t in tasks:
        t.model = model
        cast(TextToTextTask, t.text).model = model


def run_multitask(args: "FinetuneArguments", callbacks=None) -> MultitaskResult:
    """Fine-tune one model on every task of args.tasks (a head per task, or text to text); save and score it."""
    if args.resume_from_checkpoint or args.save_steps:
        raise InputError("--tasks runs do not checkpoint yet: drop --save_steps / --resume_from_checkpoint.")
    specs = parse_tasks(cast(str, args.tasks), minimum_tasks(args.multitask_format))
    weights = parse_task_weights(args.task_weights, [s.name for s in specs])
    prepare_run(args, [args.source.input_path])
    torch.manual_seed(args.seed)
    text_to_text = args.multitask_format == TEXT_TO_TEXT
    tasks, adapted = (_text_tasks if text_to_text else _head_tasks)(args, specs, weights)
    probabilities = sampling_probabilities(
        [len(t.data.train_y) for t in tasks], args.task_sampling, args.sampling_temperature
    )
    for t, p in zip(tasks, probabilities):
        t.probability = p
    weighting = UncertaintyWeights(len(tasks)) if args.loss_weighting == "uncertainty" else None
    log = _train(args, tasks, weighting, callbacks)
    if adapted is not None:  # saved merged: plain models
        merged = cast(nn.Module, adapted.merge_and_unload())
        if text_to_text:
            _use_language_model(tasks, merged)
        else:
            _use_encoder([t.model for t in tasks], merged)
    return _evaluate_and_save(args, tasks, weighting, log)


def _evaluate_and_save(args, tasks: list[_Task], weighting: UncertaintyWeights | None, log: list) -> MultitaskResult:
    per_task: dict[str, AdaptationResult] = {}
    for t in tasks:
        predictions = t.predict(args.per_device_eval_batch_size)
        losses = [e["loss"] for e in log if e["task"] == t.spec.name]
        per_task[t.spec.name] = AdaptationResult(
            method=f"multitask-{args.method}",
            task=t.data.task,
            **classification_scores(predictions.tolist(), t.data.eval_y.tolist()),
            num_train=len(t.data.train_y),
            num_eval=len(t.data.eval_y),
            num_labels_per_class=args.num_labels_per_class,
            labels=t.data.names,
            first_loss=losses[0] if losses else None,
            last_loss=losses[-1] if losses else None,
            args={**args.to_dict(), "dataset": t.spec.dataset, "task_name": t.spec.name},
            saved="model",
        )
        if not losses:
            logger.warning(
                "task %s was drawn for no step (p = %.3f): its head is untrained. Raise --num_train_epochs, or use "
                "--task_sampling uniform or temperature.",
                t.spec.name,
                t.probability,
            )
        logger.info(
            "task %s: accuracy %.4f, macro-F1 %.4f (p = %.3f, %d steps)",
            t.spec.name,
            per_task[t.spec.name].accuracy,
            per_task[t.spec.name].macro_f1,
            t.probability,
            len(losses),
        )
    learned = weighting.log_variance.detach().tolist() if weighting is not None else None
    result = MultitaskResult(
        method=args.method,
        task="text-generation" if tasks[0].text is not None else tasks[0].data.task,
        task_sampling=args.task_sampling,
        loss_weighting=args.loss_weighting,
        tasks={
            t.spec.name: {
                "dataset": t.spec.dataset,
                "accuracy": per_task[t.spec.name].accuracy,
                "macro_f1": per_task[t.spec.name].macro_f1,
                "num_train": len(t.data.train_y),
                "num_eval": len(t.data.eval_y),
                "labels": t.data.names,
                "sampling_probability": t.probability,
                "steps": sum(1 for e in log if e["task"] == t.spec.name),
                "loss_weight": t.weight if learned is None else math.exp(-learned[i]),
                **({"template": t.text.template_record()} if t.text is not None else {}),
            }
            for i, t in enumerate(tasks)
        },
        log_history=log,
        args=args.to_dict(),
    )

    def write(folder: Path) -> None:
        if tasks[0].text is not None:  # text to text: one causal LM for every task, at the top
            cast("PreTrainedModel", tasks[0].model).save_pretrained(folder)
            tasks[0].text.tokenizer.save_pretrained(folder)
        else:
            for t in tasks:
                cast("PreTrainedModel", t.model).save_pretrained(folder / t.spec.name)
                cast(Batcher, t.batcher).companion.save_pretrained(folder / t.spec.name)
                save_result(per_task[t.spec.name], folder / t.spec.name)
        save_result(result, folder)

    publish(args.output_dir, write)
    return result
