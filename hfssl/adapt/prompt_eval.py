"""The shots x seeds sweep behind `scripts/prompt_eval.py`: accuracy (and calibration) of a prompted causal LM for
every number of demonstrations k, over several demonstration draws.

Queries and the demonstration pool are disjoint: `--demos_dataset`, or a fixed split of `--dataset` (seed 0) of which
a fixed subset (seed 1) is queried, so every k and every demonstration seed is scored on the same queries.
"""

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from ..data.labelled import LabelledData, load_labelled
from ..data.splits import held_out_split
from ..models.loading import load_causal_lm
from ..run.arguments import ModelSourceArguments, require_choice, require_fraction, require_positive
from ..run.errors import InputError
from ..run.results import PromptEvalResult, save_result
from .calibration import expected_calibration_error
from .features import text_features
from .prompt_classifier import PromptClassifier
from .prompts import get_template, select_demonstrations

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PromptEvalArguments(ModelSourceArguments):
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
    seed: int = field(
        default=42, metadata={"help": "First demonstration seed: draws use seed .. seed + num_seeds - 1."}
    )
    num_seeds: int = field(default=3, metadata={"help": "Demonstration draws per k."})
    strategy: str = field(default="random", metadata={"help": "Demonstrations: random, balanced or nearest."})
    calibrate: bool = field(default=False, metadata={"help": "Also report contextual calibration (Zhao et al. 2021)."})
    mode: str = field(default="loglikelihood", metadata={"help": "loglikelihood (score each label) or generate."})
    apply_chat_template: bool = field(
        default=False,
        metadata={
            "help": "Wrap each k-shot prompt in the model's chat template as one user turn and score the label "
            "word right after the assistant turn's opening (lm-evaluation-harness' --apply_chat_template); "
            "generation stops at the end-of-turn token. For instruct models."
        },
    )
    max_eval_examples: int | None = field(default=200, metadata={"help": "Seeded subset of queries (None: all)."})
    demo_fraction: float = field(
        default=0.5, metadata={"help": "Part of --dataset used as the pool when no --demos_dataset."}
    )
    max_new_tokens: int = field(default=5, metadata={"help": "Generation mode: tokens to generate."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass."})
    no_prefix_cache: bool = field(
        default=False, metadata={"help": "Score every prompt in full (slower; same numbers)."}
    )
    text_column: str = field(default="text", metadata={"help": "Text column."})
    label_column: str = field(default="label", metadata={"help": "Label column."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models with custom code."})

    def __post_init__(self):
        self.check_model_source()
        self.shot_counts = parse_shots(self.shots)
        require_positive(self, "num_seeds", "max_eval_examples", "max_new_tokens", "per_device_eval_batch_size")
        require_choice(self, "mode", ("loglikelihood", "generate"))
        require_choice(self, "strategy", ("random", "balanced", "nearest"))
        require_fraction(self, "demo_fraction", low_open=True)
        if self.verbalizer:
            parse_verbalizer(self.verbalizer)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def parse_shots(spec: str) -> list[int]:
    try:
        shots = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        shots = []
    if not shots or min(shots) < 0:
        raise InputError(f"--shots must be comma-separated non-negative integers, got {spec!r}.")
    return shots


def parse_verbalizer(spec: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise InputError(f"--verbalizer must look like 'label=word,label=word', got {spec!r}.")
    return {k.strip(): v.strip() for k, v in pairs}


def _summary(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "runs": values,
    }


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return (pred == labels).double().mean().item()


def queries_and_pool(
    args: PromptEvalArguments, label_key_separator: str | None = None
) -> tuple[LabelledData, LabelledData]:
    """(the queries, the demonstration pool): disjoint, and the same for every k and seed. With `label_key_separator`
    (a template's, e.g. ":" for TREC) classes are merged by the part of their names before it."""

    def load(spec):
        data = load_labelled(spec, text_column=args.text_column, label_column=args.label_column)
        return data.merged_by_key(label_key_separator) if label_key_separator else data

    queries = load(args.dataset)
    if args.demos_dataset:
        pool = load(args.demos_dataset)
        if pool.names != queries.names:
            raise InputError(f"--demos_dataset labels {pool.names} differ from --dataset labels {queries.names}.")
    else:
        pool_idx, query_idx = held_out_split(len(queries), 1 - args.demo_fraction, seed=0)
        pool, queries = queries.subset(pool_idx), queries.subset(query_idx)
    if args.max_eval_examples and len(queries) > args.max_eval_examples:
        subset = torch.randperm(len(queries), generator=torch.Generator().manual_seed(1))[: args.max_eval_examples]
        queries = queries.subset(sorted(subset.tolist()))
    if len(pool) == 0 and max(args.shot_counts) > 0:
        raise InputError("The demonstration pool is empty.")
    return queries, pool


def _score_draw(args, classifier: PromptClassifier, queries: LabelledData, demos: list[list[str]]) -> dict[str, float]:
    """The metrics of one demonstration draw."""
    labels, texts = queries.labels, cast(list[str], queries.inputs)  # prompting reads text data
    if args.mode == "generate":
        _, answers = classifier.generate(texts, demos, max_new_tokens=args.max_new_tokens)
        predicted = torch.tensor(answers)
        return {"accuracy": _accuracy(predicted, labels), "invalid_answers": (predicted < 0).double().mean().item()}
    scores = classifier.score(texts, demos, calibrate=args.calibrate)
    word_lengths = torch.tensor([float(len(w)) for w in classifier.options], dtype=torch.float64)
    metrics = {
        "accuracy": _accuracy(scores.loglik.argmax(-1), labels),
        "accuracy_norm": _accuracy((scores.loglik / word_lengths).argmax(-1), labels),
        "ece": expected_calibration_error(scores.probs, labels),
    }
    if scores.calibrated is not None:
        metrics["accuracy_calibrated"] = _accuracy(scores.calibrated.argmax(-1), labels)
        metrics["ece_calibrated"] = expected_calibration_error(scores.calibrated, labels)
    metrics["demonstrations_kept"] = statistics.fmean(scores.num_demonstrations)
    return metrics


def run_prompt_eval(args: PromptEvalArguments) -> PromptEvalResult:
    """Accuracy (and ECE) for every k of --shots over --num_seeds demonstration draws; written to --output_file."""
    template = get_template(
        args.preset,
        instruction=args.instruction,
        input_prefix=args.input_prefix,
        output_prefix=args.output_prefix,
        verbalizer=parse_verbalizer(args.verbalizer) if args.verbalizer else None,
    )
    queries, pool = queries_and_pool(args, template.label_key_separator)
    model, tokenizer = load_causal_lm(args.source, args.trust_remote_code)
    classifier = PromptClassifier(
        model,
        tokenizer,
        template,
        queries.names,
        batch_size=args.per_device_eval_batch_size,
        use_prefix_cache=not args.no_prefix_cache,
        chat_template=args.apply_chat_template,
    )
    pool_texts, query_texts = cast(list[str], pool.inputs), cast(list[str], queries.inputs)  # text data
    embeddings: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    if args.strategy == "nearest":
        embeddings = (
            text_features(model, tokenizer, pool_texts, pooling="mean"),
            text_features(model, tokenizer, query_texts, pooling="mean"),
        )
    result = PromptEvalResult(
        model=args.model_name_or_path,
        num_queries=len(queries),
        num_pool=len(pool),
        label_words=dict(zip(queries.names, classifier.options)),
        chance=1 / len(queries.names),
        args=args.to_dict(),
    )
    pool_labels = pool.labels.tolist()
    for k in args.shot_counts:
        # k = 0 (and "nearest", which is deterministic) has nothing to re-draw: one run stands for every seed
        draws = args.num_seeds if k > 0 and args.strategy != "nearest" else 1
        runs: dict[str, list[float]] = {}
        for seed in range(args.seed, args.seed + draws):
            chosen = select_demonstrations(
                pool_labels,
                k,
                strategy=args.strategy,
                seed=seed,
                num_queries=len(queries),
                pool_embeddings=embeddings[0],
                query_embeddings=embeddings[1],
            )
            demos = [
                classifier.demonstrations([pool_texts[i] for i in idx], [pool_labels[i] for i in idx]) for idx in chosen
            ]
            for name, value in _score_draw(args, classifier, queries, demos).items():
                runs.setdefault(name, []).append(value)
        result.shots[str(k)] = {name: _summary(values) for name, values in runs.items()}
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        save_result(result, args.output_file)
    return result


def format_table(result: PromptEvalResult) -> str:
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
    present = [c for c in columns if any(c in row for row in result.shots.values())]
    lines = ["| k | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for k, row in result.shots.items():
        cells = [f"{row[c]['mean']:.3f} ± {row[c]['std']:.3f}" if c in row else "" for c in present]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    seeds = max(len(row[present[0]]["runs"]) for row in result.shots.values())
    lines.append(
        f"\n{result.num_queries} queries, chance {result.chance:.3f}, up to {seeds} seeds "
        "(k = 0 is deterministic: one run)."
    )
    return "\n".join(lines)


__all__ = ["PromptEvalArguments", "format_table", "queries_and_pool", "run_prompt_eval"]
