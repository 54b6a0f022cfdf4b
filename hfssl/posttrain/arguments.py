"""The arguments of `scripts/post_train.py`: one dataclass for the four methods, checked when built."""

from dataclasses import dataclass, field
from typing import ClassVar

from ..data.instructions import SYNTHETIC_TASKS, parse_task_specs
from ..data.post_training import METHODS
from ..run.arguments import (
    LoraArguments,
    ModelSourceArguments,
    RunArguments,
    require_choice,
    require_fraction,
    require_non_negative,
    require_positive,
)
from ..run.errors import InputError

# full-parameter learning rates (TRL 1.16 defaults: SFT 2e-5, reward 1e-4, DPO and GRPO 1e-6); LoRA trains at 10x
DEFAULT_LEARNING_RATES = {"sft": 5e-5, "reward": 5e-5, "dpo": 5e-6, "grpo": 1e-6}


@dataclass(kw_only=True)
class PostTrainArguments(ModelSourceArguments, LoraArguments, RunArguments):
    """SFT, reward model, DPO or GRPO on a causal LM (hfssl.posttrain)."""

    method: str = field(
        default="sft",
        metadata={
            "help": "sft (instruction tuning: loss on the response only), reward (a scalar head trained with the "
            "Bradley-Terry loss on chosen/rejected pairs), dpo (preference tuning against a frozen reference) or "
            "grpo (an RL step: sampled answers scored by a reward, with a KL penalty to the reference)."
        },
    )
    model_name_or_path: str = field(
        metadata={"help": "The causal LM to post-train: a saved folder, a Hub id or a GGUF file (--gguf_file)."}
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training rows: a .jsonl/.csv/.parquet file or Hub dataset with prompt/response (sft), "
            "prompt/chosen/rejected (reward, dpo) or prompt (+task/answer) (grpo) columns, or sft 'messages'. "
            "Default: the built-in --instruction_tasks."
        },
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Held-out rows (default: a seeded held-out part of the training rows)."}
    )
    instruction_tasks: list[str] = field(
        default_factory=lambda: list(SYNTHETIC_TASKS),
        metadata={
            "help": "Without --dataset: built-in tasks (hfssl.data.instructions): addition, lookup, reversal, sorting, "
            "and sst2=PATH, trec=PATH from a 'label text' file."
        },
    )
    examples_per_task: int = field(default=200, metadata={"help": "Built-in examples drawn per task."})
    eval_split_fraction: float = field(
        default=0.2, metadata={"help": "Held-out fraction of the rows (of each built-in task) without --eval_dataset."}
    )
    max_eval_examples: int = field(
        default=64, metadata={"help": "Held-out rows scored before and after training (0: all)."}
    )
    output_dir: str = field(default="outputs/post-trained", metadata={"help": "Where the model and metrics go."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Longest prompt + response in tokens (default: the model's context window, at most 512)."},
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "sft: pack short examples into rows of --max_length tokens (TRL's best-fit decreasing), each "
            "attending to itself only (the mask follows the position ids; checked on the model before training)."
        },
    )
    max_steps: int = field(default=0, metadata={"help": "Optimizer steps (overrides --num_train_epochs when > 0)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training rows."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Rows per step (grpo: prompts; --packing: packed rows)."}
    )
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Rows per evaluation batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW peak learning rate (default per method: sft 5e-5, dpo 5e-6, ...)."}
    )
    warmup_ratio: float = field(default=0.0, metadata={"help": "Linear warm-up fraction, then linear decay."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (GPU) autocast."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    save_steps: int = field(default=0, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the newest N checkpoints (0: all)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder: continue that run exactly."}
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft); the base stays frozen."})
    merge_adapter: bool = field(default=False, metadata={"help": "Save the LoRA model merged, not adapter-only."})
    beta: float = field(
        default=0.1, metadata={"help": "dpo: the preference temperature beta; grpo: the weight of the KL penalty."}
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "dpo: the frozen reference (default: the starting model; with --use_lora, the base model seen "
            "through the disabled adapter, no second copy)."
        },
    )
    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "grpo: a reward model (a --method reward output). Default: the checkable reward of the built-in "
            "tasks (1 right and in the required format, 0.5 right in another format, 0.1 formatted but wrong)."
        },
    )
    num_generations: int = field(default=4, metadata={"help": "grpo: answers sampled per prompt (the group)."})
    max_completion_length: int = field(
        default=24, metadata={"help": "grpo and evaluation: the longest generated answer, in tokens."}
    )
    temperature: float = field(default=1.0, metadata={"help": "grpo: the sampling temperature."})

    RESUME_SAFE: ClassVar[frozenset] = RunArguments.RESUME_SAFE | {
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "per_device_eval_batch_size",
        "max_eval_examples",
        "max_steps",
        "num_train_epochs",
    }

    def __post_init__(self):
        super().__post_init__()
        self.check_model_source()
        require_choice(self, "method", METHODS)
        require_choice(self, "mixed_precision", ("no", "bf16", "fp16"))
        require_positive(
            self,
            "examples_per_task",
            "max_length",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "learning_rate",
            "logging_steps",
            "num_generations",
            "max_completion_length",
            "temperature",
        )
        require_non_negative(
            self, "max_steps", "num_train_epochs", "weight_decay", "max_grad_norm", "save_steps", "save_total_limit"
        )
        require_non_negative(self, "max_eval_examples", "beta")
        if self.method == "dpo" and self.beta == 0:
            raise InputError("--beta must be > 0 for DPO (it scales the log-ratio margins; GRPO's KL weight may be 0).")
        if self.num_generations < 2:
            raise InputError(
                f"--num_generations must be at least 2 (GRPO compares the answers of a group), got "
                f"{self.num_generations}."
            )
        require_fraction(self, "eval_split_fraction", low_open=True)
        require_fraction(self, "warmup_ratio")
        self.check_lora()
        if self.max_steps == 0 and self.num_train_epochs == 0:
            raise InputError("Set --max_steps > 0 or --num_train_epochs > 0.")
        if self.dataset is None:
            parse_task_specs(self.instruction_tasks)
        if self.ref_model_name_or_path and self.method != "dpo":
            raise InputError("--ref_model_name_or_path is DPO's reference: it needs --method dpo.")
        if self.ref_model_name_or_path and self.use_lora:
            raise InputError("With --use_lora the reference is the base model (the adapter disabled): drop one flag.")
        if self.reward_model_name_or_path and self.method != "grpo":
            raise InputError("--reward_model_name_or_path scores grpo's samples: it needs --method grpo.")
        if self.packing and self.method != "sft":
            raise InputError(f"--packing packs SFT's examples: it needs --method sft, not {self.method}.")
        if self.merge_adapter and not self.use_lora:
            raise InputError("--merge_adapter merges a LoRA adapter: it needs --use_lora.")
        if self.method == "grpo" and self.per_device_train_batch_size % self.num_generations:
            raise InputError(
                f"--per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"--num_generations ({self.num_generations}): each step scores whole groups of answers."
            )

    @property
    def peak_learning_rate(self) -> float:
        """--learning_rate, or the method's default (x10 for LoRA)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATES[self.method] * (10 if self.use_lora else 1)
