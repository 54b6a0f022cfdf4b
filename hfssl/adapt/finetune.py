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
  saved adapter-only (or merged with --merge_lora).
"""

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

from ..data.vision import Normalize
from .features import context_window
from .linear_probe import LinearProbeConfig, fit_linear_probe
from .metrics import classification_scores
from .task import AdaptArguments, TaskData, load_task

logger = logging.getLogger(__name__)

METHODS = ("full", "lp-ft", "surgical", "lora")


@dataclass
class FinetuneArguments(AdaptArguments):
    method: str = field(default="full", metadata={"help": "full, lp-ft, surgical or lora."})
    epochs: int = field(default=10, metadata={"help": "Passes over the (few-shot) training set."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (LoRA likes ~1e-3)."})
    head_learning_rate: float | None = field(default=None, metadata={"help": "Head learning rate (default 10x)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warmup fraction, then linear decay."})
    surgical_blocks: list[str] = field(
        default_factory=lambda: ["last"],
        metadata={
            "help": "Blocks to train with --method surgical: first, middle, last, block indices, or module "
            "name prefixes. The head always trains."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: peft's/hfssl's defaults for the model type)."}
    )
    merge_lora: bool = field(default=False, metadata={"help": "Save the LoRA model merged instead of adapter-only."})

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")


# ---- the classifier and its parts ------------------------------------------------------------------
def load_classifier(args: AdaptArguments, task: TaskData) -> nn.Module:
    auto = AutoModelForImageClassification if task.is_image else AutoModelForSequenceClassification
    id2label = dict(enumerate(task.names))
    model = auto.from_pretrained(
        args.model_name_or_path,
        num_labels=len(task.names),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    if not task.is_image and model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def classification_head(model: nn.Module) -> nn.Linear:
    """The final Linear layer that produces the logits (score / classifier / classifier.out_proj ...)."""
    for name in ("score", "classifier", "classifier.out_proj", "classifier.dense_out", "head", "fc"):
        module = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Linear) and module.out_features == model.config.num_labels:
            return module
    raise ValueError(
        f"Cannot find the classification head of {type(model).__name__}: expected a Linear layer "
        f"named score or classifier with {model.config.num_labels} outputs."
    )


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's main stack of blocks: the longest ModuleList / Sequential of repeated modules."""
    best = ("", None)
    for name, module in model.named_modules():
        repeated = isinstance(module, (nn.ModuleList, nn.Sequential)) and len({type(m) for m in module}) == 1
        if repeated and len(module) > 1 and (best[1] is None or len(module) > len(best[1])):
            best = (name, module)
    if best[1] is None:
        raise ValueError(
            f"Cannot find a stack of blocks in {type(model).__name__} for --method surgical; "
            "name module prefixes in --surgical_blocks instead."
        )
    return best


