"""The masked language-modelling objective (BERT): predict masked tokens from the context on both sides.

    loss = 1/B sum_b 1/|M_b| sum_{t in M_b} -log p_theta(x_{b,t} | x~_b),

M_b the positions masked in block b (BERT's 15%, 80/10/10 recipe, at least one per block: `hfssl.training.masking`)
and x~_b the block after masking; only masked positions add to the loss. A per-block mean (rather than one mean over
the batch's masked tokens) makes the loss of a global batch the same however it is split over processes.
Evaluation: masked-token loss and accuracy over every held-out masked token (one fixed draw of masks), and at the end
the pseudo-perplexity of a few held-out blocks (`hfssl.training.pseudo_log_likelihood`).

The model is transformers' `BertForMaskedLM` (fresh) or any `AutoModelForMaskedLM` encoder (`--model_name_or_path`,
continued pretraining: task- and domain-adaptive pretraining, Gururangan et al. 2020). Why BERT and not a model of our
own or ModernBERT: the reference encoder MiniLM is a BERT, so from-scratch and continued runs share one class and
every adaptation path (sequence classification, peft's default LoRA targets, pipelines) already knows it; BERT runs
SDPA attention on CPU; ModernBERT's gains (rotary positions, unpadding, 8k context) pay off for long sequences on
GPUs, not for 128-token blocks on CPU. A custom class would buy nothing we could measure.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import datasets
import torch
from accelerate import Accelerator
from torch import nn
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

from ..data.encoder_text import check_encoder_tokenizer, pack_encoder_blocks, train_encoder_tokenizer
from ..models.kinds import require_encoder
from ..models.loading import load_config, load_pretrained, load_tokenizer
from ..run.arguments import require_fraction, require_non_negative
from .arguments import PretrainArguments
from .masking import EVAL_EPOCH, MaskingCollator
from .objectives import Objective, PretrainingSetup
from .pseudo_log_likelihood import pseudo_perplexity
from .text_corpus import (
    TextCorpusArguments,
    TextModelShapeArguments,
    check_fits_pretrained,
    pack_training_and_held_out,
    run_tokenizer,
    training_and_held_out_documents,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class MaskedLMArguments(TextModelShapeArguments, TextCorpusArguments, PretrainArguments):
    """`--objective masked_lm`: a BERT on text, fresh or continued (`--model_name_or_path`)."""

    RESUME_SAFE: ClassVar[frozenset] = PretrainArguments.RESUME_SAFE | {"pll_samples"}
    objective: str = field(default="masked_lm", metadata={"help": "This objective: masked_lm."})
    output_dir: str = field(default="outputs/bert-mlm", metadata={"help": "Where checkpoints and the model go."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training text: a local .txt/.jsonl/.json/.csv/.tsv/.parquet file or folder, a Hub dataset name, "
            "or the built-in 'stdlib_docstrings' (the default)."
        },
    )
    max_steps: int = field(default=2000, metadata={"help": "Optimizer steps (overrides --num_train_epochs when > 0)."})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Peak AdamW learning rate (1e-3 for a fresh small model; ~5e-5 to continue)."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens chosen for prediction, in (0, 1)."})
    whole_word_mask: bool = field(
        default=False, metadata={"help": "Choose whole words (all of their tokens) instead of single tokens."}
    )
    pll_samples: int = field(
        default=8, metadata={"help": "Held-out blocks scored by pseudo-log-likelihood at the end (0: none)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_corpus_arguments()
        self.check_model_shape()
        require_non_negative(self, "pll_samples")
        require_fraction(self, "mlm_probability", low_open=True)


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The module docstring's loss: logits (B, T, V), labels (B, T) with -100 where nothing is predicted -> scalar."""
    per_token = nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100, reduction="none")
    counts = (labels != -100).sum(dim=1).clamp_min(1)  # (B,); the masking gives every block at least one
    return (per_token.sum(dim=1) / counts).mean()


