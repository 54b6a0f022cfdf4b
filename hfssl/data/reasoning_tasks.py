"""Seeded generators of reasoning tasks whose answers can be checked, each with a worked rationale.

Every example is a dict `{"text": question, "label": answer, "rationale": worked steps}`, the columns that
`load_labelled` and `scripts/prompt_eval.py --chain_of_thought` read. A chain-of-thought demonstration is written
"<rationale> The answer is <label>.", so every rationale ends with the computation that yields its label:

    multi_digit_addition       "What is 347 + 586?"  7 + 6 = 13, write 3 carry 1; ... So 347 + 586 = 933.  -> 933
    two_step_arithmetic        word problems of two operations: "5 x 3 = 15. 12 + 15 = 27."               -> 27
    last_letter_concatenation  Wei et al. (2022)'s task on names: "... Concatenating them gives ng."       -> ng

Nothing is downloaded: numbers, templates and names are built in. The same (task, n, seed, params) always gives
the same rows (`make_reasoning_dataset`); `write_reasoning_file` writes them as JSONL for `--dataset`.
"""

import inspect
import json
import random
from collections.abc import Callable
from pathlib import Path

import datasets

from ..run.errors import InputError

Example = dict[str, str]

# Common first and last names; every one ends in a lowercase letter.
FIRST_NAMES = [
    "Alan", "Ada", "Grace", "John", "Mary", "James", "Linda", "Robert", "Susan", "David", "Karen", "Maria",
    "Thomas", "Nancy", "Daniel", "Lisa", "Paul", "Emma", "Mark", "Sarah", "Steven", "Laura", "Kevin", "Helen",
]  # fmt: skip
LAST_NAMES = [
    "Turing", "Lovelace", "Hopper", "Smith", "Johnson", "Brown", "Miller", "Davis", "Garcia", "Wilson", "Moore",
    "Taylor", "Clark", "Lewis", "Walker", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson",
]  # fmt: skip
# (name, subject pronoun) for the word problems.
PEOPLE = [("Tom", "he"), ("Anna", "she"), ("Sam", "he"), ("Lucy", "she"), ("Omar", "he"), ("Mia", "she")]
ITEMS = ["apples", "marbles", "stickers", "cookies", "pencils", "cards"]


def _require_positive(name: str, value: int) -> None:
    if value < 1:
        raise InputError(f"{name} must be at least 1, got {value}.")


def _column_steps(a: int, b: int) -> list[str]:
    """Column-wise addition of a and b, right to left: "7 + 6 = 13, write 3 carry 1" per column."""
    steps, carry = [], 0
    xs, ys = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(xs), len(ys))):
        x, y = int(xs[i]) if i < len(xs) else 0, int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        terms = f"{x} + {y}" + (f" + {carry}" if carry else "")
        carry = total // 10
        steps.append(f"{terms} = {total}, write {total % 10}" + (f" carry {carry}" if carry else ""))
    if carry:
        steps.append(f"write the carry {carry}")
    return steps


def multi_digit_addition(rng: random.Random, digits: int = 3) -> Example:
    """ "What is a + b?" for two numbers of `digits` digits; the rationale adds column by column."""
    _require_positive("digits", digits)
    a, b = (rng.randint(10 ** (digits - 1), 10**digits - 1) for _ in range(2))
    steps = "; ".join(_column_steps(a, b))
    return {"text": f"What is {a} + {b}?", "label": str(a + b), "rationale": f"{steps}. So {a} + {b} = {a + b}."}


def _buys(rng: random.Random) -> tuple[str, str, int]:
    (name, he), item = rng.choice(PEOPLE), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 30), rng.randint(2, 9), rng.randint(2, 9)
    text = (
        f"{name} has {a} {item}. {he.capitalize()} buys {b} bags of {c} {item} each. "
        f"How many {item} does {he} have now?"
    )
    return text, f"{b} x {c} = {b * c}. {a} + {b * c} = {a + b * c}.", a + b * c


def _gives(rng: random.Random) -> tuple[str, str, int]:
    (name, he), item = rng.choice(PEOPLE), rng.choice(ITEMS)
    b, c = rng.randint(2, 9), rng.randint(2, 9)
    a = b * c + rng.randint(1, 30)
    text = (
        f"{name} has {a} {item}. {he.capitalize()} gives {b} {item} to each of {c} friends. "
        f"How many {item} does {he} have left?"
    )
    return text, f"{b} x {c} = {b * c}. {a} - {b * c} = {a - b * c}.", a - b * c


