"""The downstream task shared by every adaptation method: its arguments, its labelled data, few-shot subsets."""

from dataclasses import dataclass, field

import torch

from ..data.labelled import LabelledData, few_shot_indices, load_labelled
from ..data.splits import held_out_split
from ..models.helpers import is_image_model
from ..models.pooling import check_pooling
from ..run.arguments import ModelSourceArguments, RunArguments, require_fraction, require_positive
from ..run.errors import InputError


@dataclass(kw_only=True)
class AdaptArguments(ModelSourceArguments, RunArguments):
    """What every adaptation method needs: the pretrained model and the labelled task."""

    model_name_or_path: str = field(metadata={"help": "Pretrained model: a saved folder or a Hub id."})
    dataset: str = field(
        metadata={
            "help": "Labelled training data (text: csv/tsv/jsonl/parquet/'label text' .txt or Hub name; images: "
            "parquet/image folder/Hub name/'digits')."
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
    text_column: str = field(default="text", metadata={"help": "Text column."})
    label_column: str = field(default="label", metadata={"help": "Label column."})
    image_column: str = field(default="image", metadata={"help": "Image column."})
    per_device_eval_batch_size: int = field(
        default=32, metadata={"help": "Batch size of feature extraction and evaluation."}
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": "Text classifiers: how the hidden states become one vector for the head: cls, mean or last. "
            "Default: what the model was trained for (a sentence-transformers model's own pooling, the last token "
            "of a causal LM, an encoder's [CLS] pooler); the run's log says which (hfssl.models.pooling)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_model_source()
        self.pooling = check_pooling(self.pooling)
        require_positive(self, "num_labels_per_class", "per_device_eval_batch_size")
        require_fraction(self, "eval_split_fraction", low_open=True)


@dataclass
class TaskData:
    """train_x / eval_x: list of texts or uint8 images (N, 3, S, S); *_y: int64 (N,); names: class names."""

    train_x: list | torch.Tensor
    train_y: torch.Tensor
    eval_x: list | torch.Tensor
    eval_y: torch.Tensor
    names: list[str]
    is_image: bool

    @property
    def task(self) -> str:
        """The pipeline task: image-classification or text-classification."""
        return "image-classification" if self.is_image else "text-classification"


def _load(args: AdaptArguments, spec: str, image_size: int | None) -> LabelledData:
    return load_labelled(
        spec,
        image_size=image_size,
        text_column=args.text_column,
        label_column=args.label_column,
        image_column=args.image_column,
    )


def load_task(args: AdaptArguments, model_config) -> TaskData:
    """The task's data (images when the model takes images), few-shot-subsampled when K is given."""
    image_size = model_config.image_size if is_image_model(model_config) else None
    train = _load(args, args.dataset, image_size)
    if args.eval_dataset:
        evaluation = _load(args, args.eval_dataset, image_size)
        if evaluation.names != train.names:
            raise InputError(f"--eval_dataset labels {evaluation.names} differ from --dataset labels {train.names}.")
    else:
        train_idx, eval_idx = held_out_split(len(train), args.eval_split_fraction, args.seed)
        train, evaluation = train.subset(train_idx), train.subset(eval_idx)
    if args.num_labels_per_class:
        # the count a user checks against their file: without --eval_dataset, part of each class is held out first
        where = "" if args.eval_dataset else f" once --eval_split_fraction {args.eval_split_fraction} is held out"
        picked = few_shot_indices(train.labels, args.num_labels_per_class, args.seed, names=train.names, where=where)
        train = train.subset(picked)
    return TaskData(train.inputs, train.labels, evaluation.inputs, evaluation.labels, train.names, train.is_image)
