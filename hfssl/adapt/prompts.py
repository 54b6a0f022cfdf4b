"""Prompt templates, presets and k-shot prompt building for zero-shot and in-context evaluation.

A prompt for query x with demonstrations (x_1, y_1) ... (x_k, y_k) is

    instruction + D + demo(x_1, y_1) + D + ... + demo(x_k, y_k) + D + input_prefix + x + F + output_prefix

and each label y is scored as the continuation `target_delimiter + verbalizer[y]` (D = demo_delimiter,
F = field_delimiter; demo(x, y) is the query part followed by its continuation). This is the
(context, continuation) split that lm-evaluation-harness uses for multiple-choice tasks.
"""

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..data.label_words import QUESTION_TYPE_WORDS, SENTIMENT_WORDS
from ..run.errors import InputError


@dataclass(frozen=True)
class PromptTemplate:
    """How examples become text. `verbalizer` maps a label name (as the data names it) to its answer word."""

    verbalizer: dict[str, str]
    instruction: str = ""
    input_prefix: str = ""
    field_delimiter: str = "\n"
    output_prefix: str = "Answer:"
    target_delimiter: str = " "
    demo_delimiter: str = "\n\n"
    label_key_separator: str | None = field(
        default=None, metadata={"help": "Labels such as 'DESC:manner' are looked up by the part before this."}
    )
    labels_are_answers: bool = field(
        default=False, metadata={"help": "A label the verbalizer lacks is its own answer word (a sum, a name)."}
    )

    def verbalize(self, label_name: str) -> str:
        """The answer word of a label name; InputError if the verbalizer lacks it (unless labels are answers)."""
        key = label_name.split(self.label_key_separator)[0] if self.label_key_separator else label_name
        if key not in self.verbalizer and self.labels_are_answers:
            return label_name
        if key not in self.verbalizer:
            raise InputError(
                f"Label {label_name!r} is missing from the verbalizer (it maps {sorted(self.verbalizer)}); "
                "pass a verbalizer that covers every label."
            )
        return self.verbalizer[key]

    def query(self, text: str) -> str:
        return f"{self.input_prefix}{text}{self.field_delimiter}{self.output_prefix}"

    def continuation(self, answer_word: str) -> str:
        return f"{self.target_delimiter}{answer_word}"

    def demonstration(self, text: str, label_name: str) -> str:
        return self.query(text) + self.continuation(self.verbalize(label_name))

    def context(self, demonstrations: list[str], query_text: str) -> str:
        """The full context before the answer: instruction, demonstrations, then the query."""
        parts = ([self.instruction] if self.instruction else []) + demonstrations + [self.query(query_text)]
        return self.demo_delimiter.join(parts)


PRESETS: dict[str, PromptTemplate] = {
    # open answers (hfssl.data.reasoning_tasks, arithmetic, names): each label is its own answer word
    "question_answer": PromptTemplate(verbalizer={}, input_prefix="Q: ", output_prefix="A:", labels_are_answers=True),
    "sentiment": PromptTemplate(
        verbalizer=dict(SENTIMENT_WORDS),
        input_prefix="Review: ",
        output_prefix="Sentiment:",
    ),
    "question_type": PromptTemplate(  # TREC coarse classes; labels like 'DESC:manner' use the part before ':'
        verbalizer=dict(QUESTION_TYPE_WORDS),
        input_prefix="Question: ",
        output_prefix="Answer type:",
        label_key_separator=":",
    ),
    "topic": PromptTemplate(  # AG News: ids 0-3 or the ClassLabel names
        verbalizer={
            "0": "world",
            "1": "sports",
            "2": "business",
            "3": "technology",
            "World": "world",
            "Sports": "sports",
            "Business": "business",
            "Sci/Tech": "technology",
        },
        input_prefix="Article: ",
        output_prefix="Topic:",
    ),
    "key_value": PromptTemplate(  # the `key value` lines of benchmarks/exp_icl.py: A B ... A -> B
        verbalizer={},
        input_prefix="",
        field_delimiter="",
        output_prefix="",
        demo_delimiter="\n",
        labels_are_answers=True,
    ),
}


def get_template(preset: str, **overrides) -> PromptTemplate:
    """A preset with some fields replaced (None values are ignored)."""
    if preset not in PRESETS:
        raise InputError(f"Unknown prompt preset {preset!r}; choose one of {sorted(PRESETS)}.")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def label_options(template: PromptTemplate, label_names: list[str]) -> list[str]:
    """The answer word of each label id, in id order. ValueError if two labels share a word."""
    words = [template.verbalize(n) for n in label_names]
    if len(set(words)) < len(words):
        raise InputError(f"Two labels map to the same answer word: {dict(zip(label_names, words))}.")
    return words


# ---------------------------------------------------------------------------------------------------------
# demonstration selection


