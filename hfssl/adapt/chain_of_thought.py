"""Chain-of-thought prompting (Wei et al. 2022) and self-consistency (Wang et al. 2022): how a reasoning
demonstration is written, where a generated chain ends, how its answer is read, and how sampled chains vote.

Pure functions on strings and label words, so an evaluator and a demo handler show the same chain and answer.

A demonstration is written as in lm-evaluation-harness' gsm8k-cot ("Q: ... A: <chain> The answer is X."):

    input_prefix + x + field_delimiter + output_prefix [+ target_delimiter + trigger]
        + target_delimiter + rationale + " The answer is " + label word + "."

and the query ends where a demonstration's chain begins: after the output prefix and, with a zero-shot trigger
("Let's think step by step.", Kojima et al. 2022), after the trigger; the trigger then leads every demonstration's
chain too, so demonstrations and query have one layout. The model writes its chain from there.
"""

import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import NamedTuple, TypeVar

from .prompts import PromptTemplate

ANSWER_PHRASE = "The answer is"

# rule names, as parse_cot_answer reports them
ANSWER_STATEMENT, LAST_NUMBER, LAST_LABEL_WORD, NO_ANSWER = "answer_statement", "last_number", "last_label_word", "none"


class ChainAnswer(NamedTuple):
    """What `parse_cot_answer` read from a chain.

    label: index into the label words, -1 when the answer names none; rule: the rule that read it;
    answer: what the chain answered -- the label word when it names one, else the text it stated ("221" for an
    addition no label has, "neutral" for a sentiment): a wrong answer, not a parse failure -- and None only when
    nothing could be read (the parse failure)."""

    label: int
    rule: str
    answer: str | None


# "The answer is X", "Answer: X", "the final answer is: X", "**Answer:** X", "answer = X" (not a bare "answer")
_STATEMENT = re.compile(r"\banswer\b[*_]*\s*(?:is\b[*_]*\s*[:=]?|[:=])", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
# a number: thousands grouped by commas (1,234,567) or not, a decimal part, a minus sign unless it follows a word
# character ("3-5" is 3 and 5, "x = -5" is -5)
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def cot_template(template: PromptTemplate, trigger: str | None = None) -> PromptTemplate:
    """The template whose query ends with the output prefix followed by `trigger` (if any): the chain's start."""
    if not trigger:
        return template
    prefix = f"{template.output_prefix}{template.target_delimiter}{trigger}" if template.output_prefix else trigger
    return replace(template, output_prefix=prefix)


def cot_demonstration(template: PromptTemplate, text: str, rationale: str, answer_word: str) -> str:
    """One worked example: the query, its rationale (a final period added if it has no closing punctuation), then
    "The answer is <label word>." -- the sentence `parse_cot_answer` reads first."""
    reasoning = rationale.strip()
    if reasoning and reasoning[-1] not in ".!?":
        reasoning += "."
    chain = f"{reasoning} {ANSWER_PHRASE} {answer_word}." if reasoning else f"{ANSWER_PHRASE} {answer_word}."
    return template.query(text) + template.target_delimiter + chain


def chain_stop_strings(template: PromptTemplate, *, with_demonstrations: bool = True) -> list[str]:
    """Where a generated chain ends: where the model begins another example. Always at the input prefix ("Review:",
    as lm-evaluation-harness' gsm8k-cot stops at "Q:"); with demonstrations also at the demonstration delimiter
    ("\\n\\n", as its self-consistency task does), since they show a chain as one block. A zero-shot chain is free
    to run over paragraphs (after "Let's think step by step." it often opens one)."""
    stops = [template.input_prefix.strip(), template.demo_delimiter if with_demonstrations else ""]
    return list(dict.fromkeys(s for s in stops if s))


def cut_chain(text: str, stop_strings: list[str] | tuple[str, ...]) -> str:
    """`text` up to the first occurrence of any stop string (generation stops at a token boundary, which may lie
    past the stop string)."""
    cuts = [i for s in stop_strings if (i := text.find(s)) >= 0]
    return text[: min(cuts)] if cuts else text


def _number(text: str) -> float | None:
    match = _NUMBER.fullmatch(text.strip())
    return float(match.group(0).replace(",", "")) if match else None


def _numbers(text: str) -> list[float]:
    return [float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text)]


def _label_of_number(value: float, values: list[float]) -> int:
    return values.index(value) if value in values else -1


def _number_text(value: float) -> str:
    """A number as an answer to compare: '221' for 221.0, '2.5' for 2.5."""
    return str(int(value)) if value.is_integer() else str(value)


def _statement_text(statement: str) -> str:
    """An answer statement's text to compare: lower case, one space between words, no surrounding punctuation."""
    return " ".join(statement.lower().split()).strip(" .,;:!?*_\"'`")


