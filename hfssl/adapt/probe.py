"""Linear probing of any model (ours or from the Hub) on a labelled text or image data set.

One config dataclass (`ProbeArguments`) and one entry function (`run_linear_probe`) that returns the
adapted model and its metrics. Features are extracted once and cached; the head is fitted on the cache.
For hfssl models the saved result is a complete classifier (`GPTForSequenceClassification` /
`SimCLRForImageClassification`) whose head is the probe, loadable with the Auto classes; for other models
the head is saved beside a pointer to its base model (`probe_head.safetensors`, `probe.json`).
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModel

from ..data.vision import Normalize
from ..models.loading import load_config, load_image_processor, load_pretrained, load_tokenizer
from ..models.pooling import refuse_pooling_for_images
from ..run.arguments import require_choice, require_positive
from ..run.output import publish
from ..run.results import AdaptationResult, save_result
from ..run.start import prepare_run
from .features import cached_features, data_key, image_features, text_features
from .linear_probe import LinearProbeConfig, fit_linear_probe
from .metrics import classification_scores
from .task import AdaptArguments, load_task

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ProbeArguments(AdaptArguments):
    pooling: str | None = field(
        default=None,
        metadata={"help": "Text features: 'last' token (decoder default), 'mean' (encoder default) or 'cls'."},
    )
    solver: str = field(default="lbfgs", metadata={"help": "'lbfgs' (logistic regression, default) or 'sgd'."})
    l2: float = field(default=1e-3, metadata={"help": "L2 penalty of the probe."})

    def __post_init__(self):
        super().__post_init__()
        require_choice(self, "solver", ("lbfgs", "sgd"))
        require_positive(self, "l2")


def _save_classifier(args, model, head: nn.Linear, names: list[str], companion, out: Path) -> str:
    """Save base + probe head as one classifier where we know the head's place; else the head alone."""
    id2label = dict(enumerate(names))
    model_type = model.config.model_type
    if model_type in ("hfssl_gpt", "hfssl_simclr"):
        from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

        auto = AutoModelForSequenceClassification if model_type == "hfssl_gpt" else AutoModelForImageClassification
        classifier = load_pretrained(
            auto,
            args.source,
            new_head=True,
            num_labels=len(names),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
        )
        target = classifier.score if model_type == "hfssl_gpt" else classifier.classifier
        with torch.no_grad():
            target.weight.copy_(head.weight)
            target.bias.copy_(head.bias)
        classifier.save_pretrained(out)
        companion.save_pretrained(out)
        return type(classifier).__name__
    save_file(
        {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
        str(out / "probe_head.safetensors"),
    )
    (out / "probe.json").write_text(
        json.dumps({"base_model": args.model_name_or_path, "pooling": args.pooling, "id2label": id2label}, indent=2)
        + "\n"
    )
    return "probe_head"


def _feature_function(args: ProbeArguments, model: nn.Module, task):
    """(features(inputs) -> (N, F), the model's tokenizer or image processor)."""
    if task.is_image:
        refuse_pooling_for_images(args.pooling, args.source)
        processor = load_image_processor(args.source)
        normalize = Normalize(list(processor.image_mean), list(processor.image_std))
        return lambda pixels: image_features(model, pixels, normalize, args.per_device_eval_batch_size), processor
    tokenizer = load_tokenizer(args.source)

    def features(texts):
        return text_features(model, tokenizer, texts, pooling=args.pooling, batch_size=args.per_device_eval_batch_size)

    return features, tokenizer


def run_linear_probe(args: ProbeArguments) -> AdaptationResult:
    """Fit and evaluate a linear probe; save the adapted model and metrics.json to args.output_dir."""
    prepare_run(args, [args.source.input_path])
    config = load_config(args.source)
    model = load_pretrained(AutoModel, args.source)
    task = load_task(args, config)
    features, processor = _feature_function(args, model, task)
    train_f, hit_train = cached_features(
        model, data_key(task.train_x, args.pooling, "train"), lambda: features(task.train_x)
    )
    eval_f, hit_eval = cached_features(
        model, data_key(task.eval_x, args.pooling, "eval"), lambda: features(task.eval_x)
    )
    head = fit_linear_probe(
        train_f, task.train_y, len(task.names), LinearProbeConfig(solver=args.solver, l2=args.l2, seed=args.seed)
    )
    with torch.no_grad():
        predictions = head(eval_f).argmax(dim=1)
    result = AdaptationResult(
        method="linear_probe",
        task=task.task,
        **classification_scores(predictions.tolist(), task.eval_y.tolist()),
        num_train=len(task.train_y),
        num_eval=len(task.eval_y),
        num_labels_per_class=args.num_labels_per_class,
        labels=task.names,
        feature_cache_hits=int(hit_train) + int(hit_eval),
        args=args.to_dict(),
    )

    def write(folder: Path) -> None:
        result.saved = _save_classifier(args, model, head, task.names, processor, folder)
        save_result(result, folder)

    publish(args.output_dir, write)
    logger.info("linear probe: accuracy %.4f, macro-F1 %.4f", result.accuracy, result.macro_f1)
    return result
