"""What the text objectives share: corpus and tokenizer settings, the training / held-out documents, the tokenizer.

The tokenizer a run trains is stored with the run's working files (`output_dir/.hfssl/tokenizer/`), not beside a
model: a run that fails early leaves a saved model in --output_dir untouched, and a resumed run reads the same
tokenizer back (its token ids must not change). The final save writes it beside the model.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from accelerate import Accelerator

from ..data.text import iter_texts, load_text_dataset, load_tokenizer
from ..models.helpers import context_window
from ..run.arguments import require_choice, require_fraction, require_positive
from ..run.errors import InputError

TOKENIZER_DIR = Path(".hfssl") / "tokenizer"  # inside --output_dir: the run's working files


@dataclass(kw_only=True)
class TextCorpusArguments:
    """Corpus and tokenizer settings of the text objectives (mixed into their arguments classes)."""

    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Use this tokenizer (folder or Hub id) instead of training one on the corpus."},
    )
    vocab_size: int = field(default=1024, metadata={"help": "Vocabulary size when training a tokenizer."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    text_sample_by: str = field(
        default="paragraph",
        metadata={"help": "For .txt files, one document is a 'line', a 'paragraph' or the whole 'document'."},
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per training sequence (packed across documents)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def check_corpus_arguments(self) -> None:
        require_positive(self, "vocab_size", "block_size", "preprocessing_num_workers")
        require_choice(self, "text_sample_by", ("line", "paragraph", "document"))


@dataclass(kw_only=True)
class TextModelShapeArguments:
    """The shape of a fresh text model (ignored with --model_name_or_path, which keeps its own), shared by the text
    objectives so that a GPT and a BERT of one size are one set of flags."""

    # a 2 x 128 model trained for more steps beat 4 x 256 in the same CPU minutes, and a 1024-token output layer is
    # ~3.5x cheaper per step than 4096 at this width
    hidden_size: int = field(default=128, metadata={"help": "Model width d."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads (must divide hidden_size)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width (default 4 * hidden_size)."})
    max_position_embeddings: int = field(default=256, metadata={"help": "Positions (context window) of a fresh model."})
    dropout: float = field(
        default=0.0, metadata={"help": "Dropout on embeddings, residuals and attention (0 is best for short runs)."}
    )
    if TYPE_CHECKING:  # fields of the classes this is mixed with (TextCorpusArguments, ModelSourceArguments)
        block_size: int
        model_name_or_path: str | None

    def check_model_shape(self) -> None:
        require_positive(
            self,
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        )
        require_fraction(self, "dropout")
        if self.hidden_size % self.num_attention_heads:
            raise InputError(
                f"--num_attention_heads ({self.num_attention_heads}) must divide --hidden_size ({self.hidden_size})."
            )
        if self.block_size > self.max_position_embeddings and self.model_name_or_path is None:
            raise InputError(
                f"block_size ({self.block_size}) is longer than max_position_embeddings "
                f"({self.max_position_embeddings}): lower --block_size or raise --max_position_embeddings."
            )


def check_fits_pretrained(args, model, tokenizer) -> None:
    """ValueError unless --block_size fits the loaded model's positions and the tokenizer its vocabulary."""
    window = context_window(model)
    if window is not None and args.block_size > window:
        raise InputError(
            f"block_size ({args.block_size}) is longer than the {window} positions of {args.model_name_or_path}: "
            "lower --block_size."
        )
    if len(tokenizer) > model.config.vocab_size:
        raise InputError(
            f"The tokenizer has {len(tokenizer)} tokens but {args.model_name_or_path} has vocab_size "
            f"{model.config.vocab_size}: use the model's own tokenizer."
        )


def split_held_out(docs: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training documents, held-out documents) as a run without --eval_dataset splits its corpus."""
    split = docs.train_test_split(test_size=fraction, seed=seed)
    return split["train"], split["test"]


def load_corpus(args, spec: str | None) -> datasets.Dataset:
    return load_text_dataset(
        spec,
        config_name=args.dataset_config_name,
        split=args.dataset_split,
        text_column=args.text_column,
        sample_by=args.text_sample_by,
    )


def training_and_held_out_documents(args, accelerator: Accelerator):
    """(training documents, held-out documents or None): --eval_dataset, else a seeded held-out part of --dataset."""
    with accelerator.main_process_first():  # the main process fills the datasets cache first
        train_docs = load_corpus(args, args.dataset)
        if args.eval_dataset:
            return train_docs, load_corpus(args, args.eval_dataset)
        if args.eval_split_fraction > 0 and len(train_docs) >= 2:
            return split_held_out(train_docs, args.eval_split_fraction, args.seed)
        return train_docs, None


def run_tokenizer(
    args, train_docs: datasets.Dataset, accelerator: Accelerator, resuming: bool, train_new, load=load_tokenizer
):
    """The run's tokenizer: its own when resuming, else --tokenizer_name_or_path / the model's, else a new one.

    train_new(texts, vocab_size) trains a new tokenizer; load(name) loads and checks an existing one. The main
    process decides and stores it under TOKENIZER_DIR; the other processes load that, so every process has the same
    token ids.
    """
    own = Path(args.output_dir) / TOKENIZER_DIR
    if accelerator.is_main_process:
        if resuming and (own / "tokenizer.json").is_file():
            tokenizer = load(str(own))
        elif resuming and (Path(args.output_dir) / "tokenizer.json").is_file():  # runs saved before TOKENIZER_DIR
            tokenizer = load(args.output_dir)
        elif args.tokenizer_name_or_path:
            tokenizer = load(args.tokenizer_name_or_path)
        elif args.model_name_or_path:
            tokenizer = load(args.source)
        else:
            tokenizer = train_new(iter_texts(train_docs), args.vocab_size)
        own.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(own)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        tokenizer = load(str(own))
    return tokenizer


def pack_training_and_held_out(args, accelerator: Accelerator, train_docs, eval_docs, pack):
    """(training blocks, held-out blocks or None), each packed by the objective's `pack(docs)`; the held-out blocks
    are cut to --max_eval_samples. The main process fills the datasets cache first."""
    with accelerator.main_process_first():
        train_blocks = pack(train_docs)
        eval_blocks = None
        if eval_docs is not None:
            eval_blocks = pack(eval_docs)
            if args.max_eval_samples is not None and len(eval_blocks) > args.max_eval_samples:
                eval_blocks = eval_blocks.select(range(args.max_eval_samples))
    return train_blocks, eval_blocks
