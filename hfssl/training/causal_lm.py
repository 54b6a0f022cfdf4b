"""The causal language-modelling objective: next-token prediction on packed blocks of text.

loss = -1/N sum_{b,t} log p_theta(x_{b,t+1} | x_{b,<=t}), N = B (T - 1) predicted tokens per batch.

With `--icl_warmup_steps` > 0 (the default for a fresh model) the run first trains on synthetic key -> value
documents (`hfssl.data.synthetic`), whose values only copying from the context predicts, and then keeps
`--icl_mix_fraction` of them in the corpus: the in-context warm-up.
"""

import logging
import math
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from torch import nn
from transformers import AutoModelForCausalLM

from ..data import synthetic
from ..data.text import iter_texts, load_text_dataset, load_tokenizer, pack_into_blocks, train_bpe_tokenizer
from ..models.gpt import GPTConfig, GPTForCausalLM
from .arguments import DataArguments, ModelArguments, PretrainArguments, VisionArguments
from .objectives import PretrainingSetup, WarmupPhase, register_objective

logger = logging.getLogger(__name__)

SAMPLE_OPENING_WORDS = 3


def split_held_out(docs: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training documents, held-out documents) as a run without --eval_dataset splits its corpus."""
    split = docs.train_test_split(test_size=fraction, seed=seed)
    return split["train"], split["test"]


def _collate_blocks(examples: list[dict]) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([ex["input_ids"] for ex in examples], dtype=torch.long)  # (B, T)
    return {"input_ids": input_ids}


@register_objective
class CausalLMObjective:
    name = "causal_lm"

    def __init__(
        self,
        model_args: ModelArguments,
        data_args: DataArguments,
        train_args: PretrainArguments,
        vision_args: VisionArguments | None = None,
    ):
        self.model_args, self.data_args, self.train_args = model_args, data_args, train_args
        self.tokenizer, self.sample_prompt = None, ""

    # ---- setup -------------------------------------------------------------------------------------
    def _load_corpus(self, spec):
        d = self.data_args
        return load_text_dataset(
            spec,
            config_name=d.dataset_config_name,
            split=d.dataset_split,
            text_column=d.text_column,
            sample_by=d.text_sample_by,
        )

    def _tokenizer(self, train_docs, accelerator: Accelerator, resuming: bool):
        """Main process trains (or loads) the tokenizer and saves it to output_dir; the others load that."""
        m, out = self.model_args, Path(self.train_args.output_dir)
        saved = (out / "tokenizer.json").is_file()
        if accelerator.is_main_process:
            if resuming and saved:
                tokenizer = load_tokenizer(str(out))  # the run's own tokenizer: token ids must not change
            elif m.tokenizer_name_or_path or m.model_name_or_path:
                tokenizer = load_tokenizer(m.tokenizer_name_or_path or m.model_name_or_path)
            else:
                logger.info(
                    "Training a byte-level BPE tokenizer (vocab %d) on %d documents", m.vocab_size, len(train_docs)
                )
                tokenizer = train_bpe_tokenizer(iter_texts(train_docs), vocab_size=m.vocab_size)
            out.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(out)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            tokenizer = load_tokenizer(str(out))
        return tokenizer

    def _icl_warmup(self, tokenizer, num_processes: int) -> WarmupPhase:
        """Blocks of synthetic key -> value documents for exactly `icl_warmup_steps` optimizer steps.

        A warm-up batch holds as many tokens as a corpus batch: per-device batch x block_size / warm-up block.
        The documents depend only on the seed, so every process (and a resumed run) builds the same blocks.
        """
        d, t = self.data_args, self.train_args
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
        fraction = self.data_args.icl_mix_fraction
        corpus_chars = sum(len(text) for text in train_docs["text"])
        mixed_in = synthetic.documents_for_chars(
            int(corpus_chars * fraction / (1 - fraction)), seed=self.train_args.seed + 1_000_003
        )  # not the warm-up's docs
        logger.info(
            "Mixing %d key -> value documents into the corpus (%.0f%% of its characters)", len(mixed_in), 100 * fraction
        )
        return datasets.concatenate_datasets([train_docs.select_columns(["text"]), mixed_in])

    def _model(self, tokenizer) -> nn.Module:
        m = self.model_args
        if m.model_name_or_path:
            model = AutoModelForCausalLM.from_pretrained(m.model_name_or_path)
            context = getattr(model.config, "max_position_embeddings", None) or getattr(
                model.config, "n_positions", None
            )
            if context is not None and self.data_args.block_size > context:
                raise ValueError(
                    f"block_size ({self.data_args.block_size}) is larger than the context window of "
                    f"{m.model_name_or_path} ({context}): lower --block_size."
                )
            if len(tokenizer) > model.config.vocab_size:
                raise ValueError(
                    f"The tokenizer has {len(tokenizer)} tokens but {m.model_name_or_path} has vocab_size "
                    f"{model.config.vocab_size}: use the model's own tokenizer."
                )
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
        d, t = self.data_args, self.train_args
        with accelerator.main_process_first():  # the main process fills the datasets cache first
            train_docs = self._load_corpus(d.dataset)
            if d.eval_dataset:
                eval_docs = self._load_corpus(d.eval_dataset)
            elif d.eval_split_fraction > 0 and len(train_docs) >= 2:
                train_docs, eval_docs = split_held_out(train_docs, d.eval_split_fraction, t.seed)
            else:
                eval_docs = None
        tokenizer = self._tokenizer(train_docs, accelerator, resuming)
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
        with accelerator.main_process_first():
            train_blocks = pack_into_blocks(train_docs, tokenizer, d.block_size, d.preprocessing_num_workers)
            eval_blocks = None
            if eval_docs is not None:
                eval_blocks = pack_into_blocks(eval_docs, tokenizer, d.block_size, d.preprocessing_num_workers)
                if t.max_eval_samples is not None and len(eval_blocks) > t.max_eval_samples:
                    eval_blocks = eval_blocks.select(range(t.max_eval_samples))
        logger.info(
            "Corpus: %d training blocks of %d tokens (%d tokens)",
            len(train_blocks),
            d.block_size,
            len(train_blocks) * d.block_size,
        )
        model = self._model(tokenizer)
        return PretrainingSetup(
            model, train_blocks, eval_blocks, _collate_blocks, companions=[tokenizer], warmup=warmup
        )

    # ---- steps -------------------------------------------------------------------------------------
    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], labels=batch["input_ids"], use_cache=False).loss

    def items_in_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].numel()

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
        t, tokenizer = self.train_args, self.tokenizer
        model.eval()
        prompt_ids = tokenizer(self.sample_prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = torch.tensor([[tokenizer.eos_token_id]])  # documents follow an end-of-text token in training
        input_ids = torch.cat([start, prompt_ids], dim=1).to(accelerator.device)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(t.seed)
        context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 1024)
        input_ids = input_ids[:, -(context - 1) :]  # keep room for at least one new token
        output = model.generate(
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