def surgical_parameters(model: nn.Module, blocks: list[str]) -> list[str]:
    """Names of the parameters that --method surgical trains (the chosen blocks; the head is added later)."""
    stack_name, stack = None, None
    chosen_prefixes = []
    for spec in blocks:
        if spec in ("first", "middle", "last") or spec.lstrip("-").isdigit():
            if stack is None:
                stack_name, stack = transformer_blocks(model)
            index = {"first": 0, "middle": len(stack) // 2, "last": len(stack) - 1}.get(spec)
            index = int(spec) if index is None else index
            if not -len(stack) <= index < len(stack):
                raise ValueError(f"Block {spec} does not exist: {stack_name} has {len(stack)} blocks.")
            chosen_prefixes.append(f"{stack_name}.{index % len(stack)}.")
        else:
            chosen_prefixes.append(spec if spec.endswith(".") else spec + ".")
    names = [n for n, _ in model.named_parameters() if any(n.startswith(p) for p in chosen_prefixes)]
    if not names:
        raise ValueError(f"--surgical_blocks {blocks} match no parameters.")
    return names


# ---- batches -------------------------------------------------------------------------------------
class _Batcher:
    """Turns task inputs into model inputs: tokenised text (padded) or normalised images."""

    def __init__(self, args: AdaptArguments, task: TaskData, model: nn.Module):
        self.task = task
        if task.is_image:
            processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
            self.companion = processor
            self.normalize = Normalize(list(processor.image_mean), list(processor.image_std))
        else:
            tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self.companion = tokenizer
            self.context = context_window(model)
        self.device = next(model.parameters()).device

    def __call__(self, inputs) -> dict:
        if self.task.is_image:
            return {"pixel_values": self.normalize(inputs).to(self.device)}
        texts = list(inputs)
        encoded = self.companion(texts, padding=True, return_tensors="pt")
        lengths = encoded["attention_mask"].sum(dim=1)
        if self.context is not None and int(lengths.max()) > self.context:
            longest = int(lengths.argmax())
            raise ValueError(
                f"A text has {int(lengths.max())} tokens, more than the model's context window "
                f"({self.context}): {texts[longest][:80]!r}... Shorten it (nothing is truncated silently)."
            )
        return {k: v.to(self.device) for k, v in encoded.items()}


def _take(x, index):
    return x[index] if isinstance(x, torch.Tensor) else [x[i] for i in index.tolist()]


@torch.no_grad()
def predict(model: nn.Module, batcher: _Batcher, inputs, batch_size: int) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        out.append(model(**batcher(inputs[start : start + batch_size])).logits.argmax(dim=1).cpu())
    return torch.cat(out)


@torch.no_grad()
def head_inputs(model: nn.Module, batcher: _Batcher, inputs, batch_size: int) -> torch.Tensor:
    """The features the classification head sees, for every input (captured with a forward pre-hook): (N, F).

    Text goes one example at a time: some heads (GPT-2's) score every position and pool afterwards, and
    without padding the last position is the pooled one.
    """
    captured = []
    hook = classification_head(model).register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    step = batch_size if batcher.task.is_image else 1
    try:
        model.eval()
        for start in range(0, len(inputs), step):
            model(**batcher(inputs[start : start + step]))
    finally:
        hook.remove()
    return torch.cat([c if c.dim() == 2 else c[:, -1] for c in captured]).float().cpu()


# ---- methods ---------------------------------------------------------------------------------------
def _prepare_trainable(args: FinetuneArguments, model: nn.Module, batcher: _Batcher, task: TaskData) -> nn.Module:
    head = classification_head(model)
    if args.method == "lp-ft":
        features = head_inputs(model, batcher, task.train_x, args.batch_size)
        probe = fit_linear_probe(features, task.train_y, len(task.names), LinearProbeConfig(seed=args.seed))
        with torch.no_grad():
            head.weight.copy_(probe.weight)
            if head.bias is not None:
                head.bias.copy_(probe.bias)
            else:  # a bias-free head: keep the probe's weights; its bias is dropped (logged)
                logger.warning("The head has no bias: LP-FT keeps the probe's weights only.")
    if args.method == "surgical":
        trainable = set(surgical_parameters(model, args.surgical_blocks))
        head_ids = {id(p) for p in head.parameters()}
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable or id(p) in head_ids)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        head_name = next(n for n, m in model.named_modules() if m is head)
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules,
            modules_to_save=[head_name],
            task_type=None if task.is_image else "SEQ_CLS",
        )
        model = get_peft_model(model, config)
    return model


def _train(args: FinetuneArguments, model: nn.Module, batcher: _Batcher, task: TaskData) -> list[float]:
    head_params = {id(p) for p in classification_head(model).parameters()} if args.method != "lora" else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    body = [p for p in trainable if id(p) not in head_params]
    head = [p for p in trainable if id(p) in head_params]
    head_lr = args.head_learning_rate or 10 * args.learning_rate
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": args.learning_rate}, {"params": head, "lr": head_lr}], weight_decay=args.weight_decay
    )
    n = len(task.train_y)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = steps_per_epoch * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(args.seed)
    losses = []
    model.train()
    for _ in range(args.epochs):
        for index in torch.randperm(n, generator=generator).split(args.batch_size):
            logits = model(**batcher(_take(task.train_x, index))).logits
            loss = F.cross_entropy(logits, task.train_y[index].to(logits.device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"Non-finite loss {loss.item()} while fine-tuning: lower --learning_rate.")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return losses


def run_finetune(args: FinetuneArguments) -> tuple[nn.Module, dict]:
    """Adapt with args.method; save the adapted model (or adapter) and metrics.json to args.output_dir."""
    torch.manual_seed(args.seed)
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    task = load_task(args, config)
    model = load_classifier(args, task)
    batcher = _Batcher(args, task, model)
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    model = _prepare_trainable(args, model, batcher, task)
    losses = _train(args, model, batcher, task)
    predictions = predict(model, batcher, task.eval_x, args.batch_size)
    base = model.get_base_model() if args.method == "lora" else model
    changed = sorted(
        n for n, p in base.named_parameters() if n in snapshot and not torch.equal(p.detach(), snapshot[n])
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics = {
        "method": args.method,
        **classification_scores(predictions.tolist(), task.eval_y.tolist()),
        "num_train": len(task.train_y),
        "num_eval": len(task.eval_y),
        "num_labels_per_class": args.num_labels_per_class,
        "labels": task.names,
        "trainable_parameters": trainable,
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "changed_parameters": changed,
        "args": asdict(args),
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.method == "lora" and args.merge_lora:
        model = model.merge_and_unload()
    model.save_pretrained(out)  # a peft model saves its adapter (and the head) only
    batcher.companion.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("%s fine-tune: accuracy %.4f, macro-F1 %.4f", args.method, metrics["accuracy"], metrics["macro_f1"])
    return model, metrics