def _word_hits(text: str, words: list[str]) -> list[tuple[int, int, int]]:
    """(start, end, label) of every whole-word, case-insensitive occurrence of every label word in text."""
    lowered = text.lower()
    return [
        (m.start(), m.end(), label)
        for label, word in enumerate(words)
        for m in re.finditer(rf"(?<!\w){re.escape(word.strip().lower())}(?!\w)", lowered)
    ]


def _stated_answer(statement: str, words: list[str], values: list[float] | None) -> tuple[int, str]:
    """(label, answer) of an answer statement's text: with numeric label words its first number (the label of equal
    value, or -1), else the label word that occurs first in it (the longest one where two start together); an answer
    that names no label is the number, or the statement's own text."""
    if values is not None:
        numbers = _numbers(statement)
        if numbers:
            label = _label_of_number(numbers[0], values)
            return label, words[label] if label >= 0 else _number_text(numbers[0])
        return -1, _statement_text(statement)
    hits = _word_hits(statement, words)
    if hits:
        label = min(hits, key=lambda h: (h[0], -(h[1] - h[0])))[2]
        return label, words[label]
    return -1, _statement_text(statement)


def _last_statement(text: str) -> str | None:
    """The text of the last answer statement: what follows its "answer is"/"answer:" up to the end of the sentence
    or line; None when no statement is followed by a letter or digit."""
    for match in reversed(list(_STATEMENT.finditer(text))):
        rest = text[match.end() :]
        end = _SENTENCE_END.search(rest)
        statement = rest[: end.start()] if end else rest
        if re.search(r"[^\W_]", statement):  # a letter or digit: "The answer is ___." states nothing
            return statement
    return None


def parse_cot_answer(text: str, options: list[str]) -> ChainAnswer:
    """The label a generated chain concludes, the rule that read it, and the answer it gave (`ChainAnswer`).

    The rules, in order (case-insensitive; label words match as whole words):

    1. "answer_statement": the chain's last answer statement -- "The answer is X", "Answer: X", "answer = X" --
       decides. X is the rest of its sentence or line: with numeric label words (all of `options` are numbers) its
       first number (commas of thousands dropped, "12." is 12, "-3" is negative) names the label of equal value;
       else the label word that occurs first in X (the longest at one position). An X that names no label ("The
       answer is neutral.", "The answer is 13." for labels 7 and 12) gives label -1 with the answer "neutral" or
       "13": the model answered, wrongly -- `prompt_eval` counts it as an off-label answer, not a parse failure, and
       it votes under self-consistency. The last statement,
       not the first (lm-evaluation-harness' strict-match takes the first): a chain may revise its answer, and the
       stop strings already cut the examples a model invents after its own.
    2. "last_number": no answer statement, numeric label words: the last number in the chain (label -1, answered,
       if no label has its value).
    3. "last_label_word": no answer statement, label words: the label word that occurs last in the chain. Last, not
       first (unlike `PromptClassifier.parse_answer`, which reads a short answer that names its label first): a
       chain weighs the options before it concludes, and the conclusion comes last.
    4. "none": nothing to read: label -1, answer None, counted as a parse failure.
    """
    values = [v for w in options if (v := _number(w)) is not None]
    numeric = values if len(values) == len(options) else None
    statement = _last_statement(text)
    if statement is not None:
        label, answer = _stated_answer(statement, options, numeric)
        return ChainAnswer(label, ANSWER_STATEMENT, answer)
    if numeric is not None:
        numbers = _numbers(text)
        if not numbers:
            return ChainAnswer(-1, NO_ANSWER, None)
        label = _label_of_number(numbers[-1], numeric)
        return ChainAnswer(label, LAST_NUMBER, options[label] if label >= 0 else _number_text(numbers[-1]))
    hits = _word_hits(text, options)
    if hits:
        label = max(hits, key=lambda h: (h[1], h[1] - h[0]))[2]
        return ChainAnswer(label, LAST_LABEL_WORD, options[label])
    return ChainAnswer(-1, NO_ANSWER, None)


Answer = TypeVar("Answer", bound=Hashable)


def majority_vote(answers: Sequence[Answer | None]) -> Answer | None:
    """Self-consistency's answer (Wang et al. 2022): the answer most of the sampled chains reached.

    Every answer read votes, a wrong one outside the labels included (three chains answering "221" outvote one
    answering the right "361"); chains with nothing read (None) do not, and with none left the vote is None. A tie
    goes to the tied answer that appears first among the samples (the order of lm-evaluation-harness'
    `majority_vote` filter, `Counter.most_common`), so the vote agrees with the first sample whenever that sample's
    answer is among the most common.
    """
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else None


__all__ = [
    "ANSWER_PHRASE",
    "ANSWER_STATEMENT",
    "LAST_LABEL_WORD",
    "LAST_NUMBER",
    "NO_ANSWER",
    "ChainAnswer",
    "chain_stop_strings",
    "cot_demonstration",
    "cot_template",
    "cut_chain",
    "majority_vote",
    "parse_cot_answer",
]