def own_text_matches(pool_texts: Sequence[str], query_texts: Sequence[str]) -> list[frozenset[int]]:
    """Per query, the indices of the pool examples whose text is the query's own: compared exactly after `strip()`
    (case and inner whitespace count, so "Dull" and "dull" differ). A demonstration with the query's own text shows
    the model its answer; `select_demonstrations(exclude=...)` keeps these out."""
    where: dict[str, set[int]] = {}
    for i, text in enumerate(pool_texts):
        where.setdefault(text.strip(), set()).add(i)
    return [frozenset(where.get(text.strip(), ())) for text in query_texts]


def select_demonstrations(
    pool_labels: list[int],
    k: int,
    *,
    strategy: str,
    seed: int,
    num_queries: int = 1,
    pool_embeddings: torch.Tensor | None = None,
    query_embeddings: torch.Tensor | None = None,
    exclude: Sequence[Collection[int]] | None = None,
) -> list[list[int]]:
    """Indices into the pool of the k demonstrations for each query: a list of num_queries lists.

    - "random": one seeded draw of k pool examples, shared by every query (one shared prefix).
    - "balanced": as random, but cycling over the classes so each gets floor(k/C) or one more.
    - "nearest": per query, the k pool examples whose embeddings (N, d) have the highest cosine
      similarity, most similar last (closest to the query), as in Liu et al. 2022 (KATE).
    The order of random/balanced demonstrations is itself a seeded permutation.

    `exclude[q]` (e.g. `own_text_matches`) lists the pool examples query q must not get. "nearest" takes the k most
    similar of the others; random/balanced keep the shared draw and, only for a query that drew an excluded example,
    put a replacement in its place: the first example, in a seeded order of the undrawn ones (drawn after the shared
    draw, which stays as it was), that the query may get -- of the same class under "balanced" where there is one.
    Excluding nothing selects exactly what no `exclude` selects.
    """
    if k == 0:
        return [[] for _ in range(num_queries)]
    if len(pool_labels) == 0:
        raise InputError("The demonstration pool is empty: pass --demos_dataset with labelled examples.")
    if k > len(pool_labels):
        raise InputError(f"{k} demonstrations asked for, but the pool has only {len(pool_labels)} examples.")
    excluded = [frozenset(e) for e in (exclude if exclude is not None else [()] * num_queries)]
    if len(excluded) != num_queries:
        raise InputError(f"`exclude` lists {len(excluded)} queries, but there are {num_queries}.")
    most = max((len(e) for e in excluded), default=0)
    if len(pool_labels) - most < k:
        raise InputError(
            f"{k} demonstrations asked for, but a query's own text is {most} of the {len(pool_labels)} pool "
            f"examples, which leaves {len(pool_labels) - most} to show it."
        )
    rng = random.Random(seed)
    if strategy == "random":
        chosen = rng.sample(range(len(pool_labels)), k)
    elif strategy == "balanced":
        by_class: dict[int, list[int]] = {}
        for i, y in enumerate(pool_labels):
            by_class.setdefault(y, []).append(i)
        for members in by_class.values():
            rng.shuffle(members)
        classes = sorted(by_class)
        rng.shuffle(classes)
        chosen, round_ = [], 0
        while len(chosen) < k:
            for c in classes:
                if round_ < len(by_class[c]) and len(chosen) < k:
                    chosen.append(by_class[c][round_])
            round_ += 1
        rng.shuffle(chosen)
    elif strategy == "nearest":
        if pool_embeddings is None or query_embeddings is None:
            raise InputError("strategy 'nearest' needs pool and query embeddings.")
        pool = torch.nn.functional.normalize(pool_embeddings.float(), dim=1)
        queries = torch.nn.functional.normalize(query_embeddings.float(), dim=1)
        similarity = queries @ pool.T
        for q, own in enumerate(excluded):
            if own:
                similarity[q, sorted(own)] = float("-inf")
        top = similarity.topk(k, dim=1).indices  # (Q, k), most similar first
        return [row.flip(0).tolist() for row in top]
    else:
        raise InputError(f"Unknown demonstration strategy {strategy!r}: use random, balanced or nearest.")
    return _without_excluded(chosen, excluded, pool_labels, rng, same_class=strategy == "balanced")


def _without_excluded(
    chosen: list[int], excluded: list[frozenset[int]], pool_labels: list[int], rng: random.Random, *, same_class: bool
) -> list[list[int]]:
    """The shared draw `chosen` for every query, with each excluded example of a query replaced in place (see
    `select_demonstrations`). The caller checked that every query may get at least k pool examples."""
    drawn = set(chosen)
    spares: list[int] | None = None  # drawn from `rng` only when a query needs a replacement
    rows = []
    for own in excluded:
        if own.isdisjoint(drawn):
            rows.append(list(chosen))
            continue
        if spares is None:
            undrawn = [i for i in range(len(pool_labels)) if i not in drawn]
            spares = rng.sample(undrawn, len(undrawn))
        row = list(chosen)
        for position, index in enumerate(row):
            if index in own:
                allowed = [s for s in spares if s not in own and s not in row]
                same = [s for s in allowed if pool_labels[s] == pool_labels[index]] if same_class else []
                row[position] = (same or allowed)[0]
        rows.append(row)
    return rows
