"""Zero-shot and in-context (k-shot) classification with any causal LM: no gradient step.

`PromptClassifier` turns labelled queries into prompts (`prompts.py`), scores every label option by its
log-likelihood (`loglikelihood.py`, lm-evaluation-harness definitions, shared-prefix KV cache) or by
generating and parsing an answer, and optionally applies contextual calibration (`calibration.py`).
The shots x seeds sweep of `scripts/prompt_eval.py` is `prompt_eval.py`.
"""

import inspect
import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from transformers.cache_utils import Cache

from ..models.helpers import cache_kwargs, context_window, ensure_pad_token, output_cache
from ..run.errors import InputError
from .calibration import CONTENT_FREE_INPUTS, contextual_calibration, label_probabilities
from .chain_of_thought import cut_chain
from .loglikelihood import encode, loglikelihoods
from .prompts import PromptTemplate, label_options

if TYPE_CHECKING:
    from transformers import GenerationMixin

logger = logging.getLogger(__name__)


@dataclass
class PromptScores:
    """Per-query results. loglik: (N, C) summed option log-likelihoods; probs/calibrated: (N, C)."""

    loglik: torch.Tensor
    probs: torch.Tensor
    calibrated: torch.Tensor | None
    num_demonstrations: list[int]  # demonstrations each query's prompt kept after fitting the context window


@dataclass
class Generations:
    """texts[i][j]: the j-th continuation of prompt i (cut before a stop string); num_tokens[i][j]: the tokens the
    model generated for it, up to where it stopped."""

    texts: list[list[str]]
    num_tokens: list[list[int]]


def _length_before_padding(row: torch.Tensor, tokenizer) -> int:
    """Tokens of a generated row before the padding that fills it once its sequence has finished."""
    padding = (row == tokenizer.pad_token_id).flip(0).cumprod(0).sum().item()
    return len(row) - int(padding)


@torch.no_grad()
def _prompts_encoded_once(model: nn.Module, batch, copies: int) -> dict | None:
    """generate() inputs for `copies` samples of each of the B left-padded prompts of `batch`, with each prompt run
    through the model once instead of `copies` times (num_return_sequences repeats the prompt before encoding it);
    None where that cannot be done (a model that returns no transformers Cache, or one whose generation config asks
    generate() for a cache of its own), and the prompt is then repeated as generate() repeats it.

    The KV cache of every prompt's tokens but its last (generation feeds that one, to predict the first new token)
    is computed for the B prompts, then its rows repeated in place: B * copies rows, in the order in which
    num_return_sequences would repeat them, so a seeded sampler draws the same tokens. Positions count only real
    tokens, as generate() counts them for left padding.
    """
    if getattr(getattr(model, "generation_config", None), "cache_implementation", None):
        return None
    ids, mask = batch["input_ids"], batch["attention_mask"]
    get_base = getattr(model, "get_base_model", None)  # a peft model: the model whose forward generate() runs
    accepted = inspect.signature((get_base() if callable(get_base) else model).forward).parameters
    extra: dict = (
        {"position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)[:, :-1]} if "position_ids" in accepted else {}
    )
    if "logits_to_keep" in accepted:
        extra["logits_to_keep"] = 1  # the prompt's logits are not needed
    outputs = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True, **extra)
    cache = output_cache(outputs) if hasattr(outputs, "get") else None  # a tuple: return_dict=False
    if not isinstance(cache, Cache):
        return None
    cache.batch_repeat_interleave(copies)
    return {
        "input_ids": ids.repeat_interleave(copies, dim=0),
        "attention_mask": mask.repeat_interleave(copies, dim=0),
        **cache_kwargs(cache),
    }


END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")


def stop_token_ids(tokenizer) -> list[int]:
    """Where generation stops: the end-of-text token and the end-of-turn tokens of common chat templates (ChatML's
    <|im_end|>, Llama 3's <|eot_id|>, Gemma's <end_of_turn>, ...) that the vocabulary has."""
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(dict.fromkeys(ids + [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]))


