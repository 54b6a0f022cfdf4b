"""The shots x seeds sweep behind `scripts/prompt_eval.py`: accuracy (and calibration) of a prompted causal LM for
every number of demonstrations k, over several demonstration draws.

Queries come from --dataset and demonstrations from `--demos_dataset`, or both from a fixed split of `--dataset`
(seed 0), disjoint by rows, of which a fixed subset (seed 1) is queried, so every k and every demonstration seed is
scored on the same queries. A pool and its queries can still share texts (a --demos_dataset that overlaps --dataset,
a repeated line): a query is never shown a demonstration with its own text (compared after `strip()`), the number
of queries whose text is in the pool is logged and recorded (`pool_query_overlap`), and a --demos_dataset with the
texts of more than OVERLAP_LIMIT of the queries is refused unless --allow_demo_overlap.

With --chain_of_thought the model writes a chain before its answer (`chain_of_thought.py` holds the prompt layout,
the parse rule and the vote); --num_samples chains sampled at --temperature answer by majority vote.

With --ablate_heads the whole evaluation runs with those attention heads' outputs zeroed (`hfssl.analysis.heads.
ablate_heads`), e.g. the top induction heads that `scripts/analyze.py induction` lists.
"""

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from ..analysis.heads import ablate_heads, format_heads, parse_heads
from ..data.labelled import LabelledData, load_labelled
from ..data.splits import held_out_split
from ..models.loading import load_causal_lm
from ..run.arguments import (
    ModelSourceArguments,
    require_choice,
    require_fraction,
    require_non_negative,
    require_positive,
)
from ..run.errors import InputError
from ..run.results import PromptEvalResult, save_result
from .calibration import expected_calibration_error
from .chain_of_thought import (
    ChainAnswer,
    chain_stop_strings,
    cot_demonstration,
    cot_template,
    majority_vote,
    parse_cot_answer,
)
from .features import text_features
from .prompt_classifier import Generations, PromptClassifier
from .prompts import get_template, own_text_matches, select_demonstrations

logger = logging.getLogger(__name__)

OVERLAP_LIMIT = 0.1  # share of queries whose text may be in the demonstration pool without --allow_demo_overlap