class MaskedLMObjective(Objective):
    name = "masked_lm"
    arguments_class = MaskedLMArguments
    task = "fill-mask"

    def __init__(self, args: MaskedLMArguments):
        super().__init__(args)
        self.tokenizer: Any = None  # set by setup(), like the two below
        self.pll_blocks: datasets.Dataset | None = None
        self.collator: MaskingCollator | None = None

    # ---- setup -------------------------------------------------------------------------------------
    @staticmethod
    def _train_tokenizer(texts, vocab_size: int):
        logger.info("Training a byte-level BPE tokenizer with [CLS] [SEP] [MASK] [PAD] (vocab %d)", vocab_size)
        return train_encoder_tokenizer(texts, vocab_size=vocab_size)

    @staticmethod
    def _load_tokenizer(source):
        tokenizer = load_tokenizer(source)
        check_encoder_tokenizer(tokenizer, str(source))
        return tokenizer

    def _model(self, tokenizer) -> nn.Module:
        m = self.args
        if m.model_name_or_path:
            model = load_pretrained(AutoModelForMaskedLM, m.source, new_head="language_modelling")
            check_fits_pretrained(m, model, tokenizer)
            return model
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=m.hidden_size,
            num_hidden_layers=m.num_hidden_layers,
            num_attention_heads=m.num_attention_heads,
            intermediate_size=m.intermediate_size or 4 * m.hidden_size,
            max_position_embeddings=m.max_position_embeddings,
            hidden_dropout_prob=m.dropout,
            attention_probs_dropout_prob=m.dropout,
            pad_token_id=tokenizer.pad_token_id,
        )
        return BertForMaskedLM(config)

    def setup(self, accelerator: Accelerator, resuming: bool = False) -> PretrainingSetup:
        d = t = self.args
        if d.model_name_or_path:  # before its tokenizer: a decoder's has no mask token
            require_encoder(load_config(d.source), d.model_name_or_path)
        train_docs, eval_docs = training_and_held_out_documents(d, accelerator)
        tokenizer = run_tokenizer(
            d, train_docs, accelerator, resuming, self._train_tokenizer, load=self._load_tokenizer
        )
        self.tokenizer = tokenizer
        model = self._model(tokenizer)
        train_blocks, eval_blocks = pack_training_and_held_out(
            t,
            accelerator,
            train_docs,
            eval_docs,
            lambda docs: pack_encoder_blocks(docs, tokenizer, d.block_size, d.preprocessing_num_workers),
        )
        if eval_blocks is not None and d.pll_samples:
            self.pll_blocks = eval_blocks.select(range(min(d.pll_samples, len(eval_blocks))))
        logger.info("Corpus: %d training blocks of %d tokens ([CLS] ... [SEP])", len(train_blocks), d.block_size)
        masking = dict(whole_word_mask=d.whole_word_mask)
        self.collator = MaskingCollator(tokenizer, d.mlm_probability, t.seed, **masking)
        return PretrainingSetup(
            model,
            train_blocks,
            eval_blocks,
            self.collator,
            companions=[tokenizer],
            eval_collate_fn=MaskingCollator(tokenizer, d.mlm_probability, t.seed, epoch=EVAL_EPOCH, **masking),
        )

    # ---- steps -------------------------------------------------------------------------------------
    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_token_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"])

    def items_in_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_loader, accelerator: Accelerator) -> dict[str, float]:
        """Loss and accuracy over every held-out masked token: sum of -log p / count, correct argmax / count."""
        model.eval()
        totals = torch.zeros(3, dtype=torch.float64)
        for batch in eval_loader:
            labels = batch["labels"]  # (B, T)
            logits = model(input_ids=batch["input_ids"]).logits.float()  # (B, T, V)
            chosen = labels != -100
            losses = nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
            correct = (logits.argmax(dim=-1) == labels) & chosen
            per_block = torch.stack([losses.sum(1), correct.sum(1).float(), chosen.sum(1).float()], dim=1)  # (B, 3)
            totals += accelerator.gather_for_metrics(per_block).double().sum(dim=0).cpu()
        model.train()
        count = max(totals[2].item(), 1.0)
        return {"eval_loss": totals[0].item() / count, "eval_masked_accuracy": totals[1].item() / count}

    # ---- end of run --------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        assert self.collator is not None, "setup() runs first"
        self.collator.set_epoch(epoch)  # new masks for each pass over the data

    def closing_metrics(self, model: nn.Module, accelerator: Accelerator) -> dict[str, float]:
        """Pseudo-perplexity of `--pll_samples` held-out blocks (main process)."""
        if self.pll_blocks is None:
            return {}
        return pseudo_perplexity(model, self.pll_blocks, self.tokenizer.mask_token_id)

    @torch.no_grad()
    def finish(self, model: nn.Module, output_dir: Path, accelerator: Accelerator) -> str:
        """A fill-mask example: a word of a held-out (else training) block masked, the model's top 5 tokens."""
        tokenizer = self.tokenizer
        block = self.pll_blocks[0] if self.pll_blocks is not None and len(self.pll_blocks) else None
        if block is None:
            return ""
        ids, special = torch.tensor(block["input_ids"]), torch.tensor(block["special_tokens_mask"]).bool()
        starts = (torch.tensor(block["word_starts"]).bool() & ~special).nonzero().flatten()
        position = int(starts[len(starts) // 2]) if len(starts) else 1
        window = ids[max(1, position - 12) : position + 13].clone()
        at = position - max(1, position - 12)
        answer = tokenizer.convert_ids_to_tokens(int(window[at]))
        window[at] = tokenizer.mask_token_id
        model.eval()
        device = cast("PreTrainedModel", model).device  # a transformers masked LM
        logits = model(input_ids=window[None].to(device)).logits[0, at]
        top = tokenizer.convert_ids_to_tokens(logits.topk(5).indices.tolist())
        return (
            f"Fill-mask on held-out text: {tokenizer.decode(window)}\n"
            f"top 5: {', '.join(top)} (the masked token was {answer!r})"
        )