def _sells(rng: random.Random) -> tuple[str, str, int]:
    item = rng.choice(ITEMS)
    b, c = rng.randint(2, 12), rng.randint(2, 12)
    a = rng.randint(1, b * c - 1)
    text = f"A shop has {c} boxes with {b} {item} in each. It sells {a} {item}. How many {item} are left?"
    return text, f"{c} x {b} = {b * c}. {b * c} - {a} = {b * c - a}.", b * c - a


def _shares(rng: random.Random) -> tuple[str, str, int]:
    (name, _), item = rng.choice(PEOPLE), rng.choice(ITEMS)
    c, q, b = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    text = (
        f"{name} shares {c * q} {item} equally among {c} friends. One friend then finds {b} more {item}. "
        f"How many {item} does that friend have?"
    )
    return text, f"{c * q} / {c} = {q}. {q} + {b} = {q + b}.", q + b


def _reads(rng: random.Random) -> tuple[str, str, int]:
    name, he = rng.choice(PEOPLE)
    b, c, a = rng.randint(5, 40), rng.randint(2, 9), rng.randint(1, 50)
    text = f"{name} reads {b} pages a day for {c} days, then {a} more pages. How many pages has {he} read in all?"
    return text, f"{b} x {c} = {b * c}. {b * c} + {a} = {b * c + a}.", b * c + a


# Each template draws (question, rationale "p op q = r. r op s = answer.", answer).
TEMPLATES: list[Callable[[random.Random], tuple[str, str, int]]] = [_buys, _gives, _sells, _shares, _reads]


def two_step_arithmetic(rng: random.Random) -> Example:
    """A word problem of two operations from one of TEMPLATES; the rationale shows both."""
    text, rationale, answer = rng.choice(TEMPLATES)(rng)
    return {"text": text, "label": str(answer), "rationale": rationale}


def last_letter_concatenation(rng: random.Random, words: int = 2) -> Example:
    """Wei et al. (2022)'s last-letter concatenation on a name of `words` words: first names, then a last name."""
    _require_positive("words", words)
    names = [rng.choice(FIRST_NAMES) for _ in range(words - 1)] + [rng.choice(LAST_NAMES)]
    phrase, letters = " ".join(names), "".join(w[-1] for w in names)
    steps = " ".join(f"The last letter of {w} is {w[-1]}." for w in names)
    return {
        "text": f'Take the last letters of the words in "{phrase}" and concatenate them.',
        "label": letters,
        "rationale": f"{steps} Concatenating them gives {letters}.",
    }


REASONING_TASKS: dict[str, Callable[..., Example]] = {
    "multi_digit_addition": multi_digit_addition,
    "two_step_arithmetic": two_step_arithmetic,
    "last_letter_concatenation": last_letter_concatenation,
}


def reasoning_examples(task: str, n: int, seed: int, **params: int) -> list[Example]:
    """n examples of `task`; the same (task, n, seed, params) always gives the same examples."""
    if task not in REASONING_TASKS:
        raise InputError(f"Unknown reasoning task {task!r}; the known ones are {sorted(REASONING_TASKS)}.")
    _require_positive("n", n)
    generate = REASONING_TASKS[task]
    try:
        inspect.signature(generate).bind(None, **params)
    except TypeError:
        known = [p for p in inspect.signature(generate).parameters if p != "rng"]
        raise InputError(f"{task} takes the parameters {known}, got {sorted(params)}.") from None
    rng = random.Random(seed)
    return [generate(rng, **params) for _ in range(n)]


def make_reasoning_dataset(task: str, n: int, seed: int, **params: int) -> datasets.Dataset:
    """n examples of `task` in text/label/rationale columns."""
    rows = reasoning_examples(task, n, seed, **params)
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in ("text", "label", "rationale")})


def write_reasoning_file(
    task: str, path: str | Path, n: int, seed: int, *, overwrite: bool = False, **params: int
) -> Path:
    """Write n examples of `task` to `path` as JSONL (one {"text", "label", "rationale"} object a line).

    An existing file is refused unless `overwrite`; the examples are drawn before anything is written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: pass overwrite=True to replace it, or choose another path.")
    rows = reasoning_examples(task, n, seed, **params)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


__all__ = [
    "REASONING_TASKS",
    "last_letter_concatenation",
    "make_reasoning_dataset",
    "multi_digit_addition",
    "reasoning_examples",
    "two_step_arithmetic",
    "write_reasoning_file",
]
