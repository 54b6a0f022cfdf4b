"""Settings of `scripts/pretrain.py` that every objective shares: the loop, the data source, the model to continue.

Each objective subclasses `PretrainArguments` in its own file, adding its fields and giving its own defaults (output
folder, steps, learning rate): `CausalLMArguments` in causal_lm.py, `MaskedLMArguments` in masked_lm.py,
`ContrastiveArguments` in contrastive.py, `ClipArguments` in clip.py (the last two share `ImageEncoderArguments`). An
instance is valid when constructed; `parse_pretrain_args(argv)` picks the class from `--objective` and parses the
command line (and a `--config` recipe) into it. A recipe plus a seed fully determines a run; the resolved arguments
are saved as `run_args.json` in the output folder.
"""

from dataclasses import dataclass, field
from typing import ClassVar

from ..run.arguments import (
    ModelSourceArguments,
    RunArguments,
    flag_value,
    parse_cli,
    read_recipe,
    require_choice,
    require_fraction,
    require_non_negative,
    require_positive,
)
from ..run.errors import InputError
from ..run.trackers import TRACKER_CHOICES

DEFAULT_OBJECTIVE = "causal_lm"  # the README's main command


@dataclass(kw_only=True)
class PretrainArguments(ModelSourceArguments, RunArguments):
    # a resumed run may log, evaluate and checkpoint on another schedule and train for more steps (the cosine decay
    # then stretches over the new total); everything else must match its checkpoint (hfssl.run.resume)
    RESUME_SAFE: ClassVar[frozenset] = RunArguments.RESUME_SAFE | {
        "max_steps",
        "num_train_epochs",
        "logging_steps",
        "eval_steps",
        "max_eval_samples",
        "save_steps",
        "save_total_limit",
        "report_to",
        "cpu_threads",
        "dataloader_num_workers",
        "per_device_eval_batch_size",
        "sample_prompt",
        "sample_max_new_tokens",
    }
    objective: str = field(
        default=DEFAULT_OBJECTIVE,
        metadata={
            "help": "'causal_lm' (GPT on text), 'masked_lm' (BERT on text) or 'contrastive' (SimCLR on images); "
            "`--objective X --help` lists that objective's flags."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue pretraining this saved model (folder or Hub id) instead of a fresh one."},
    )
    # ---- data ----
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a local file or folder, a Hub dataset name, or a built-in name (default: the "
            "objective's built-in data set)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split to train on."})
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Evaluation data (same forms as --dataset). Default: a held-out part of --dataset."},
    )
    eval_split_fraction: float = field(
        default=0.05, metadata={"help": "Fraction of --dataset held out when --eval_dataset is not given."}
    )
    # ---- optimisation ----
    max_steps: int = field(default=500, metadata={"help": "Optimizer steps (overrides --num_train_epochs when > 0)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs to train when --max_steps is 0."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Items per process per micro-step."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Items per process when evaluating."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-steps per optimizer step; global batch = batch x processes x this."}
    )
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay (not applied to biases, norms, embeddings)."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (0.95 is steadier than 0.999 for LMs)."})
    warmup_ratio: float = field(
        default=0.05, metadata={"help": "Fraction of steps of linear warmup before cosine decay."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: str = field(
        default="no", metadata={"help": "'no', 'bf16' or 'fp16' (fp16 needs a GPU). bf16 was not faster on our CPUs."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    # ---- logging, evaluation, checkpoints ----
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N optimizer steps."})
    eval_steps: int = field(
        default=250, metadata={"help": "Evaluate on the held-out data every N steps (0: end only)."}
    )
    max_eval_samples: int | None = field(default=512, metadata={"help": "Cap on evaluation items (None: all)."})
    save_steps: int = field(default=250, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the newest N checkpoints (0: all)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder: continue that run exactly."}
    )
    report_to: str = field(
        default="tensorboard", metadata={"help": "Accelerate tracker: 'tensorboard', 'all' or 'none'."}
    )
    cpu_threads: int = field(
        default=0,
        metadata={
            "help": "Torch threads per process on CPU; 0 = available cores / local processes "
            "(`accelerate launch` alone would pin every process to 1 thread)."
        },
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Worker processes per data loader."})

    def __post_init__(self):
        super().__post_init__()
        self.check_model_source()
        require_positive(
            self,
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "learning_rate",
            "max_eval_samples",
        )
        require_non_negative(
            self,
            "max_steps",
            "num_train_epochs",
            "eval_steps",
            "save_steps",
            "save_total_limit",
            "weight_decay",
            "max_grad_norm",
            "cpu_threads",
            "dataloader_num_workers",
        )
        require_choice(self, "mixed_precision", ("no", "bf16", "fp16"))
        require_choice(self, "report_to", TRACKER_CHOICES)
        require_fraction(self, "eval_split_fraction")
        require_fraction(self, "warmup_ratio")
        if self.max_steps == 0 and self.num_train_epochs == 0:
            raise InputError("Set --max_steps > 0 or --num_train_epochs > 0.")


@dataclass(kw_only=True)
class ImageEncoderArguments:
    """The shape of a fresh hfssl image encoder (SimCLR's backbone): the objectives that train one mix this in."""

    backbone: str = field(default="resnet", metadata={"help": "Encoder: 'resnet' (CIFAR stem) or 'vit'."})
    image_size: int = field(default=32, metadata={"help": "Images are resized to image_size x image_size."})
    resnet_layers: list[int] = field(
        default_factory=lambda: [2, 2, 2, 2], metadata={"help": "Basic blocks per ResNet stage (2 2 2 2 = ResNet-18)."}
    )
    resnet_widths: list[int] = field(
        default_factory=lambda: [64, 128, 256, 512],
        metadata={"help": "Channels per ResNet stage. Halve them (32 64 128 256) for ~4x faster CPU runs."},
    )

    def check_image_encoder(self) -> None:
        require_choice(self, "backbone", ("resnet", "vit"))
        require_positive(self, "image_size", "resnet_layers", "resnet_widths")


def parse_pretrain_args(argv: list[str] | None = None) -> PretrainArguments:
    """The arguments of the objective named by `--objective` (on the command line or in the recipe).

    A flag that only another objective has is reported as such ("--icl_warmup_steps applies to --objective causal_lm
    only"), not just as unrecognised.
    """
    import dataclasses
    import sys

    from .objectives import OBJECTIVES, objective_class

    argv = list(sys.argv[1:] if argv is None else argv)
    name = flag_value(argv, "--objective") or read_recipe(argv).get("objective") or DEFAULT_OBJECTIVE
    cls = objective_class(name).arguments_class
    own = {f.name for f in dataclasses.fields(cls)}
    for token in argv:
        flag = token[2:].split("=", 1)[0] if token.startswith("--") else None
        if flag and flag not in own and flag != "config":
            owners = [other for other in OBJECTIVES if other != name and flag in _fields_of(other)]
            if owners:
                raise InputError(f"--{flag} applies to --objective {' / '.join(owners)} only, not to {name}.")
    return parse_cli(cls, argv)


def _fields_of(objective: str) -> set[str]:
    import dataclasses

    from .objectives import objective_class

    return {f.name for f in dataclasses.fields(objective_class(objective).arguments_class)}