@dataclass(kw_only=True)
class PromptEvalArguments(ModelSourceArguments):
    model_name_or_path: str = field(metadata={"help": "A saved causal LM folder or a Hub id (with its tokenizer)."})
    dataset: str = field(metadata={"help": "Labelled queries: 'label text' .txt, csv/tsv/jsonl/parquet or a Hub name."})
    demos_dataset: str | None = field(
        default=None,
        metadata={"help": "Pool of demonstrations (default: a seeded part of --dataset disjoint from the queries)."},
    )
    allow_demo_overlap: bool = field(
        default=False,
        metadata={
            "help": "Run even when --demos_dataset holds the texts of more than 10%% of the queries (it overlaps "
            "--dataset). A query is never shown a demonstration with its own text either way."
        },
    )
    output_file: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})
    preset: str = field(
        default="sentiment",
        metadata={"help": "sentiment, question_type, topic, key_value or question_answer (open answers: Q: x A: y)."},
    )
    verbalizer: str | None = field(default=None, metadata={"help": "Override: 'label=word,label=word'."})
    instruction: str | None = field(default=None, metadata={"help": "Override the preset's instruction."})
    input_prefix: str | None = field(default=None, metadata={"help": "Override the text before each input."})
    output_prefix: str | None = field(default=None, metadata={"help": "Override the text before each answer."})
    shots: str = field(default="0,1,4,8", metadata={"help": "Comma-separated numbers of demonstrations k."})
    seed: int = field(
        default=42,
        metadata={"help": "First seed of demonstration draws and sampling: draws use seed .. seed + num_seeds - 1."},
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
    chain_of_thought: bool = field(
        default=False,
        metadata={
            "help": "Chain-of-thought: demonstrations show a rationale, then 'The answer is <label word>.'; the model "
            "writes its reasoning and the answer is parsed from it (hfssl.adapt.chain_of_thought.parse_cot_answer). "
            "Implies --mode generate. With --shots > 0 the demonstrations need a --rationale_column."
        },
    )
    cot_trigger: str | None = field(
        default=None,
        metadata={
            "help": 'Text after the output prefix that starts every chain, e.g. "Let\'s think step by step." '
            "(zero-shot chain-of-thought, Kojima et al. 2022, with --shots 0). Default: none; the demonstrations' "
            "rationales lead."
        },
    )
    rationale_column: str = field(
        default="rationale", metadata={"help": "Chain-of-thought: the column of the demonstrations' reasoning."}
    )
    num_samples: int = field(
        default=1,
        metadata={
            "help": "Sampled generations per query, answered by a majority vote of their parsed answers "
            "(self-consistency, Wang et al. 2022). > 1 needs --temperature > 0."
        },
    )
    temperature: float = field(
        default=0.0,
        metadata={"help": "Generation: 0 decodes greedily; > 0 samples at this temperature (no top-k/top-p cut)."},
    )
    cot_max_new_tokens: int = field(
        default=128, metadata={"help": "Chain-of-thought: tokens a chain may take (the context window may cut it)."}
    )
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass."})
    no_prefix_cache: bool = field(
        default=False, metadata={"help": "Score every prompt in full (slower; same numbers)."}
    )
    text_column: str = field(default="text", metadata={"help": "Text column."})
    label_column: str = field(default="label", metadata={"help": "Label column."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models with custom code."})
    ablate_heads: str | None = field(
        default=None,
        metadata={
            "help": "Evaluate with these attention heads' outputs zeroed: 'layer.head,...' counted from 0, e.g. "
            "'3.1,5.0' (scripts/analyze.py induction lists the induction heads). Recorded in the result."
        },
    )

    def __post_init__(self):
        self.check_model_source()
        self.shot_counts = parse_shots(self.shots)
        self.ablated_heads = parse_heads(self.ablate_heads or "")
        self.ablate_heads = format_heads(self.ablated_heads) or None  # recorded as written back: '3.1,5.0'
        require_positive(self, "num_seeds", "max_eval_examples", "max_new_tokens", "per_device_eval_batch_size")
        require_choice(self, "mode", ("loglikelihood", "generate"))
        require_choice(self, "strategy", ("random", "balanced", "nearest"))
        require_fraction(self, "demo_fraction", low_open=True)
        if self.verbalizer:
            parse_verbalizer(self.verbalizer)
        self._check_generation()

    def _check_generation(self) -> None:
        """Chain-of-thought generates; sampling needs generation, and several samples need a temperature."""
        require_positive(self, "num_samples", "cot_max_new_tokens")
        if not math.isfinite(self.temperature):  # nan > 0 is False: NaN would decode greedily without a word
            raise InputError(
                f"--temperature must be a finite number (0 decodes greedily, > 0 samples), got {self.temperature}."
            )
        require_non_negative(self, "temperature")
        if self.chain_of_thought:
            if self.calibrate:
                raise InputError(
                    "--calibrate rescores label log-likelihoods; --chain_of_thought generates: drop one of them."
                )
            self.mode = "generate"
        elif self.cot_trigger:
            raise InputError("--cot_trigger starts a chain of thought: add --chain_of_thought.")
        if (self.num_samples > 1 or self.temperature > 0) and self.mode != "generate":
            raise InputError(
                "--num_samples and --temperature apply to generation: add --chain_of_thought or --mode generate."
            )
        if self.num_samples > 1 and self.temperature == 0:
            raise InputError(
                "self-consistency samples several chains: set --temperature > 0 (greedy decoding repeats one chain)."
            )

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
        data = load_labelled(
            spec,
            text_column=args.text_column,
            label_column=args.label_column,
            rationale_column=args.rationale_column if args.chain_of_thought else None,
        )
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
    _check_rationales(args, pool)
    return queries, pool


def _check_rationales(args: PromptEvalArguments, pool: LabelledData) -> None:
    """Chain-of-thought demonstrations (k > 0) show their reasoning: every one needs a non-empty rationale."""
    if not args.chain_of_thought or max(args.shot_counts) == 0:
        return
    column = args.rationale_column
    if pool.rationales is None:
        raise InputError(
            f"--chain_of_thought needs demonstrations with a {column!r} column: {pool.name} has none (name it with "
            '--rationale_column, or run zero-shot: --shots 0 --cot_trigger "Let\'s think step by step.").'
        )
    empty = sum(not r for r in pool.rationales)
    if empty:
        raise InputError(
            f"--chain_of_thought needs a rationale for every demonstration: {empty} of the {len(pool)} drawn from "
            f"{pool.name} have an empty {column!r}."
        )


def _score_draw(
    args, classifier: PromptClassifier, queries: LabelledData, demos: list[list[str]], seed: int
) -> tuple[dict[str, float], list[dict]]:
    """The metrics of one demonstration draw, and (chain-of-thought) the chains of its first queries."""
    labels, texts = queries.labels, cast(list[str], queries.inputs)  # prompting reads text data
    if args.mode == "generate":
        return _score_generated(args, classifier, queries, demos, seed)
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
    return metrics, []


def _score_generated(
    args, classifier: PromptClassifier, queries: LabelledData, demos: list[list[str]], seed: int
) -> tuple[dict[str, float], list[dict]]:
    """Generated answers: one per query, or the majority vote of --num_samples sampled ones. A chain of thought is
    read by `parse_cot_answer`: a chain with nothing read is a parse failure (`parse_failures`), one whose answer
    names no label ("221" for an addition whose sum is 361 and that no other query has) an off-label answer
    (`off_label_answers`): both are wrong, and an off-label answer votes. A short answer is read by
    `PromptClassifier.parse_answer`; one naming no label is counted (`invalid_answers`), does not vote, and is
    wrong."""
    cot = args.chain_of_thought
    generations = classifier.sample(
        cast(list[str], queries.inputs),
        demos,
        max_new_tokens=args.cot_max_new_tokens if cot else args.max_new_tokens,
        num_samples=args.num_samples,
        temperature=args.temperature,
        seed=seed,
        stop_strings=(
            chain_stop_strings(classifier.template, with_demonstrations=any(demos))
            if cot and not args.apply_chat_template
            else ()
        ),
    )
    parsed = [[_read_answer(classifier, text, cot) for text in row] for row in generations.texts]
    labels = torch.tensor([[a.label for a in row] for row in parsed])  # (N, num_samples)
    winners = [_vote(row) for row in parsed]
    votes = torch.tensor([_voted_label(w) for w in winners])
    metrics = {"accuracy": _accuracy(votes, queries.labels)}
    if args.num_samples > 1:
        metrics["accuracy_single"] = _accuracy(labels[:, 0], queries.labels)  # what the vote adds to one sample
    if not cot:
        metrics["invalid_answers"] = (labels < 0).double().mean().item()
        return metrics, []
    answered = torch.tensor([[a.answer is not None for a in row] for row in parsed])
    metrics["parse_failures"] = (~answered).double().mean().item()
    metrics["off_label_answers"] = (answered & (labels < 0)).double().mean().item()
    metrics["tokens_per_query"] = statistics.fmean(sum(row) for row in generations.num_tokens)
    return metrics, _chains(queries, generations, parsed, winners)


def _read_answer(classifier: PromptClassifier, text: str, cot: bool) -> ChainAnswer:
    """A chain read by `parse_cot_answer`; a short answer by `parse_answer` (no label: nothing read)."""
    if cot:
        return parse_cot_answer(text, classifier.options)
    label = classifier.parse_answer(text)
    return ChainAnswer(label, "", classifier.options[label] if label >= 0 else None)


def _vote(answers: list[ChainAnswer]) -> ChainAnswer | None:
    """The first sample that gave the majority answer (`majority_vote` over every answer read, an off-label one
    included); None when nothing was read."""
    winner = majority_vote([a.answer for a in answers])
    return next(a for a in answers if a.answer == winner) if winner is not None else None


def _voted_label(winner: ChainAnswer | None) -> int:
    """The label the vote chose; -1 (wrong) when an off-label answer won or nothing was read."""
    return winner.label if winner is not None else -1


CHAINS_KEPT = 20  # queries whose chains a result keeps, per k (of its first draw)


def _chains(
    queries: LabelledData, generations: Generations, parsed: list[list[ChainAnswer]], winners: list[ChainAnswer | None]
) -> list[dict]:
    """What the model wrote for the first CHAINS_KEPT queries, with the answers read from it, for reading."""

    def named(answer: ChainAnswer | None) -> str | None:  # a label's name, an off-label answer as read, or None
        if answer is None:
            return None
        return queries.names[answer.label] if answer.label >= 0 else answer.answer

    return [
        {
            "query": queries.inputs[i],
            "gold": queries.names[int(queries.labels[i])],
            "prediction": named(winners[i]),
            "correct": _voted_label(winners[i]) == int(queries.labels[i]),
            "chains": generations.texts[i],
            "answers": [named(a) for a in parsed[i]],
            "rules": [a.rule for a in parsed[i]],
            "num_tokens": generations.num_tokens[i],
        }
        for i in range(min(CHAINS_KEPT, len(queries)))
    ]


def _demonstrations(args, classifier: PromptClassifier, pool: LabelledData, chosen: list[list[int]]) -> list[list[str]]:
    """The demonstration texts of each query: worked examples with their rationales under chain-of-thought."""
    texts, labels = cast(list[str], pool.inputs), pool.labels.tolist()  # text data
    if not args.chain_of_thought:
        return [classifier.demonstrations([texts[i] for i in idx], [labels[i] for i in idx]) for idx in chosen]
    rationales = cast(list[str], pool.rationales)  # checked by _check_rationales when k > 0
    return [
        [cot_demonstration(classifier.template, texts[i], rationales[i], classifier.options[labels[i]]) for i in idx]
        for idx in chosen
    ]


def pool_query_overlap(args: PromptEvalArguments, queries: LabelledData, pool: LabelledData) -> list[frozenset[int]]:
    """Per query, the pool examples with its own text (`own_text_matches`: exact after `strip()`), which its
    demonstrations leave out. When demonstrations are shown, the queries with such a twin are counted in a warning,
    and a --demos_dataset that holds the texts of more than OVERLAP_LIMIT of the queries is refused before the model
    loads (unless --allow_demo_overlap): that pool is most likely the query set again, and the numbers would not be
    held out. The default pool, a part of --dataset disjoint from the queries by rows, shares texts only where
    --dataset repeats them: warned about, never refused."""
    matches = own_text_matches(cast(list[str], pool.inputs), cast(list[str], queries.inputs))  # text data
    overlap = sum(1 for m in matches if m)
    if not overlap or max(args.shot_counts) == 0:
        return matches
    source = pool.name if args.demos_dataset else f"the part of {args.dataset} kept for demonstrations"
    share = f"{overlap / len(queries):.0%}"
    what = f"{overlap} of the {len(queries)} queries ({share}) have their text in the demonstration pool ({source})"
    if args.demos_dataset and overlap > OVERLAP_LIMIT * len(queries) and not args.allow_demo_overlap:
        raise InputError(
            f"{what}: more than {OVERLAP_LIMIT:.0%} suggests the pool is the query set again. Pass a "
            "--demos_dataset disjoint from --dataset, or --allow_demo_overlap to run anyway (a query is never shown "
            "its own text)."
        )
    logger.warning("%s; each is kept out of its own demonstrations.", what)
    return matches


def _evaluate_shots(
    args,
    classifier: PromptClassifier,
    queries: LabelledData,
    pool: LabelledData,
    k: int,
    embeddings,
    own_texts: list[frozenset[int]],
) -> tuple[dict[str, dict], list[dict]]:
    """mean/std/runs of every metric at k demonstrations over the draws, and the chains of the first draw.
    `own_texts[q]`: the pool examples query q must not be shown (its own text)."""
    # k = 0 (and "nearest", which is deterministic) has nothing to re-draw: one run stands for every seed, unless
    # sampling makes each seed's generations differ
    redraw = (k > 0 and args.strategy != "nearest") or args.temperature > 0
    runs: dict[str, list[float]] = {}
    chains: list[dict] = []
    for seed in range(args.seed, args.seed + (args.num_seeds if redraw else 1)):
        chosen = select_demonstrations(
            pool.labels.tolist(),
            k,
            strategy=args.strategy,
            seed=seed,
            num_queries=len(queries),
            pool_embeddings=embeddings[0],
            query_embeddings=embeddings[1],
            exclude=own_texts,
        )
        metrics, draw_chains = _score_draw(
            args, classifier, queries, _demonstrations(args, classifier, pool, chosen), seed
        )
        chains = chains or draw_chains
        for name, value in metrics.items():
            runs.setdefault(name, []).append(value)
    return {name: _summary(values) for name, values in runs.items()}, chains


def run_prompt_eval(args: PromptEvalArguments) -> PromptEvalResult:
    """Accuracy (and ECE) for every k of --shots over --num_seeds demonstration draws; written to --output_file.
    With --chain_of_thought the result also keeps the chains of the first queries (`result.chains[k]`)."""
    template = get_template(
        args.preset,
        instruction=args.instruction,
        input_prefix=args.input_prefix,
        output_prefix=args.output_prefix,
        verbalizer=parse_verbalizer(args.verbalizer) if args.verbalizer else None,
    )
    queries, pool = queries_and_pool(args, template.label_key_separator)
    own_texts = pool_query_overlap(args, queries, pool)
    model, tokenizer = load_causal_lm(args.source, args.trust_remote_code)
    with ablate_heads(model, args.ablated_heads):  # no heads: no hooks; a head the model lacks: an InputError
        return _evaluate(args, model, tokenizer, template, queries, pool, own_texts)


def _evaluate(args, model, tokenizer, template, queries, pool, own_texts) -> PromptEvalResult:
    """The sweep of `run_prompt_eval` on a loaded model: every k of --shots, --num_seeds draws each."""
    classifier = PromptClassifier(
        model,
        tokenizer,
        cot_template(template, args.cot_trigger) if args.chain_of_thought else template,
        queries.names,
        batch_size=args.per_device_eval_batch_size,
        use_prefix_cache=not args.no_prefix_cache,
        chat_template=args.apply_chat_template,
    )
    embeddings: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    if args.strategy == "nearest":
        embeddings = (
            text_features(model, tokenizer, cast(list[str], pool.inputs), pooling="mean"),
            text_features(model, tokenizer, cast(list[str], queries.inputs), pooling="mean"),
        )
    result = PromptEvalResult(
        pool_query_overlap=sum(1 for m in own_texts if m),
        model=args.model_name_or_path,
        num_queries=len(queries),
        num_pool=len(pool),
        label_words=dict(zip(queries.names, classifier.options)),
        chance=1 / len(queries.names),
        args=args.to_dict(),
    )
    for k in args.shot_counts:
        result.shots[str(k)], chains = _evaluate_shots(args, classifier, queries, pool, k, embeddings, own_texts)
        if chains:
            result.chains[str(k)] = chains
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        save_result(result, args.output_file)
    return result


def format_table(result: PromptEvalResult) -> str:
    """Markdown table: one row per k, mean +- std over seeds for every metric present."""
    columns = [
        "accuracy",
        "accuracy_single",
        "accuracy_norm",
        "ece",
        "accuracy_calibrated",
        "ece_calibrated",
        "invalid_answers",
        "parse_failures",
        "off_label_answers",
        "tokens_per_query",
        "demonstrations_kept",
    ]
    present = [c for c in columns if any(c in row for row in result.shots.values())]
    lines = ["| k | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    digits = {c: 1 if c == "tokens_per_query" else 3 for c in present}  # tokens: a count, not a share
    for k, row in result.shots.items():
        cells = [f"{row[c]['mean']:.{digits[c]}f} ± {row[c]['std']:.{digits[c]}f}" if c in row else "" for c in present]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    seeds = max(len(row[present[0]]["runs"]) for row in result.shots.values())
    sampled = result.args.get("temperature", 0) > 0
    lines.append(
        f"\n{result.num_queries} queries, chance {result.chance:.3f}, up to {seeds} seeds "
        + ("(each seed draws demonstrations and samples)." if sampled else "(k = 0 is deterministic: one run).")
    )
    return "\n".join(lines)


__all__ = ["PromptEvalArguments", "format_table", "queries_and_pool", "run_prompt_eval"]
