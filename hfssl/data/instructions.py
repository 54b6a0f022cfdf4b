"""Built-in instruction and preference data for post-training, made offline from what is here.

Every example is one row `{"task", "prompt", "response", "chosen", "rejected", "answer"}`: an instruction that states
the answer's required format, the right answer in that format (`response`, also `chosen`), a rejected response, and
the bare `answer` a checker compares with. Rejected responses alternate, seeded, between the two ways of being wrong
that post-training should tell apart: a wrong answer in the right format, and the right answer in the wrong format.

Tasks whose answers are checkable (`SYNTHETIC_TASKS`, generated from a seed):

    addition   "What is 347 + 586? Reply with the number only."                     -> 933
    lookup     "Here is a table: lamp=41, river=7, ... What is the value of river?"  -> 7
    reversal   "Reverse this string: kqzpe. Reply with the reversed string only."   -> epzqk
    sorting    "Sort these numbers in ascending order: 42, 7, 19, 3. ..."           -> 3, 7, 19, 42

and two real ones built from a `label<space>text` file (`../shared/data/sst2/train.txt`, `trec/train.txt`):

    sst2       "Classify the sentiment of this review as positive or negative. ..."  -> positive
    trec       "What kind of answer does this question ask for? ..."                 -> location

`instruction_data(specs, n, seed, eval_fraction)` draws n examples a task and splits each task's distinct prompts into
training and held-out ones with a seeded permutation (`hfssl.data.splits.held_out_split`, seed = --seed): a held-out
prompt never appears among the training ones. `check_response` says whether a model's response is in the required
format and whether it carries the right answer (the accuracy, format share and GRPO reward of post-training).
"""

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from ..run.errors import InputError
from .label_words import QUESTION_TYPE_WORDS, SENTIMENT_WORDS
from .labelled import load_labelled
from .splits import held_out_split

COLUMNS = ("task", "prompt", "response", "chosen", "rejected", "answer")
SYNTHETIC_TASKS = ("addition", "lookup", "reversal", "sorting")
FILE_TASKS = ("sst2", "trec")
_KEYS = ["lamp", "river", "stone", "cloud", "apple", "table", "mouse", "grass", "chair", "ocean", "piano", "tiger"]


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    wrong_answer: str  # a plausible mistake, in the required format
    misformatted: str  # the right answer, not in the required format


@dataclass(frozen=True)
class InstructionTask:
    """One task: a response is in format when it fully matches `format_pattern`; `make(rng)` draws an example of a
    synthetic task (None: the task is made from a labelled file)."""

    name: str
    format_pattern: str
    make: Callable[[random.Random], Example] | None = None


def _addition(rng: random.Random) -> Example:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    total = a + b
    slip = rng.choice([1, 10, 100]) * rng.choice([-1, 1])  # a carry dropped or added in one column
    wrong = total + slip if total + slip >= 0 else total - slip
    return Example(f"What is {a} + {b}? Reply with the number only.", str(total), str(wrong), f"{a} + {b} = {total}.")


def _lookup(rng: random.Random) -> Example:
    keys = rng.sample(_KEYS, 4)
    values = rng.sample(range(1, 100), 4)
    asked = rng.randrange(4)
    table = ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
    prompt = f"Here is a table: {table}. What is the value of {keys[asked]}? Reply with the value only."
    wrong = values[(asked + rng.randint(1, 3)) % 4]
    return Example(prompt, str(values[asked]), str(wrong), f"The value of {keys[asked]} is {values[asked]}.")


def _reversal(rng: random.Random) -> Example:
    letters = rng.sample(string.ascii_lowercase, rng.randint(4, 6))  # distinct letters: no palindromes
    text = "".join(letters)
    i = rng.randrange(len(text) - 1)
    reversed_text = text[::-1]
    wrong = reversed_text[:i] + reversed_text[i + 1] + reversed_text[i] + reversed_text[i + 2 :]  # two letters swapped
    prompt = f"Reverse this string: {text}. Reply with the reversed string only."
    return Example(prompt, reversed_text, wrong, f"The reversed string is {reversed_text}.")


