"""`PromptForm`: the few-shot tab's fields as one typed object, and turning it into a prompt template and
demonstrations. The field list is written once, here: a page builds its inputs and its API from it."""

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..adapt.prompts import PRESETS, PromptTemplate
from ..run.errors import InputError

DEFAULT_NEW_TOKENS = 20
DEFAULT_COT_TRIGGER = "Let's think step by step."  # zero-shot chain-of-thought (Kojima et al. 2022)
DEFAULT_PRESET = "sentiment"  # whose field and target delimiters a form borrows when its preset is unknown


def unescape(text: str) -> str:
    r"""Delimiters are typed as escapes: a literal `\n` in the field is a newline, `\t` a tab."""
    return (text or "").replace("\\n", "\n").replace("\\t", "\t")


def escape(text: str) -> str:
    r"""The inverse of `unescape`: newlines and tabs as `\n` and `\t`, to show in a one-line field."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


def table_rows(table: Any) -> list[list]:
    """The rows of a demonstrations table, which a page sends as a pandas DataFrame or a list of rows."""
    return table.values.tolist() if hasattr(table, "values") else [list(row) for row in table or []]


@dataclass(kw_only=True)
class PromptForm:
    """What the few-shot tab sends, in the order of the page's API (`/score` takes every field but the
    generation ones; `/generate` and `/reason` take them all). A new field goes at the end, with a default, so that
    callers who pass the fields positionally keep working.

    `delimiter` is escaped (`\\n\\n`); `labels` lists the label words, comma-separated (each is its own answer
    word); `demonstrations` holds [input, label] rows (a DataFrame is turned into rows). `chain_of_thought` writes
    the prompt that `/generate` continues in the chain-of-thought layout (`/reason` always does), `cot_trigger`
    (blank: none) follows the output prefix there.
    """

    GENERATION_FIELDS: ClassVar[tuple[str, ...]] = ("max_new_tokens", "temperature", "chain_of_thought", "cot_trigger")

    model: str | None
    preset: str = DEFAULT_PRESET
    instruction: str = ""
    input_prefix: str = ""
    output_prefix: str = ""
    delimiter: str = ""
    labels: str = ""
    demonstrations: list = field(default_factory=list)
    query: str = ""
    max_new_tokens: int = DEFAULT_NEW_TOKENS
    temperature: float = 0.0
    chat: bool = False
    chain_of_thought: bool = False
    cot_trigger: str = DEFAULT_COT_TRIGGER

    def __post_init__(self):
        self.demonstrations = table_rows(self.demonstrations)
        self.chat, self.chain_of_thought = bool(self.chat), bool(self.chain_of_thought)
        self.cot_trigger = str(self.cot_trigger or "").strip()
        # an API client may send anything: numbers are checked here, not deep inside generate()
        try:
            self.max_new_tokens = int(self.max_new_tokens)
            self.temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise InputError(
                f"max_new_tokens must be a whole number and temperature a number, got {self.max_new_tokens!r} and "
                f"{self.temperature!r}."
            ) from None
        if not math.isfinite(self.temperature) or self.temperature < 0:  # NaN compares False: it would decode greedily
            raise InputError(f"temperature must be a finite number >= 0 (0 decodes greedily), got {self.temperature}.")

    @classmethod
    def field_names(cls, *, generation: bool = True) -> list[str]:
        """The fields in API order; without the generation ones (max_new_tokens, temperature, chain_of_thought,
        cot_trigger) when not generating."""
        names = [f.name for f in dataclasses.fields(cls)]
        return names if generation else [n for n in names if n not in cls.GENERATION_FIELDS]

    @classmethod
    def from_values(cls, names: Sequence[str], values: Sequence) -> "PromptForm":
        """The form from a page's component values, given in the order of `names`."""
        if len(names) != len(values):
            raise TypeError(f"Expected {len(names)} values ({', '.join(names)}), got {len(values)}.")
        return cls(**dict(zip(names, values)))

    def template(self) -> tuple[PromptTemplate, list[str]]:
        """A template whose verbalizer is the label words (each label is its own word), and those words; the
        delimiter separates demonstrations, the preset gives the rest."""
        words = [w.strip() for w in (self.labels or "").split(",") if w.strip()]
        if len(words) < 2:
            raise InputError("List at least two comma-separated labels.")
        base = PRESETS.get(self.preset, PRESETS[DEFAULT_PRESET])
        template = PromptTemplate(
            verbalizer={w: w for w in words},
            instruction=self.instruction or "",
            input_prefix=self.input_prefix,
            field_delimiter=base.field_delimiter,
            output_prefix=self.output_prefix,
            target_delimiter=base.target_delimiter,
            demo_delimiter=unescape(self.delimiter) or base.demo_delimiter,
        )
        return template, words

    def examples(self, words: list[str]) -> tuple[list[str], list[int]]:
        """(texts, label ids) of the demonstration rows [input, label]; blank rows are skipped."""
        texts, labels = [], []
        for row in self.demonstrations:
            text, label = (list(row) + ["", ""])[:2]
            text, label = str(text or "").strip(), str(label or "").strip()
            if not text and not label:
                continue
            if label not in words:
                raise InputError(f"Demonstration label {label!r} is not one of the labels {words}.")
            texts.append(text)
            labels.append(words.index(label))
        return texts, labels

    def query_text(self) -> str:
        """The query, stripped; refused when blank."""
        query = str(self.query or "").strip()
        if not query:
            raise InputError("Type a query.")
        return query
