"""The downstream task shared by every adaptation method: arguments, labelled data, few-shot subsets."""

from dataclasses import dataclass, field

import torch

from ..data.splits import held_out_split
from ..data.vision import load_images
from ..hub import HubArguments
from .data import few_shot_indices, load_text_classification


@dataclass
class AdaptArguments(HubArguments):
    """What every adaptation method needs: the pretrained model and the labelled task."""

    model_name_or_path: str = field(metadata={"help": "Pretrained model: a saved folder or a Hub id."})
    dataset: str = field(
        metadata={
            "help": "Labelled training data (text: csv/tsv/jsonl/parquet/'label text' .txt or "
            "Hub name; images: parquet/image folder/Hub name/'digits')."
        }
    )
    output_dir: str = field(default="outputs/adapted", metadata={"help": "Where the adapted model and metrics go."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Evaluation data (default: a seeded held-out part of --dataset)."}
    )
    eval_split_fraction: float = field(
        default=0.2, metadata={"help": "Held-out fraction when --eval_dataset is absent."}
    )
    num_labels_per_class: int | None = field(
        default=None, metadata={"help": "K: train on a seeded, class-balanced K examples per class (default: all)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the few-shot subset, the held-out split and training."})
    text_column: str = field(default="text", metadata={"help": "Text column."})
    label_column: str = field(default="label", metadata={"help": "Label column."})
    image_column: str = field(default="image", metadata={"help": "Image column."})
    batch_size: int = field(default=32, metadata={"help": "Batch size (feature extraction and training)."})


@dataclass
class TaskData:
    """train_x / eval_x: list of texts or uint8 images (N, 3, S, S); *_y: int64 (N,); names: class names."""

    train_x: list | torch.Tensor
    train_y: torch.Tensor
    eval_x: list | torch.Tensor
    eval_y: torch.Tensor
    names: list[str]
    is_image: bool


def is_image_config(config) -> bool:
    return hasattr(config, "num_channels") and hasattr(config, "image_size")


def _text(args: AdaptArguments) -> TaskData:
    kwargs = dict(text_column=args.text_column, label_column=args.label_column)
    train, names = load_text_classification(args.dataset, **kwargs)
    if args.eval_dataset:
        evaluation, eval_names = load_text_classification(args.eval_dataset, **kwargs)
        if eval_names != names:
            raise ValueError(f"--eval_dataset labels {eval_names} differ from --dataset labels {names}.")
    else:
        train_idx, eval_idx = held_out_split(len(train), args.eval_split_fraction, args.seed)
        train, evaluation = train.select(train_idx), train.select(eval_idx)
    return TaskData(
        list(train["text"]),
        torch.tensor(train["label"]),
        list(evaluation["text"]),
        torch.tensor(evaluation["label"]),
        names,
        is_image=False,
    )


def _images(args: AdaptArguments, image_size: int) -> TaskData:
    kwargs = dict(image_size=image_size, image_column=args.image_column, label_column=args.label_column)
    train = load_images(args.dataset, **kwargs)
    if train.labels is None:
        raise ValueError(f"{train.name} has no label column {args.label_column!r}: pass --label_column.")
    if args.eval_dataset:
        evaluation = load_images(args.eval_dataset, **kwargs)
    else:
        train_idx, eval_idx = held_out_split(len(train), args.eval_split_fraction, args.seed)
        train, evaluation = train.subset(train_idx), train.subset(eval_idx)
    if len(set(train.labels.tolist())) < 2:
        raise ValueError(f"{train.name} has a single class: classification needs at least two.")
    return TaskData(train.pixels, train.labels, evaluation.pixels, evaluation.labels, train.label_names, is_image=True)


def load_task(args: AdaptArguments, model_config) -> TaskData:
    """The task's data (images when the model takes images), few-shot-subsampled when K is given."""
    task = _images(args, model_config.image_size) if is_image_config(model_config) else _text(args)
    if args.num_labels_per_class:
        chosen = few_shot_indices(task.train_y, args.num_labels_per_class, args.seed)
        task.train_x = task.train_x[chosen] if task.is_image else [task.train_x[i] for i in chosen]
        task.train_y = task.train_y[chosen]
    return task