def _sorting(rng: random.Random) -> Example:
    numbers = rng.sample(range(100), rng.randint(4, 5))
    ordered = sorted(numbers)
    if numbers == ordered:
        numbers.reverse()
    shown = ", ".join(map(str, numbers))
    wrong = ", ".join(map(str, sorted(numbers, reverse=True)))
    prompt = f"Sort these numbers in ascending order: {shown}. Reply with the numbers separated by commas."
    answer = ", ".join(map(str, ordered))
    return Example(prompt, answer, wrong, f"The sorted numbers are {answer}.")


TASKS: dict[str, InstructionTask] = {
    "addition": InstructionTask("addition", r"\d+", _addition),
    "lookup": InstructionTask("lookup", r"\d+", _lookup),
    "reversal": InstructionTask("reversal", r"[a-z]+", _reversal),
    "sorting": InstructionTask("sorting", r"\d+(, \d+)*", _sorting),
    "sst2": InstructionTask("sst2", "|".join(sorted(set(SENTIMENT_WORDS.values())))),
    "trec": InstructionTask("trec", "|".join(sorted(QUESTION_TYPE_WORDS.values()))),
}


def _labelled_examples(task: str, path: str, n: int, rng: random.Random) -> list[Example]:
    """n examples of SST-2 or TREC (a `label text` file or any table `load_labelled` reads), drawn without repeats."""
    data = load_labelled(path)
    if task == "trec":
        data = data.merged_by_key(":")
        words, prompt = (
            QUESTION_TYPE_WORDS,
            (
                "What kind of answer does this question ask for? Reply with one word: "
                + ", ".join(sorted(QUESTION_TYPE_WORDS.values()))
                + ".\nQuestion: {}"
            ),
        )
    else:
        words = SENTIMENT_WORDS
        prompt = "Classify the sentiment of this review as positive or negative. Reply with one word.\nReview: {}"
    unknown = sorted(set(data.names) - set(words))
    if unknown:
        raise InputError(f"{data.name}: labels {unknown} are not {task} labels (expected {sorted(words)}).")
    choices = sorted(set(words.values()))
    first_of_text: dict[str, int] = {}  # a text the file repeats (SST-2 and TREC do) is one example, its first row's
    for row, text in enumerate(data.inputs):
        first_of_text.setdefault(str(text).strip(), row)
    rows = rng.sample(sorted(first_of_text.values()), min(n, len(first_of_text)))
    examples = []
    for row in rows:
        answer = words[data.names[int(data.labels[row])]]
        wrong = rng.choice([c for c in choices if c != answer])
        text = str(data.inputs[row]).strip()
        examples.append(Example(prompt.format(text), answer, wrong, f"The answer is {answer}."))
    return examples


def parse_task_specs(specs: list[str]) -> dict[str, str | None]:
    """["addition", "sst2=../shared/data/sst2/train.txt"] -> {"addition": None, "sst2": "../shared/..."}."""
    parsed: dict[str, str | None] = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if name not in TASKS:
            raise InputError(f"Unknown instruction task {name!r}; the built-in ones are {', '.join(TASKS)}.")
        if name in parsed:
            raise InputError(f"Instruction task {name!r} is named twice.")
        if name in FILE_TASKS and not path:
            raise InputError(f"Instruction task {name} is made from a labelled file: give {name}=PATH.")
        if name in SYNTHETIC_TASKS and path:
            raise InputError(f"Instruction task {name} is generated, not read: drop '={path}'.")
        if path and not Path(path).expanduser().exists():
            raise InputError(f"Instruction task {name}: file not found: {path}")
        parsed[name] = path or None
    return parsed


def _examples(name: str, path: str | None, n: int, rng: random.Random) -> list[Example]:
    if path is not None:
        return _labelled_examples(name, path, n, rng)
    make = TASKS[name].make
    assert make is not None  # parse_task_specs gave every file task its path
    seen: dict[str, Example] = {}
    for _ in range(20 * n):  # distinct prompts: a repeat would sit on both sides of the split
        example = make(rng)
        seen.setdefault(example.prompt, example)
        if len(seen) == n:
            break
    return list(seen.values())


