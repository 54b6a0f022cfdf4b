"""Zero-shot and in-context (k-shot) classification with any causal LM: no gradient step.

`PromptClassifier` turns labelled queries into prompts (`prompts.py`), scores every label option by its
log-likelihood (`loglikelihood.py`, lm-evaluation-harness definitions, shared-prefix KV cache) or by
generating and parsing an answer, and optionally applies contextual calibration (`calibration.py`).
`run_prompt_eval` sweeps shots x seeds for `scripts/prompt_eval.py`.
"""

import json
import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.splits import held_out_split
from .calibration import CONTENT_FREE_INPUTS, contextual_calibration, expected_calibration_error, label_probabilities
from .data import load_text_classification
from .features import context_window, text_features
from .loglikelihood import encode, loglikelihoods
from .prompts import PromptTemplate, get_template, label_options, select_demonstrations

logger = logging.getLogger(__name__)


@dataclass
class PromptScores:
    """Per-query results. loglik: (N, C) summed option log-likelihoods; probs/calibrated: (N, C)."""

    loglik: torch.Tensor
    probs: torch.Tensor
    calibrated: torch.Tensor | None
    num_demonstrations: list[int]  # demonstrations each query's prompt kept after fitting the context window


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
    ):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.label_names = label_names
        self.options = label_options(template, label_names)  # answer word of each label id
        for word in self.options:
            if not word.strip() or not encode(tokenizer, template.continuation(word)):
                raise ValueError(f"The label word {word!r} tokenizes to nothing; choose another verbalizer.")
        self.batch_size, self.use_prefix_cache = batch_size, use_prefix_cache
        self.window = context_window(model)
        self._warned = False

    def demonstrations(self, texts: list[str], labels: list[int]) -> list[str]:
        return [self.template.demonstration(t, self.label_names[y]) for t, y in zip(texts, labels)]

    def fit_context(self, demos: list[str], query_texts: list[str]) -> list[str]:
        """Drop demonstrations, farthest from the query first, until every prompt of `query_texts` fits.

        Raises ValueError when even the zero-shot prompt is too long: the query is never truncated.
        """
        if self.window is None:
            return demos
        longest = max(self.options, key=lambda w: len(encode(self.tokenizer, self.template.continuation(w))))
        for start in range(len(demos) + 1):
            kept = demos[start:]
            lengths = [
                len(encode(self.tokenizer, self.template.context(kept, q) + self.template.continuation(longest))) - 1
                for q in query_texts
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
        raise ValueError(
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
        for demos, members in groups.items():
            texts = [queries[i] for i in members] + (list(CONTENT_FREE_INPUTS) if calibrate else [])
            fitted.append((members, self.fit_context(list(demos), texts), texts))
        return fitted

    def score(self, queries: list[str], demos_per_query: list[list[str]], *, calibrate: bool = False) -> PromptScores:
        """Log-likelihood of every label option for every query, with optional contextual calibration."""
        n, c = len(queries), len(self.options)
        fitted = self._grouped_contexts(queries, demos_per_query, calibrate)
        continuations = [self.template.continuation(w) for w in self.options]
        requests = [
            [(self.template.context(kept, t), cont) for t in texts for cont in continuations]
            for _, kept, texts in fitted
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

    @torch.no_grad()
    def generate(
        self, queries: list[str], demos_per_query: list[list[str]], *, max_new_tokens: int = 5
    ) -> tuple[list[str], list[int]]:
        """Greedy continuations and parsed predictions (label id, or -1 when no label word starts the answer)."""
        fitted = self._grouped_contexts(queries, demos_per_query, calibrate=False)
        contexts = [""] * len(queries)
        for members, kept, _ in fitted:
            for i in members:
                contexts[i] = self.template.context(kept, queries[i])
        tokenizer, model = self.tokenizer, self.model
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        texts = []
        try:
            for start in range(0, len(contexts), self.batch_size):
                batch = tokenizer(contexts[start : start + self.batch_size], return_tensors="pt", padding=True).to(
                    device
                )
                budget = (
                    max_new_tokens
                    if self.window is None
                    else min(max_new_tokens, self.window - batch["input_ids"].shape[1])
                )
                out = model.generate(
                    **batch, max_new_tokens=max(budget, 1), do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
                texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
        return texts, [self.parse_answer(t) for t in texts]

    def parse_answer(self, generated: str) -> int:
        """The label whose word the generated text starts with (case-insensitive, longest match), else -1."""
        answer = generated.strip().lower()
        matches = [(len(w), i) for i, w in enumerate(self.options) if answer.startswith(w.strip().lower())]
        return max(matches)[1] if matches else -1


# -----------------------------------------------------------------------------------------------------------
# the shots x seeds sweep behind scripts/prompt_eval.py


@dataclass
class PromptEvalArguments:
    model_name_or_path: str = field(metadata={"help": "A saved causal LM folder or a Hub id (with its tokenizer)."})
    dataset: str = field(metadata={"help": "Labelled queries: 'label text' .txt, csv/tsv/jsonl/parquet or a Hub name."})
    demos_dataset: str | None = field(
        default=None,
        metadata={"help": "Pool of demonstrations (default: a seeded part of --dataset disjoint from the queries)."},
    )
    output_file: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})
    preset: str = field(default="sentiment", metadata={"help": "sentiment, question_type, topic or key_value."})
    verbalizer: str | None = field(default=None, metadata={"help": "Override: 'label=word,label=word'."})
    instruction: str | None = field(default=None, metadata={"help": "Override the preset's instruction."})
    input_prefix: str | None = field(default=None, metadata={"help": "Override the text before each input."})
    output_prefix: str | None = field(default=None, metadata={"help": "Override the text before each answer."})
    shots: str = field(default="0,1,4,8", metadata={"help": "Comma-separated numbers of demonstrations k."})
    seeds: int = field(default=3, metadata={"help": "Demonstration draws per k (seeds 0..n-1)."})
    strategy: str = field(default="random", metadata={"help": "Demonstrations: random, balanced or nearest."})
    calibrate: bool = field(default=False, metadata={"help": "Also report contextual calibration (Zhao et al. 2021)."})
    mode: str = field(default="loglikelihood", metadata={"help": "loglikelihood (score each label) or generate."})
    max_eval_examples: int | None = field(default=200, metadata={"help": "Seeded subset of queries (None: all)."})
    demo_fraction: float = field(
        default=0.5, metadata={"help": "Part of --dataset used as the pool when no --demos_dataset."}
    )
    max_new_tokens: int = field(default=5, metadata={"help": "Generation mode: tokens to generate."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass."})
    no_prefix_cache: bool = field(
        default=False, metadata={"help": "Score every prompt in full (slower; same numbers)."}
    )
    text_column: str = field(default="text", metadata={"help": "Text column."})
    label_column: str = field(default="label", metadata={"help": "Label column."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models with custom code."})


def parse_verbalizer(spec: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f"--verbalizer must look like 'label=word,label=word', got {spec!r}.")
    return {k.strip(): v.strip() for k, v in pairs}


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False):
    """(model, tokenizer) for a saved folder or Hub id; OSError with the name when it cannot be loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise OSError(f"Could not load a causal LM and tokenizer from {name_or_path!r}: {err}") from err
    return model, tokenizer


def _summary(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "runs": values,
    }


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return (pred == labels).double().mean().item()


def run_prompt_eval(args: PromptEvalArguments) -> dict:
    """Accuracy (and ECE) for every k in --shots over --seeds demonstration draws. Returns the results dict."""
    shots = [int(s) for s in args.shots.split(",") if s.strip()]
    if not shots or min(shots) < 0:
        raise ValueError(f"--shots must be non-negative integers, got {args.shots!r}.")
    if args.mode not in ("loglikelihood", "generate"):
        raise ValueError(f"--mode must be loglikelihood or generate, got {args.mode!r}.")
    kwargs = dict(text_column=args.text_column, label_column=args.label_column)
    queries_ds, names = load_text_classification(args.dataset, **kwargs)
    if args.demos_dataset:
        pool_ds, pool_names = load_text_classification(args.demos_dataset, **kwargs)
        if pool_names != names:
            raise ValueError(f"--demos_dataset labels {pool_names} differ from --dataset labels {names}.")
    else:
        pool_idx, query_idx = held_out_split(len(queries_ds), 1 - args.demo_fraction, seed=0)
        pool_ds, queries_ds = queries_ds.select(pool_idx), queries_ds.select(query_idx)
    if args.max_eval_examples and len(queries_ds) > args.max_eval_examples:
        subset = torch.randperm(len(queries_ds), generator=torch.Generator().manual_seed(1))[: args.max_eval_examples]
        queries_ds = queries_ds.select(sorted(subset.tolist()))
    queries, labels = list(queries_ds["text"]), torch.tensor(queries_ds["label"])
    pool_texts, pool_labels = list(pool_ds["text"]), list(pool_ds["label"])
    if not pool_texts and max(shots) > 0:
        raise ValueError("The demonstration pool is empty.")

    template = get_template(
        args.preset,
        instruction=args.instruction,
        input_prefix=args.input_prefix,
        output_prefix=args.output_prefix,
        verbalizer=parse_verbalizer(args.verbalizer) if args.verbalizer else None,
    )
    model, tokenizer = load_causal_lm(args.model_name_or_path, args.trust_remote_code)
    classifier = PromptClassifier(
        model, tokenizer, template, names, batch_size=args.batch_size, use_prefix_cache=not args.no_prefix_cache
    )
    embeddings = None
    if args.strategy == "nearest":
        embeddings = (
            text_features(model, tokenizer, pool_texts, pooling="mean"),
            text_features(model, tokenizer, queries, pooling="mean"),
        )

    results = {
        "model": args.model_name_or_path,
        "dataset": args.dataset,
        "num_queries": len(queries),
        "num_pool": len(pool_texts),
        "label_words": dict(zip(names, classifier.options)),
        "chance": 1 / len(names),
        "arguments": asdict(args),
        "shots": {},
    }
    for k in shots:
        # k = 0 (and "nearest", which is deterministic) has nothing to re-draw: one run stands for every seed
        seeds = range(args.seeds) if k > 0 and args.strategy != "nearest" else range(1)
        runs: dict[str, list[float]] = {}
        for seed in seeds:
            chosen = select_demonstrations(
                pool_labels,
                k,
                strategy=args.strategy,
                seed=seed,
                num_queries=len(queries),
                pool_embeddings=embeddings[0] if embeddings else None,
                query_embeddings=embeddings[1] if embeddings else None,
            )
            demos = [
                classifier.demonstrations([pool_texts[i] for i in idx], [pool_labels[i] for i in idx]) for idx in chosen
            ]
            if args.mode == "generate":
                _, predicted = classifier.generate(queries, demos, max_new_tokens=args.max_new_tokens)
                predicted = torch.tensor(predicted)
                runs.setdefault("accuracy", []).append(_accuracy(predicted, labels))
                runs.setdefault("invalid_answers", []).append((predicted < 0).double().mean().item())
                continue
            scores = classifier.score(queries, demos, calibrate=args.calibrate)
            word_lengths = torch.tensor([float(len(w)) for w in classifier.options], dtype=torch.float64)
            runs.setdefault("accuracy", []).append(_accuracy(scores.loglik.argmax(-1), labels))
            runs.setdefault("accuracy_norm", []).append(_accuracy((scores.loglik / word_lengths).argmax(-1), labels))
            runs.setdefault("ece", []).append(expected_calibration_error(scores.probs, labels))
            if scores.calibrated is not None:
                runs.setdefault("accuracy_calibrated", []).append(_accuracy(scores.calibrated.argmax(-1), labels))
                runs.setdefault("ece_calibrated", []).append(expected_calibration_error(scores.calibrated, labels))
            runs.setdefault("demonstrations_kept", []).append(statistics.fmean(scores.num_demonstrations))
        results["shots"][str(k)] = {name: _summary(values) for name, values in runs.items()}
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_file).write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_table(results: dict) -> str:
    """Markdown table: one row per k, mean +- std over seeds for every metric present."""
    columns = [
        "accuracy",
        "accuracy_norm",
        "ece",
        "accuracy_calibrated",
        "ece_calibrated",
        "invalid_answers",
        "demonstrations_kept",
    ]
    present = [c for c in columns if any(c in row for row in results["shots"].values())]
    lines = ["| k | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for k, row in results["shots"].items():
        cells = [f"{row[c]['mean']:.3f} ± {row[c]['std']:.3f}" if c in row else "" for c in present]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    seeds = max(len(row[present[0]]["runs"]) for row in results["shots"].values())
    lines.append(
        f"\n{results['num_queries']} queries, chance {results['chance']:.3f}, up to {seeds} seeds "
        f"(k = 0 is deterministic: one run)."
    )
    return "\n".join(lines)


__all__ = [
    "PromptClassifier",
    "PromptEvalArguments",
    "PromptScores",
    "format_table",
    "load_causal_lm",
    "run_prompt_eval",
]