class PromptClassifier:
    """A causal LM + tokenizer + template + label names: scores or generates answers for prompted queries."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        template: PromptTemplate,
        label_names: list[str],
        *,
        batch_size: int = 16,
        use_prefix_cache: bool = True,
        chat_template: bool = False,
    ):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.label_names = label_names
        self.chat_template = chat_template
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise InputError("--apply_chat_template: this model's tokenizer has no chat template.")
        self.options = label_options(template, label_names)  # answer word of each label id
        for word in self.options:
            if not word.strip() or not encode(tokenizer, self.continuation(word)):
                raise InputError(f"The label word {word!r} tokenizes to nothing; choose another verbalizer.")
        self.batch_size, self.use_prefix_cache = batch_size, use_prefix_cache
        self.window = context_window(model)
        self._warned = False

    def context(self, demonstrations: list[str], query: str) -> str:
        """The text before the answer. With the chat template (as lm-evaluation-harness' --apply_chat_template), the
        whole k-shot prompt is one user turn and the context ends where the assistant's turn begins."""
        prompt = self.template.context(demonstrations, query)
        if not self.chat_template:
            return prompt
        turn = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)

    def continuation(self, answer_word: str) -> str:
        """The scored answer: after the assistant turn's opening, the word itself (no target delimiter)."""
        return answer_word if self.chat_template else self.template.continuation(answer_word)

    def demonstrations(self, texts: list[str], labels: list[int]) -> list[str]:
        return [self.template.demonstration(t, self.label_names[y]) for t, y in zip(texts, labels)]

    def fit_context(self, demos: list[str], query_texts: list[str]) -> list[str]:
        """Drop demonstrations, farthest from the query first, until every prompt of `query_texts` fits.

        Raises ValueError when even the zero-shot prompt is too long: the query is never truncated.
        """
        if self.window is None:
            return demos
        longest = max(self.options, key=lambda w: len(encode(self.tokenizer, self.continuation(w))))
        for start in range(len(demos) + 1):
            kept = demos[start:]
            lengths = [
                len(encode(self.tokenizer, self.context(kept, q) + self.continuation(longest))) - 1 for q in query_texts
            ]
            if max(lengths) <= self.window:
                if start and not self._warned:
                    logger.warning(
                        "Prompts exceed the %d-token context window: dropping demonstrations (first drop: %d of %d).",
                        self.window,
                        start,
                        len(demos),
                    )
                    self._warned = True
                return kept
        raise InputError(
            f"A query is longer than the model's context window ({self.window} tokens) even with no "
            f"demonstrations: {query_texts[lengths.index(max(lengths))][:80]!r}"
        )

    def _grouped_contexts(self, queries: list[str], demos_per_query: list[list[str]], calibrate: bool):
        """Group queries by demonstration list (one shared prefix each) and fit each group to the window.

        -> list of (query ids, kept demonstrations, texts to prompt: the queries, then the content-free
        inputs when calibrating).
        """
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, demos in enumerate(demos_per_query):
            groups.setdefault(tuple(demos), []).append(i)
        fitted = []
        for shared_demos, members in groups.items():
            texts = [queries[i] for i in members] + (list(CONTENT_FREE_INPUTS) if calibrate else [])
            fitted.append((members, self.fit_context(list(shared_demos), texts), texts))
        return fitted

    def score(self, queries: list[str], demos_per_query: list[list[str]], *, calibrate: bool = False) -> PromptScores:
        """Log-likelihood of every label option for every query, with optional contextual calibration."""
        n, c = len(queries), len(self.options)
        fitted = self._grouped_contexts(queries, demos_per_query, calibrate)
        continuations = [self.continuation(w) for w in self.options]
        requests = [
            [(self.context(kept, t), cont) for t in texts for cont in continuations] for _, kept, texts in fitted
        ]
        scored = loglikelihoods(
            self.model, self.tokenizer, requests, batch_size=self.batch_size, use_prefix_cache=self.use_prefix_cache
        )
        loglik = torch.empty(n, c, dtype=torch.float64)
        content_free = torch.empty(n, len(CONTENT_FREE_INPUTS), c, dtype=torch.float64) if calibrate else None
        kept_counts = [0] * n
        for (members, kept, _), group in zip(fitted, scored):
            values = torch.tensor([ll for ll, _ in group], dtype=torch.float64).view(-1, c)
            loglik[members] = values[: len(members)]
            if content_free is not None:
                content_free[members] = label_probabilities(values[len(members) :]).unsqueeze(0)
            for i in members:
                kept_counts[i] = len(kept)
        probs = label_probabilities(loglik)
        calibrated = contextual_calibration(probs, content_free) if content_free is not None else None
        return PromptScores(loglik, probs, calibrated, kept_counts)

    def generate(
        self, queries: list[str], demos_per_query: list[list[str]], *, max_new_tokens: int = 5
    ) -> tuple[list[str], list[int]]:
        """Greedy continuations and parsed predictions (label id, or -1 when no label word starts the answer)."""
        texts = [row[0] for row in self.sample(queries, demos_per_query, max_new_tokens=max_new_tokens).texts]
        return texts, [self.parse_answer(t) for t in texts]

    @torch.no_grad()
    def sample(
        self,
        queries: list[str],
        demos_per_query: list[list[str]],
        *,
        max_new_tokens: int,
        num_samples: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
        stop_strings: list[str] | tuple[str, ...] = (),
    ) -> "Generations":
        """`num_samples` continuations of every prompt, in left-padded batches of at most `batch_size` sequences.

        temperature 0 decodes greedily (one continuation: num_samples must be 1); above 0 it samples from the
        temperature-scaled distribution, untruncated (top_k 0, top_p 1), with the torch generator seeded by `seed`
        and the caller's random state left as it was. Generation stops at the end-of-text or end-of-turn token, at
        `max_new_tokens` (fewer where the context window ends first), or once a stop string is written; the texts
        are cut before the first stop string.
        """
        if not math.isfinite(temperature) or temperature < 0:  # NaN compares False: it would decode greedily
            raise InputError(f"The temperature must be a finite number >= 0 (0 decodes greedily), got {temperature}.")
        if num_samples > 1 and temperature <= 0:
            raise InputError("Several samples need a temperature > 0: greedy decoding gives one continuation.")
        contexts = [""] * len(queries)
        for members, kept, _ in self._grouped_contexts(queries, demos_per_query, calibrate=False):
            for i in members:
                contexts[i] = self.context(kept, queries[i])
        tokenizer, model = self.tokenizer, self.model
        ensure_pad_token(tokenizer)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        per_batch = max(1, self.batch_size // num_samples)  # prompts per batch: each brings num_samples sequences
        texts: list[str] = []
        counts: list[int] = []
        try:
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                for start in range(0, len(contexts), per_batch):
                    batch_texts, batch_counts = self._generate_batch(
                        contexts[start : start + per_batch], max_new_tokens, num_samples, temperature, stop_strings
                    )
                    texts += batch_texts
                    counts += batch_counts
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
        rows = range(0, len(texts), num_samples)
        return Generations([texts[i : i + num_samples] for i in rows], [counts[i : i + num_samples] for i in rows])

    def _generate_batch(
        self, contexts: list[str], max_new_tokens: int, num_samples: int, temperature: float, stop_strings
    ) -> tuple[list[str], list[int]]:
        """The decoded continuations of one batch (num_samples per context, in context order) and their lengths in
        tokens (the padding after a finished sequence not counted)."""
        tokenizer = self.tokenizer
        batch = tokenizer(
            contexts,
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,  # as scoring encodes: the chat template brings its own
        ).to(next(self.model.parameters()).device)
        prompt_length = batch["input_ids"].shape[1]
        budget = max_new_tokens if self.window is None else min(max_new_tokens, self.window - prompt_length)
        decoding: dict = {"do_sample": False}
        if temperature > 0:
            decoding = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if stop_strings:
            decoding |= {"stop_strings": list(stop_strings), "tokenizer": tokenizer}
        inputs, copies = dict(batch), num_samples
        if num_samples > 1 and prompt_length > 1:  # every sample of a prompt reads one encoding of it, if it can
            encoded = _prompts_encoded_once(self.model, batch, num_samples)
            inputs, copies = (encoded, 1) if encoded is not None else (inputs, copies)
        out = cast("GenerationMixin", self.model).generate(
            **inputs,
            max_new_tokens=max(budget, 1),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_token_ids(tokenizer),
            num_return_sequences=copies,
            **decoding,
        )
        generated = out[:, prompt_length:]
        texts = [cut_chain(t, stop_strings) for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]
        return texts, [_length_before_padding(row, tokenizer) for row in generated]

    def parse_answer(self, generated: str) -> int:
        """The label whose word occurs first in the generated text, case-insensitive: the word a short answer starts
        with, or the one a sentence names first ("The sentiment is positive."); the longest where two start together;
        -1 when none occurs. A label word counts only whole, with no word character touching it on either side: with
        labels no/yes, "nobody knows" names no label while "no." and "No, never" name 'no'."""
        answer = generated.strip().lower()
        words = [w.strip().lower() for w in self.options]
        found = [
            (m.start(), -len(w), i)
            for i, w in enumerate(words)
            if (m := re.search(rf"(?<!\w){re.escape(w)}(?!\w)", answer))
        ]
        return min(found)[2] if found else -1


__all__ = ["Generations", "PromptClassifier", "PromptScores", "stop_token_ids"]
