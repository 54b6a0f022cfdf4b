"""The causal language-modelling objective: next-token prediction on packed blocks of text.

loss = -1/N sum_{b,t} log p_theta(x_{b,t+1} | x_{b,<=t}), N = B (T - 1) predicted tokens per batch.

With `--icl_warmup_steps` > 0 (the default for a fresh model) the run first trains on synthetic key -> value
documents (`hfssl.data.synthetic`), whose values only copying from the context predicts, and then keeps
`--icl_mix_fraction` of them in the corpus: the in-context warm-up.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import datasets
import torch
from accelerate import Accelerator
from torch import nn
from transformers import AutoModelForCausalLM

from ..analysis.probe import InductionProbe
from ..data import synthetic
from ..data.text import pack_into_blocks, train_bpe_tokenizer
from ..models.gpt import GPTConfig, GPTForCausalLM
from ..models.helpers import context_window
from ..models.kinds import require_decoder
from ..models.loading import load_config, load_pretrained
from ..run.arguments import require_fraction, require_non_negative, require_positive
from ..run.errors import InputError
from ..run.output import DEFAULT_OUTPUT_DIR
from .arguments import PretrainArguments
from .objectives import Objective, PretrainingSetup, WarmupPhase
from .text_corpus import (
    TextCorpusArguments,
    TextModelShapeArguments,
    check_fits_pretrained,
    pack_training_and_held_out,
    run_tokenizer,
    training_and_held_out_documents,
)

if TYPE_CHECKING:
    from transformers import GenerationMixin

logger = logging.getLogger(__name__)

SAMPLE_OPENING_WORDS = 3
# in-context warm-up steps of a fresh causal LM when neither --icl_warmup_steps nor --icl_warmup_ratio is given, at most
# half of --max_steps: 2,500 of the main command's 5,000 (docs/pretraining-causal-lm.md, "In-context warm-up"); a model
# loaded with --model_name_or_path gets none
DEFAULT_ICL_WARMUP_STEPS = 2500
PROBE_BLOCKS = 16  # held-out blocks of --analysis_steps' in-context learning score


@dataclass(kw_only=True)
class CausalLMArguments(TextModelShapeArguments, TextCorpusArguments, PretrainArguments):
    """`--objective causal_lm`: a GPT on text. The defaults are the README's main command."""

    objective: str = field(default="causal_lm", metadata={"help": "This objective: causal_lm."})
    output_dir: str = field(default=DEFAULT_OUTPUT_DIR, metadata={"help": "Where checkpoints and the model go."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training text: a local .txt/.jsonl/.json/.csv/.tsv/.parquet file or folder, a Hub dataset name, "
            "or the built-in 'stdlib_docstrings' (Python standard-library docstrings, the default)."
        },
    )
    max_steps: int = field(
        default=5000,
        metadata={
            "help": "Optimizer steps of the whole run, the in-context warm-up included (overrides --num_train_epochs "
            "when > 0; with --max_steps 0 the warm-up's --icl_warmup_steps come before the epochs)."
        },
    )
    learning_rate: float = field(
        default=1e-3,
        metadata={
            "help": "Peak AdamW learning rate (3e-3 delayed the in-context warm-up's copying in a probe run; "
            "small models tolerate 1e-3..3e-3)."
        },
    )
    icl_warmup_steps: int | None = field(
        default=None,
        metadata={
            "help": "The first N of --max_steps train on synthetic key -> value documents (hfssl.data.synthetic), so "
            "the model learns to copy from its context (induction heads); the rest train on the corpus. Default "
            f"for a fresh model: {DEFAULT_ICL_WARMUP_STEPS}, at most half of --max_steps; 0 with --model_name_or_path "
            "or to turn the warm-up off. Overrides --icl_warmup_ratio."
        },
    )
    icl_warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "The in-context warm-up as a share of --max_steps instead (like --warmup_ratio)."},
    )
    icl_warmup_block_size: int = field(
        default=64,
        metadata={"help": "Tokens per warm-up sequence; warm-up batches hold as many tokens as corpus batches."},
    )
    icl_mix_fraction: float = field(
        default=0.1,
        metadata={
            "help": "After a warm-up, this fraction of the corpus's characters is synthetic documents too: without "
            "them the copying is forgotten (docs/pretraining-causal-lm.md, 'In-context warm-up')."
        },
    )
    sample_prompt: str = field(
        default="",
        metadata={"help": "Prompt for the sample printed at the end (default: a held-out document's first 3 words)."},
    )
    sample_max_new_tokens: int = field(default=80, metadata={"help": "Length of the sample printed at the end."})
    analysis_steps: int = field(
        default=0,
        metadata={
            "help": "Every N optimizer steps (and before the first, and at the last), log the best head's "
            "prefix-matching score, the loss on repeated random tokens and the in-context learning score on held-out "
            "blocks (hfssl.analysis.probe; docs/induction-heads.md): the phase change of induction heads, as it "
            "happens. 0: off."
        },
    )
    analysis_length: int | None = field(
        default=None,
        metadata={
            "help": "Tokens the --analysis_steps probe reads per sequence (its late position; two copies of "
            "(N - 1) // 2 random tokens, at most 32). Default: the shortest block the run trains on (--block_size, "
            "or --icl_warmup_block_size during an in-context warm-up), so every position it reads is trained."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_corpus_arguments()
        self.check_model_shape()
        require_positive(self, "sample_max_new_tokens")
        require_non_negative(self, "analysis_steps")
        require_positive(self, "analysis_length")
        require_non_negative(self, "icl_warmup_steps")
        if self.icl_warmup_ratio is not None:
            require_fraction(self, "icl_warmup_ratio")
        require_fraction(self, "icl_mix_fraction")
        self._resolve_icl_warmup()
        if self.icl_warmup_steps and not 0 < self.icl_warmup_block_size <= self.block_size:
            raise InputError(
                f"--icl_warmup_block_size must be in [1, block_size={self.block_size}], "
                f"got {self.icl_warmup_block_size}."
            )

    def _resolve_icl_warmup(self) -> None:
        """`icl_warmup_steps` when it is not given: the ratio's share of --max_steps, or the default count (at most
        half of --max_steps, so a short run is half warm-up; a resumed run with more steps keeps its count). The
        warm-up must leave the corpus a step."""
        if self.icl_warmup_ratio is not None and self.icl_warmup_steps is None:
            if self.max_steps == 0:
                raise InputError(
                    "--icl_warmup_ratio is a share of --max_steps, which is 0 (training by --num_train_epochs): give "
                    "the warm-up as --icl_warmup_steps instead."
                )
            self.icl_warmup_steps = round(self.icl_warmup_ratio * self.max_steps)
        if self.icl_warmup_steps is None:
            fresh = 0 if self.model_name_or_path else DEFAULT_ICL_WARMUP_STEPS
            self.icl_warmup_steps = min(fresh, self.max_steps // 2) if self.max_steps > 0 else fresh
        if self.max_steps > 0 and self.icl_warmup_steps >= self.max_steps:
            raise InputError(
                f"--icl_warmup_steps {self.icl_warmup_steps} leaves no step of --max_steps {self.max_steps} for the "
                "corpus: --max_steps counts the whole run, the warm-up included. Raise it or lower the warm-up."
            )


def _collate_blocks(examples: list[dict]) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([ex["input_ids"] for ex in examples], dtype=torch.long)  # (B, T)
    return {"input_ids": input_ids}


class CausalLMObjective(Objective):
    name = "causal_lm"
    arguments_class = CausalLMArguments
    task = "text-generation"

    def __init__(self, args: CausalLMArguments):
        super().__init__(args)
        self.tokenizer: Any = None  # set by setup()
        self.sample_prompt = ""
        self.probe: InductionProbe | None = None  # set by setup() with --analysis_steps

    # ---- setup -------------------------------------------------------------------------------------
    @staticmethod
    def _train_tokenizer(texts, vocab_size: int):
        logger.info("Training a byte-level BPE tokenizer (vocab %d)", vocab_size)
        return train_bpe_tokenizer(texts, vocab_size=vocab_size)

    def _icl_warmup(self, tokenizer, num_processes: int) -> WarmupPhase:
        """Blocks of synthetic key -> value documents for exactly `icl_warmup_steps` optimizer steps.

        A warm-up batch holds as many tokens as a corpus batch: per-device batch x block_size / warm-up block.
        The documents depend only on the seed, so every process (and a resumed run) builds the same blocks.
        """
        d = t = self.args
        block = d.icl_warmup_block_size
        per_device = max(1, t.per_device_train_batch_size * d.block_size // block)
        needed = d.icl_warmup_steps * t.gradient_accumulation_steps * per_device * num_processes
        sample = list(synthetic.key_value_documents(64, seed=t.seed)["text"])
        tokens_per_doc = sum(len(ids) + 1 for ids in tokenizer(sample, add_special_tokens=False)["input_ids"]) / 64
        num_docs = math.ceil(needed * block / tokens_per_doc * 1.02) + 64
        while True:
            blocks = pack_into_blocks(synthetic.key_value_documents(num_docs, seed=t.seed), tokenizer, block)
            if len(blocks) >= needed:
                break
            num_docs = math.ceil(num_docs * 1.1)
        logger.info(
            "In-context warm-up: %d steps on %d blocks of %d tokens of key -> value documents",
            d.icl_warmup_steps,
            needed,
            block,
        )
        return WarmupPhase(blocks.select(range(needed)), d.icl_warmup_steps, per_device, name="in-context warm-up")

    def _mix_in_key_value(self, train_docs: datasets.Dataset) -> datasets.Dataset:
        """The corpus plus synthetic documents making up `icl_mix_fraction` of the characters."""
        fraction = self.args.icl_mix_fraction
        corpus_chars = sum(len(text) for text in train_docs["text"])
        mixed_in = synthetic.documents_for_chars(
            int(corpus_chars * fraction / (1 - fraction)), seed=self.args.seed + 1_000_003
        )  # not the warm-up's docs
        logger.info(
            "Mixing %d key -> value documents into the corpus (%.0f%% of its characters)", len(mixed_in), 100 * fraction
        )
        return datasets.concatenate_datasets([train_docs.select_columns(["text"]), mixed_in])

    def _model(self, tokenizer) -> nn.Module:
        m = self.args
        if m.model_name_or_path:
            model = load_pretrained(AutoModelForCausalLM, m.source)
            check_fits_pretrained(m, model, tokenizer)
            return model
        config = GPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=m.hidden_size,
            num_hidden_layers=m.num_hidden_layers,
            num_attention_heads=m.num_attention_heads,
            intermediate_size=m.intermediate_size,
            max_position_embeddings=m.max_position_embeddings,
            embd_pdrop=m.dropout,
            resid_pdrop=m.dropout,
            attn_pdrop=m.dropout,
            bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return GPTForCausalLM(config)

    def setup(self, accelerator: Accelerator, resuming: bool = False) -> PretrainingSetup:
        d = t = self.args
        if d.model_name_or_path:  # before its tokenizer: an encoder's has no end-of-text token to pack with
            require_decoder(load_config(d.source), d.model_name_or_path)
        train_docs, eval_docs = training_and_held_out_documents(d, accelerator)
        tokenizer = run_tokenizer(d, train_docs, accelerator, resuming, self._train_tokenizer)
        self.tokenizer = tokenizer
        # without --sample_prompt the closing sample continues a corpus document's opening words: from the
        # end-of-text token alone, a run with mixed-in key -> value documents often samples one of those
        opening_doc = (eval_docs if eval_docs is not None and len(eval_docs) else train_docs)[0]["text"]
        self.sample_prompt = t.sample_prompt or " ".join(opening_doc.split()[:SAMPLE_OPENING_WORDS])
        warmup = None
        if d.icl_warmup_steps:
            warmup = self._icl_warmup(tokenizer, accelerator.num_processes)
            if d.icl_mix_fraction > 0:
                train_docs = self._mix_in_key_value(train_docs)
        train_blocks, eval_blocks = pack_training_and_held_out(
            t,
            accelerator,
            train_docs,
            eval_docs,
            lambda docs: pack_into_blocks(docs, tokenizer, d.block_size, d.preprocessing_num_workers),
        )
        logger.info(
            "Corpus: %d training blocks of %d tokens (%d tokens)",
            len(train_blocks),
            d.block_size,
            len(train_blocks) * d.block_size,
        )
        model = self._model(tokenizer)
        if d.analysis_steps:
            probe_blocks = None
            if eval_blocks is not None:
                probe_blocks = eval_blocks.select(range(min(PROBE_BLOCKS, len(eval_blocks))))["input_ids"]
            self.probe = InductionProbe.for_blocks(model, tokenizer, self._analysis_length(), probe_blocks)
        return PretrainingSetup(
            model, train_blocks, eval_blocks, _collate_blocks, companions=[tokenizer], warmup=warmup
        )

    # ---- steps -------------------------------------------------------------------------------------
    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], labels=batch["input_ids"], use_cache=False).loss

    def items_in_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].numel()

    def _analysis_length(self) -> int:
        """--analysis_length, else the shortest block the run trains on (a warm-up's blocks may be shorter)."""
        d = self.args
        if d.analysis_length is not None:
            if d.analysis_length > d.block_size:
                raise InputError(
                    f"--analysis_length {d.analysis_length} is longer than the held-out blocks (--block_size "
                    f"{d.block_size})."
                )
            return d.analysis_length
        return min(d.block_size, d.icl_warmup_block_size) if d.icl_warmup_steps else d.block_size

    def step_metrics(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        """With --analysis_steps N: the induction probe's scores at step 0, every N steps and at the last."""
        if self.probe is None or not (final or step % self.args.analysis_steps == 0):
            return {}
        return self.probe.measure(model)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_loader, accelerator: Accelerator) -> dict[str, float]:
        """Mean next-token loss over all held-out blocks, and perplexity = exp(loss)."""
        model.eval()
        total, count = 0.0, 0
        for batch in eval_loader:
            input_ids = batch["input_ids"]
            logits = model(input_ids=input_ids, use_cache=False).logits.float()  # (B, T, V)
            per_token = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
            ).view(input_ids.shape[0], -1)
            per_block = accelerator.gather_for_metrics(per_token.mean(dim=1))  # (B_global,)
            total += per_block.sum().item()
            count += per_block.numel()
        model.train()
        loss = total / max(count, 1)
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0))}

    # ---- end of run --------------------------------------------------------------------------------
    def finish(self, model: nn.Module, output_dir: Path, accelerator: Accelerator) -> str:
        """'Sample:' and a sample from the trained model (top-k sampling, seeded)."""
        t, tokenizer = self.args, self.tokenizer
        model.eval()
        prompt_ids = tokenizer(self.sample_prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = torch.tensor([[tokenizer.eos_token_id]])  # documents follow an end-of-text token in training
        input_ids = torch.cat([start, prompt_ids], dim=1).to(accelerator.device)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(t.seed)
        context = context_window(model) or 1024
        input_ids = input_ids[:, -(context - 1) :]  # keep room for at least one new token
        output = cast("GenerationMixin", model).generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=min(t.sample_max_new_tokens, context - input_ids.shape[1]),
            do_sample=True,
            top_k=40,
            temperature=0.8,
            pad_token_id=tokenizer.pad_token_id,
            # run on across document boundaries (shown as blank lines): stop only on the pad token, which
            # is never a training target, so the sample has the requested length
            eos_token_id=tokenizer.pad_token_id,
        )
        torch.random.set_rng_state(generator_state)
        text = tokenizer.decode(output[0, 1:], skip_special_tokens=False)
        return "Sample:\n" + text.replace(tokenizer.pad_token, "").replace(tokenizer.eos_token, "\n\n").strip()
