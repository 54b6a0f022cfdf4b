"""Settings of `scripts/meta_train.py`, valid when constructed."""

from dataclasses import dataclass, field
from typing import ClassVar

from ..models.pooling import check_pooling
from ..run.arguments import ModelSourceArguments, RunArguments, require_choice, require_non_negative, require_positive
from ..run.errors import InputError
from .algorithms import ALGORITHMS

ENGINES = ("torch.func", "learn2learn")


@dataclass(kw_only=True)
class MetaArguments(ModelSourceArguments, RunArguments):
    dataset: str = field(
        metadata={
            "help": "Labelled images (Omniglot-style zip, image folder, parquet, Hub name) or, "
            "with a text --model_name_or_path, labelled text (csv/jsonl/'label text' .txt/Hub)."
        }
    )
    algorithm: str = field(default="maml", metadata={"help": "maml, fomaml, anil or protonet."})
    engine: str = field(default="torch.func", metadata={"help": "torch.func (default) or learn2learn."})
    task_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch.func MAML/FOMAML on CPU: tasks of a meta-batch run at once in this many threads, one "
            "intra-op thread each (default: torch's thread count; 1: one task at a time)."
        },
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Meta-test classes (e.g. other alphabets); default: held-out classes of --dataset."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from a pretrained model: an image encoder (e.g. hfssl SimCLR) for image data, or a text "
            "model (e.g. hfssl GPT, any AutoModelForSequenceClassification) for labelled text; default: a "
            "fresh small ResNet for images."
        },
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": "A text model's features phi(x): cls, mean or last (default: what the model was trained for; "
            "hfssl.models.pooling)."
        },
    )
    output_dir: str = field(default="outputs/meta", metadata={"help": "Where the model, metrics and checkpoints go."})
    ways: int = field(default=5, metadata={"help": "N: classes per episode."})
    shots: int = field(default=1, metadata={"help": "K: support examples per class during meta-training."})
    queries: int = field(default=15, metadata={"help": "Q: query examples per class."})
    test_shots: list[int] = field(default_factory=lambda: [1, 5], metadata={"help": "Shots to meta-test with."})
    max_steps: int = field(default=1000, metadata={"help": "Outer (meta) optimisation steps."})
    meta_batch_size: int = field(default=4, metadata={"help": "Episodes per outer step."})
    outer_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of the outer loop."})
    inner_lr: float = field(default=0.4, metadata={"help": "Inner-loop SGD step size alpha."})
    inner_steps: int = field(default=1, metadata={"help": "Inner gradient steps while meta-training."})
    eval_inner_steps: int = field(default=3, metadata={"help": "Inner gradient steps at meta-validation/test."})
    eval_steps: int = field(default=200, metadata={"help": "Meta-validate every N steps (0: never)."})
    val_episodes: int = field(default=100, metadata={"help": "Episodes per meta-validation."})
    test_episodes: int = field(default=600, metadata={"help": "Episodes per meta-test setting."})
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Clip the meta-gradient's norm to this (0: no clipping, as in MAML's papers)."}
    )
    save_steps: int = field(default=200, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the newest N checkpoints (0: all)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder: continue that run exactly."}
    )
    image_size: int = field(default=28, metadata={"help": "Images are resized to S x S."})
    class_split: list[float] = field(
        default_factory=lambda: [0.7, 0.15, 0.15],
        metadata={
            "help": "Fractions of --dataset classes for meta-train/val/test (val/test parts are used when needed)."
        },
    )
    resnet_widths: list[int] = field(
        default_factory=lambda: [32, 32, 64, 64],
        metadata={"help": "Stage widths of the fresh ResNet (one basic block per stage)."},
    )

    # a resumed run may validate, test and checkpoint on another schedule, train for more steps and use other task
    # threads (the same meta-gradient); everything else must match its checkpoint (hfssl.run.resume)
    RESUME_SAFE: ClassVar[frozenset] = RunArguments.RESUME_SAFE | {
        "max_steps",
        "eval_steps",
        "val_episodes",
        "test_episodes",
        "test_shots",
        "eval_inner_steps",
        "save_steps",
        "save_total_limit",
        "task_threads",
    }

    ADDED_ARGUMENTS: ClassVar[dict] = {"max_grad_norm": 0.0}  # meta-training did not clip before the flag

    def __post_init__(self):
        super().__post_init__()
        self.check_model_source()
        self.pooling = check_pooling(self.pooling)
        if self.pooling is not None and not self.model_name_or_path:
            raise InputError("--pooling pools a pretrained text model's tokens: add --model_name_or_path, or drop it.")
        require_choice(self, "algorithm", ALGORITHMS)
        require_choice(self, "engine", ENGINES)
        require_positive(
            self,
            "task_threads",
            "ways",
            "shots",
            "queries",
            "test_shots",
            "max_steps",
            "meta_batch_size",
            "outer_lr",
            "inner_lr",
            "inner_steps",
            "val_episodes",
            "test_episodes",
            "image_size",
            "resnet_widths",
        )
        require_non_negative(self, "eval_inner_steps", "eval_steps", "max_grad_norm", "save_steps", "save_total_limit")
        if len(self.class_split) != 3:
            raise InputError(f"--class_split needs 3 fractions (meta-train, val, test), got {self.class_split}.")
