"""Linear probing of any model (ours or from the Hub) on a labelled text or image data set.

One config dataclass (`ProbeArguments`) and one entry function (`run_linear_probe`) that returns the
adapted model and its metrics. Features are extracted once and cached; the head is fitted on the cache.
For hfssl models the saved result is a complete classifier (`GPTForSequenceClassification` /
`SimCLRForImageClassification`) whose head is the probe, loadable with the Auto classes; for other models
the head is saved beside a pointer to its base model (`probe_head.safetensors`, `probe.json`).
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

from ..data.vision import Normalize, load_images
from .data import few_shot_indices, load_text_classification
from .features import cached_features, data_key, image_features, text_features
from .linear_probe import LinearProbeConfig, fit_linear_probe
from .metrics import classification_scores

logger = logging.getLogger(__name__)


@dataclass
class ProbeArguments:
    model_name_or_path: str = field(metadata={"help": "Pretrained model: a saved folder or a Hub id."})
    dataset: str = field(metadata={"help": "Labelled training data (text: csv/tsv/jsonl/parquet/'label text' .txt or "
                                           "Hub name; images: parquet/image folder/Hub name/'digits')."})
    output_dir: str = field(default="outputs/probe", metadata={"help": "Where the adapted model and metrics go."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Evaluation data (default: a seeded held-out part of --dataset)."}
    )
    eval_split_fraction: float = field(default=0.2, metadata={"help": "Held-out fraction when --eval_dataset is absent."})
    num_labels_per_class: int | None = field(
        default=None, metadata={"help": "K: train on a seeded, class-balanced K examples per class (default: all)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the few-shot subset, the held-out split and SGD."})
    text_column: str = field(default="text", metadata={"help": "Text column."})
    label_column: str = field(default="label", metadata={"help": "Label column."})
    image_column: str = field(default="image", metadata={"help": "Image column."})
    pooling: str | None = field(
        default=None, metadata={"help": "Text features: 'last' token (decoder default), 'mean' or 'first'."}
    )
    solver: str = field(default="lbfgs", metadata={"help": "'lbfgs' (logistic regression, default) or 'sgd'."})
    l2: float = field(default=1e-3, metadata={"help": "L2 penalty of the probe."})
    batch_size: int = field(default=64, metadata={"help": "Batch size of feature extraction."})


def _is_image_model(config) -> bool:
    return hasattr(config, "num_channels") and hasattr(config, "image_size")


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, int(round(fraction * n)))
    return order[n_eval:], order[:n_eval]


def _text_data(args: ProbeArguments):
    kwargs = dict(text_column=args.text_column, label_column=args.label_column)
    train, names = load_text_classification(args.dataset, **kwargs)
    if args.eval_dataset:
        evaluation, eval_names = load_text_classification(args.eval_dataset, **kwargs)
        if eval_names != names:
            raise ValueError(f"--eval_dataset labels {eval_names} differ from --dataset labels {names}.")
    else:
        train_idx, eval_idx = _split(len(train), args.eval_split_fraction, args.seed)
        train, evaluation = train.select(train_idx), train.select(eval_idx)
    return (list(train["text"]), torch.tensor(train["label"]), list(evaluation["text"]),
            torch.tensor(evaluation["label"]), names)


def _image_data(args: ProbeArguments, image_size: int):
    kwargs = dict(image_size=image_size, image_column=args.image_column, label_column=args.label_column)
    train = load_images(args.dataset, **kwargs)
    if train.labels is None:
        raise ValueError(f"{train.name} has no label column {args.label_column!r}: pass --label_column.")
    if args.eval_dataset:
        evaluation = load_images(args.eval_dataset, **kwargs)
    else:
        train_idx, eval_idx = _split(len(train), args.eval_split_fraction, args.seed)
        train, evaluation = train.subset(train_idx), train.subset(eval_idx)
    if len(set(train.labels.tolist())) < 2:
        raise ValueError(f"{train.name} has a single class: classification needs at least two.")
    return train.pixels, train.labels, evaluation.pixels, evaluation.labels, train.label_names


def _save_classifier(args, model, head: nn.Linear, names: list[str], companion, out: Path) -> str:
    """Save base + probe head as one classifier where we know the head's place; else the head alone."""
    id2label = dict(enumerate(names))
    model_type = model.config.model_type
    if model_type in ("hfssl_gpt", "hfssl_simclr"):
        from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

        auto = AutoModelForSequenceClassification if model_type == "hfssl_gpt" else AutoModelForImageClassification
        classifier = auto.from_pretrained(args.model_name_or_path, num_labels=len(names), id2label=id2label,
                                          label2id={v: k for k, v in id2label.items()})
        target = classifier.score if model_type == "hfssl_gpt" else classifier.classifier
        with torch.no_grad():
            target.weight.copy_(head.weight)
            target.bias.copy_(head.bias)
        classifier.save_pretrained(out)
        companion.save_pretrained(out)
        return type(classifier).__name__
    save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
              str(out / "probe_head.safetensors"))
    (out / "probe.json").write_text(json.dumps({"base_model": args.model_name_or_path, "pooling": args.pooling,
                                                 "id2label": id2label}, indent=2) + "\n")
    return "probe_head"


def run_linear_probe(args: ProbeArguments) -> tuple[nn.Module, dict]:
    """Fit and evaluate a linear probe; save the adapted model and metrics.json to args.output_dir.

    Returns (the probe head as an nn.Linear on raw features, metrics dict).
    """
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    model = AutoModel.from_pretrained(args.model_name_or_path)
    image = _is_image_model(config)
    if image:
        processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
        normalize = Normalize(list(processor.image_mean), list(processor.image_std))
        train_x, train_y, eval_x, eval_y, names = _image_data(args, config.image_size)

        def features(pixels):
            return image_features(model, pixels, normalize, args.batch_size)
    else:
        processor = AutoTokenizer.from_pretrained(args.model_name_or_path)
        train_x, train_y, eval_x, eval_y, names = _text_data(args)

        def features(texts):
            return text_features(model, processor, texts, pooling=args.pooling, batch_size=args.batch_size)

    if args.num_labels_per_class:
        chosen = few_shot_indices(train_y, args.num_labels_per_class, args.seed)
        train_x = train_x[chosen] if image else [train_x[i] for i in chosen]
        train_y = train_y[chosen]
    train_f, hit_train = cached_features(model, data_key(train_x, args.pooling, "train"), lambda: features(train_x))
    eval_f, hit_eval = cached_features(model, data_key(eval_x, args.pooling, "eval"), lambda: features(eval_x))
    head = fit_linear_probe(train_f, train_y, len(names), LinearProbeConfig(solver=args.solver, l2=args.l2,
                                                                            seed=args.seed))
    with torch.no_grad():
        predictions = head(eval_f).argmax(dim=1)
    metrics = {
        "method": "linear_probe",
        **classification_scores(predictions.tolist(), eval_y.tolist()),
        "num_train": len(train_y),
        "num_eval": len(eval_y),
        "num_labels_per_class": args.num_labels_per_class,
        "labels": names,
        "feature_cache_hits": int(hit_train) + int(hit_eval),
        "args": asdict(args),
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics["saved"] = _save_classifier(args, model, head, names, processor, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("linear probe: accuracy %.4f, macro-F1 %.4f", metrics["accuracy"], metrics["macro_f1"])
    return head, metrics
