"""The classifier that fine-tuning trains, and its parts: loading it with a new head, turning task inputs into model
inputs, predicting, the features its head sees, and the blocks surgical fine-tuning picks from.

The classifier is `AutoModelForSequenceClassification` / `AutoModelForImageClassification` on the pretrained weights
with a new head, so any compatible Hub model works as well as ours.
"""

import torch
from torch import nn
from transformers import AutoModelForImageClassification

from ..data.vision import Normalize
from ..models.helpers import check_fits_context, classification_head, context_window, ensure_pad_token
from ..models.loading import load_config, load_image_processor, load_pretrained, load_tokenizer
from ..models.pooling import load_text_classifier, refuse_pooling_for_images
from ..run.errors import InputError
from .task import AdaptArguments, TaskData


def load_classifier(
    args: AdaptArguments, task: TaskData, *, pooled: bool = False, normalize: bool = False
) -> nn.Module:
    """The pretrained model with a new head for the task's labels; text reads `args.pooling`
    (`hfssl.models.pooling`: transformers' classifier where the pooling is the architecture's own). pooled: always
    hfssl's PooledModelForSequenceClassification, whose pooled vector a method trains itself (contrastive);
    normalize: its head reads that vector at unit length."""
    id2label = dict(enumerate(task.names))
    head: dict = dict(num_labels=len(task.names), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if task.is_image:
        refuse_pooling_for_images(args.pooling, args.source)
        return load_pretrained(AutoModelForImageClassification, args.source, new_head=True, **head)
    config = load_config(args.source)
    model, _ = load_text_classifier(args.source, args.pooling, config, pooled=pooled, normalize=normalize, **head)
    return model


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList | nn.Sequential]:
    """The model's main stack of blocks: the longest ModuleList / Sequential of repeated modules."""
    best_name, best = "", None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len({type(m) for m in module}) != 1:
            continue
        if len(module) > 1 and (best is None or len(module) > len(best)):
            best_name, best = name, module
    if best is None:
        raise InputError(
            f"Cannot find a stack of blocks in {type(model).__name__} for --method surgical; "
            "name module prefixes in --surgical_blocks instead."
        )
    return best_name, best


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
                raise InputError(f"Block {spec} does not exist: {stack_name} has {len(stack)} blocks.")
            chosen_prefixes.append(f"{stack_name}.{index % len(stack)}.")
        else:
            chosen_prefixes.append(spec if spec.endswith(".") else spec + ".")
    names = [n for n, _ in model.named_parameters() if any(n.startswith(p) for p in chosen_prefixes)]
    if not names:
        raise InputError(f"--surgical_blocks {blocks} match no parameters.")
    return names


# ---- batches -------------------------------------------------------------------------------------
class Batcher:
    """Turns task inputs into model inputs: tokenised text (padded) or normalised images."""

    def __init__(self, args: AdaptArguments, task: TaskData, model: nn.Module):
        self.task = task
        if task.is_image:
            processor = load_image_processor(args.source)
            self.companion = processor
            self.normalize = Normalize(list(processor.image_mean), list(processor.image_std))
        else:
            tokenizer = ensure_pad_token(load_tokenizer(args.source), model)
            pooling = getattr(model.config, "pooling", None)  # hfssl's pooled classifier says which it reads
            if pooling in ("mean", "last") and "attention_mask" not in tokenizer.model_input_names:
                raise InputError(
                    f"--pooling {pooling} needs to know which tokens are padding, and the tokenizer of {args.source} "
                    "returns no attention_mask. Use --pooling cls, or a tokenizer that returns one."
                )
            self.companion = tokenizer
            self.context = context_window(model)
        self.device = next(model.parameters()).device

    def __call__(self, inputs) -> dict:
        if self.task.is_image:
            return {"pixel_values": self.normalize(inputs).to(self.device)}
        texts = list(inputs)
        encoded = self.companion(texts, padding=True, return_tensors="pt")
        check_fits_context(encoded["attention_mask"].sum(dim=1).tolist(), self.context, texts)
        return {k: v.to(self.device) for k, v in encoded.items()}


def take(x, index):
    return x[index] if isinstance(x, torch.Tensor) else [x[i] for i in index.tolist()]


@torch.no_grad()
def predict(model: nn.Module, batcher: Batcher, inputs, batch_size: int) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        out.append(model(**batcher(inputs[start : start + batch_size])).logits.argmax(dim=1).cpu())
    return torch.cat(out)


@torch.no_grad()
def head_inputs(model: nn.Module, batcher: Batcher, inputs, batch_size: int) -> torch.Tensor:
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