def _row(name: str, example: Example, rng: random.Random) -> dict[str, str]:
    rejected = example.wrong_answer if rng.random() < 0.5 else example.misformatted
    return {
        "task": name,
        "prompt": example.prompt,
        "response": example.answer,
        "chosen": example.answer,
        "rejected": rejected,
        "answer": example.answer,
    }


def instruction_data(
    specs: list[str], n: int, seed: int, eval_fraction: float
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training rows, held-out rows) of every task in `specs` (`parse_task_specs`): n examples a task, each task's
    split by `held_out_split(n_task, eval_fraction, seed)`. The same arguments always give the same rows."""
    if n < 2:
        raise InputError(f"--examples_per_task must be at least 2 (one to train on, one held out), got {n}.")
    train: list[dict[str, str]] = []
    held_out: list[dict[str, str]] = []
    for index, (name, path) in enumerate(parse_task_specs(specs).items()):
        rng = random.Random(f"{seed}-{name}-{index}")
        examples = _examples(name, path, n, rng)
        rows = [_row(name, e, rng) for e in examples]
        train_ids, eval_ids = held_out_split(len(rows), eval_fraction, seed)
        train += [rows[i] for i in sorted(train_ids)]
        held_out += [rows[i] for i in sorted(eval_ids)]
    as_dataset = lambda rows: datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS})  # noqa: E731
    return as_dataset(train), as_dataset(held_out)


@dataclass(frozen=True)
class Check:
    formatted: bool  # the whole response (stripped) matches the task's required format
    correct: bool  # the response carries the right answer (in the required format or not)


# an unformatted response's answer: its last number, list of numbers or word (the rule of "the answer is N" parsers:
# echoing a prompt that shows several candidates does not count); a class word only when it names one class
_NUMBER = r"(?<![\w.,\-])\d+(?!\w|[.,]\d)"  # not part of 4.5, -4, 1,245 or 933a
_CANDIDATES = {"addition": _NUMBER, "lookup": _NUMBER, "sorting": rf"{_NUMBER}(?:, {_NUMBER})*", "reversal": r"[a-z]+"}


def check_response(task: str, response: str, answer: str) -> Check:
    """Whether `response` is in `task`'s required format, and whether it carries `answer`. Formatted: the whole
    response is the answer. Not formatted, in its first line: the last number (addition, lookup; "1,245" and "4.5"
    are not read), the last list of numbers (sorting) or the last word made of the answer's letters (reversal) is the
    answer; for SST-2 and TREC, the answer is the one class word there ("It is positive." is right but not
    formatted; "positive or negative" is neither)."""
    if task not in TASKS:
        raise InputError(f"Unknown instruction task {task!r}; the built-in ones are {', '.join(TASKS)}.")
    text = response.strip()
    if re.fullmatch(TASKS[task].format_pattern, text):
        return Check(formatted=True, correct=text == answer)
    first_line = text.splitlines()[0] if text else ""
    if task in _CANDIDATES:
        found = re.findall(_CANDIDATES[task], first_line)
        if task == "reversal":  # the words made of the answer's letters ("epzqk is the answer": epzqk)
            found = [word for word in found if sorted(word) == sorted(answer)]
        return Check(formatted=False, correct=bool(found) and found[-1] == answer)
    words = set(re.findall(r"[a-z]+", first_line.lower())) & set(TASKS[task].format_pattern.split("|"))
    return Check(formatted=False, correct=words == {answer})


def check_checkable(rows: datasets.Dataset, name: str) -> None:
    """InputError unless every row has a built-in `task` and a non-empty text `answer` (what `check_response` needs)."""
    missing = [c for c in ("task", "answer") if c not in rows.column_names]
    if missing:
        raise InputError(f"{name} has no {missing} column(s) for the checkable reward: pass a reward model.")
    for row, (task, answer) in enumerate(zip(rows["task"], rows["answer"], strict=True), start=1):
        if task not in TASKS:
            raise InputError(
                f"{name}, row {row}: task {task!r} has no checker; the built-in ones are {', '.join(TASKS)}."
            )
        if not isinstance(answer, str) or not answer.strip():
            raise InputError(f"{name}, row {row}: 'answer' must be non-empty text, got {answer!r}.")
