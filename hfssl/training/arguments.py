"""Run settings for `scripts/pretrain.py`, as dataclasses parsed by `HfArgumentParser`.

Precedence: dataclass defaults < `--config recipe.yaml` < command-line flags. A recipe plus a seed
fully determines a run; the resolved arguments are saved as `run_args.json` in the output folder.
"""

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from ..hub import HubArguments

# where `scripts/pretrain.py` saves when --output_dir is not given (the README's main command: causal_lm);
# an objective registered elsewhere saves under outputs/<its name>
DEFAULT_OUTPUT_DIRS = {"causal_lm": "outputs/gpt-stdlib", "contrastive": "outputs/simclr-digits"}
# optimizer steps and peak learning rate when not given (an objective registered elsewhere: the fallbacks)
DEFAULT_MAX_STEPS = {"causal_lm": 2000, "contrastive": 500}
FALLBACK_MAX_STEPS = 500
DEFAULT_LEARNING_RATE = {"causal_lm": 1e-3, "contrastive": 2e-3}
FALLBACK_LEARNING_RATE = 2e-3
# in-context warm-up steps of a fresh causal LM when --icl_warmup_steps is not given (README, "Learning check:
# does in-context learning emerge here?"); a model loaded with --model_name_or_path gets none
DEFAULT_ICL_WARMUP_STEPS = 2500


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from this saved model (folder or Hub id) instead of a fresh GPTConfig."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Use this tokenizer (folder or Hub id) instead of training a byte-level BPE on the corpus."},
    )
    # the defaults are the README's main command: a 2 x 128 model trained for more steps beat 4 x 256 in the
    # same CPU minutes, and a 1024-token output layer is ~3.5x cheaper per step than 4096 at this width
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size when training a tokenizer."})
    hidden_size: int = field(default=128, metadata={"help": "Model width d."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads (must divide hidden_size)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width (default 4 * hidden_size)."})
    max_position_embeddings: int = field(default=256, metadata={"help": "Context window of a fresh model."})
    dropout: float = field(
        default=0.0, metadata={"help": "Dropout on embeddings, residuals and attention (0 is best for short runs)."}
    )


@dataclass
class VisionArguments:
    """Model and data settings of `--objective contrastive` (SimCLR)."""

    backbone: str = field(default="resnet", metadata={"help": "Encoder: 'resnet' (CIFAR stem) or 'vit'."})
    image_size: int = field(default=32, metadata={"help": "Images are resized to image_size x image_size."})
    resnet_layers: list[int] = field(
        default_factory=lambda: [2, 2, 2, 2], metadata={"help": "Basic blocks per ResNet stage (2 2 2 2 = ResNet-18)."}
    )
    resnet_widths: list[int] = field(
        default_factory=lambda: [64, 128, 256, 512],
        metadata={"help": "Channels per ResNet stage. Halve them (32 64 128 256) for ~4x faster CPU runs."},
    )
    projection_dims: list[int] = field(
        default_factory=lambda: [512, 128], metadata={"help": "Projection head widths (hidden ..., output)."}
    )
    temperature: float = field(
        default=0.5,
        metadata={"help": "NT-Xent temperature tau (SimCLR used 0.5 on CIFAR-10; 0.1-0.2 for big batches)."},
    )
    blur: bool = field(
        default=False, metadata={"help": "Add Gaussian blur to the augmentations (helps on large images)."}
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(
        default="label", metadata={"help": "Column of class labels, used only by the kNN monitor."}
    )
    knn_k: list[int] = field(default_factory=lambda: [20, 200], metadata={"help": "k values of the kNN monitor."})
    knn_temperature: float = field(default=0.1, metadata={"help": "Vote temperature of the kNN monitor."})
    knn_bank_size: int = field(
        default=5000, metadata={"help": "Labelled training images in the kNN memory bank (a seeded subset)."}
    )


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a local file or folder, a Hub dataset name, or a built-in name. Text: "
            ".txt/.jsonl/.json/.csv/.tsv/.parquet, default the built-in 'stdlib_docstrings' (Python standard-library "
            "docstrings). Images: parquet or an image folder, default the built-in 'digits' (scikit-learn)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split to train on."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    text_sample_by: str = field(
        default="paragraph",
        metadata={"help": "For .txt files, one document is a 'line', a 'paragraph' or the whole 'document'."},
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Evaluation corpus (same forms as --dataset). Default: a held-out part of --dataset."},
    )
    eval_split_fraction: float = field(
        default=0.05, metadata={"help": "Fraction of --dataset documents held out when --eval_dataset is not given."}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per training sequence (packed across documents)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    icl_warmup_steps: int | None = field(
        default=None,
        metadata={
            "help": "Causal LM: optimizer steps on synthetic key -> value documents (hfssl.data.synthetic) "
            f"before the corpus, so the model learns to copy from its context (induction heads). Default "
            f"{DEFAULT_ICL_WARMUP_STEPS} for a fresh model, 0 with --model_name_or_path; 0 turns it off."
        },
    )
    icl_warmup_block_size: int = field(
        default=64,
        metadata={"help": "Tokens per warm-up sequence; warm-up batches hold as many tokens as corpus batches."},
    )
    icl_mix_fraction: float = field(
        default=0.1,
        metadata={
            "help": "After a warm-up, this fraction of the corpus's characters is synthetic documents too: "
            "without them the copying is forgotten (README, 'In-context warm-up')."
        },
    )


@dataclass
class PretrainArguments(HubArguments):
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where checkpoints and the model go (default outputs/gpt-stdlib or outputs/simclr-digits)."},
    )
    objective: str = field(
        default="causal_lm",
        metadata={"help": "'causal_lm' (GPT on text) or 'contrastive' (SimCLR on images; see the vision flags)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data order and dropout."})
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps on the corpus (overrides --num_epochs when > 0; a causal LM's in-context "
            "warm-up comes on top). Default 2000 for causal_lm, 500 for contrastive."
        },
    )
    num_epochs: float = field(default=1.0, metadata={"help": "Epochs to train when --max_steps is 0."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Sequences per process per micro-step."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Sequences per process when evaluating."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-steps per optimizer step; global batch = batch x processes x this."}
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak AdamW learning rate. Default 1e-3 for causal_lm (3e-3 delayed the in-context "
            "warm-up's copying in a probe run), 2e-3 for contrastive. Small models tolerate 1e-3..3e-3."
        },
    )
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay (not applied to biases, LayerNorms, embeddings)."}
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
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N optimizer steps."})
    eval_steps: int = field(
        default=250, metadata={"help": "Evaluate held-out loss/perplexity every N steps (0: end only)."}
    )
    max_eval_samples: int | None = field(default=512, metadata={"help": "Cap on evaluation blocks (None: all)."})
    save_steps: int = field(default=250, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the newest N checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder: continue that run exactly."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh even if --output_dir holds checkpoints of another run."}
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
    sample_prompt: str = field(
        default="",
        metadata={"help": "Prompt for the sample printed at the end (default: a held-out document's first 3 words)."},
    )
    sample_max_new_tokens: int = field(default=80, metadata={"help": "Length of the sample printed at the end."})


ARGUMENT_CLASSES = (ModelArguments, DataArguments, PretrainArguments, VisionArguments)


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, PretrainArguments, VisionArguments]:
    """Parse `argv` (default sys.argv[1:]); `--config FILE.yaml` supplies defaults that flags override."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.add_argument("--config", default=None, help="YAML recipe whose keys are any of these flags' names.")
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path.")
        recipe_path = Path(argv[i + 1])
        if not recipe_path.is_file():
            raise FileNotFoundError(f"Recipe file not found: {recipe_path}")
        recipe = yaml.safe_load(recipe_path.read_text()) or {}
        known = {f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls)}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ValueError(f"Unknown keys in recipe {recipe_path}: {unknown}.")
        parser.set_defaults(**recipe)
    *parsed, _remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if _remaining:
        raise ValueError(f"Unrecognised arguments: {_remaining}")
    model_args, data_args, train_args, vision_args = parsed[:4]  # then a namespace holding --config
    resolve_defaults(model_args, data_args, train_args)
    validate(model_args, data_args, train_args)
    return model_args, data_args, train_args, vision_args


def resolve_defaults(model_args: ModelArguments, data_args: DataArguments, train_args: PretrainArguments) -> None:
    """Fill the settings whose default depends on the objective or the model (those left None), in place."""
    if train_args.output_dir is None:
        train_args.output_dir = DEFAULT_OUTPUT_DIRS.get(train_args.objective, f"outputs/{train_args.objective}")
    if train_args.max_steps is None:
        train_args.max_steps = DEFAULT_MAX_STEPS.get(train_args.objective, FALLBACK_MAX_STEPS)
    if train_args.learning_rate is None:
        train_args.learning_rate = DEFAULT_LEARNING_RATE.get(train_args.objective, FALLBACK_LEARNING_RATE)
    if data_args.icl_warmup_steps is None:
        fresh_lm = train_args.objective == "causal_lm" and model_args.model_name_or_path is None
        data_args.icl_warmup_steps = DEFAULT_ICL_WARMUP_STEPS if fresh_lm else 0


def validate(model_args: ModelArguments, data_args: DataArguments, train_args: PretrainArguments) -> None:
    """Reject inconsistent settings before anything expensive runs."""
    lm = train_args.objective == "causal_lm"
    if lm and data_args.block_size > model_args.max_position_embeddings and model_args.model_name_or_path is None:
        raise ValueError(
            f"block_size ({data_args.block_size}) is larger than max_position_embeddings "
            f"({model_args.max_position_embeddings}): lower --block_size or raise --max_position_embeddings."
        )
    if train_args.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"--mixed_precision must be 'no', 'bf16' or 'fp16', got {train_args.mixed_precision!r}.")
    if train_args.max_steps <= 0 and train_args.num_epochs <= 0:
        raise ValueError("Set --max_steps > 0 or --num_epochs > 0.")
    if data_args.icl_warmup_steps and not lm:
        raise ValueError("--icl_warmup_steps applies to --objective causal_lm only.")
    if data_args.icl_warmup_steps and data_args.icl_warmup_steps < 0:
        raise ValueError(f"--icl_warmup_steps must be >= 0, got {data_args.icl_warmup_steps}.")
    if not 0.0 <= data_args.icl_mix_fraction < 1.0:
        raise ValueError(f"--icl_mix_fraction must be in [0, 1), got {data_args.icl_mix_fraction}.")
    if data_args.icl_warmup_steps and not 0 < data_args.icl_warmup_block_size <= data_args.block_size:
        raise ValueError(
            f"--icl_warmup_block_size must be in [1, block_size={data_args.block_size}], "
            f"got {data_args.icl_warmup_block_size}."
        )
    if not 0.0 <= data_args.eval_split_fraction < 1.0:
        raise ValueError(f"--eval_split_fraction must be in [0, 1), got {data_args.eval_split_fraction}.")
    if data_args.text_sample_by not in ("line", "paragraph", "document"):
        raise ValueError(f"--text_sample_by must be line, paragraph or document, got {data_args.text_sample_by!r}.")
