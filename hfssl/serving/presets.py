"""The playground's prompt presets: example demonstrations and a query for each of `hfssl.adapt.prompts.PRESETS`
used by the page, with a note on what the preset needs from a model and what was measured."""

import dataclasses
from dataclasses import dataclass

from ..adapt.prompts import PRESETS
from ..run.errors import InputError
from .prompt_form import PromptForm, escape

# preset -> (demonstrations, query); label words are the verbalizer (one per label)
EXAMPLES = {
    "sentiment": (
        [
            ["a gripping, beautifully acted film", "positive"],
            ["dull and far too long", "negative"],
            ["a warm and funny story", "positive"],
            ["the plot makes no sense", "negative"],
        ],
        "an honest, moving portrait",
    ),
    "question_type": (
        [
            ["How far is the moon from the earth?", "number"],
            ["Who wrote Hamlet?", "person"],
            ["Where is the Eiffel Tower?", "location"],
            ["What does NASA stand for?", "abbreviation"],
        ],
        "Who painted the Mona Lisa?",
    ),
    "topic": (
        [
            ["The central bank raised interest rates again.", "business"],
            ["The striker scored twice in the final.", "sports"],
            ["A new chip doubles battery life of phones.", "technology"],
            ["Leaders met to discuss the border treaty.", "world"],
        ],
        "Shares fell after the earnings report.",
    ),
    # the `key value` lines of hfssl.data.synthetic (the default run's in-context warm-up); the query's key
    # appears in the demonstrations, so a model that copies from its context answers "blue"
    "key_value": (
        [["q", "red"], ["w", "blue"], ["e", "gold"], ["r", "pink"], ["w", "blue"], ["q", "red"], ["r", "pink"]],
        "w",
    ),
}

# What each preset needs from a model, with what was measured (docs/real-models.md, docs/prompting.md "Learning
# check: does in-context learning emerge here?", docs/demo.md). SmolLM2 numbers: scripts/prompt_eval.py on 200
# held-out queries, 3 draws of 4 demonstrations, mean over draws; raw / contextually calibrated.
_HERE = (
    "Models pretrained here for minutes answer it at chance (SST-2 k-shot: 0.48-0.49): their raw bars show a "
    "label bias."
)
PRESET_NOTES = {
    "sentiment": (
        "**Sentiment** needs a model that knows English. Measured on SmolLM2-135M-Instruct "
        "(`reference/SmolLM2-135M-Instruct`, 200 held-out SST-2 sentences): 0.79 at 0 shots, 0.76 raw / 0.81 "
        "calibrated with 4 demonstrations; with the chat template on, lower: 0.65 and 0.53 / 0.61. " + _HERE
    ),
    "question_type": (
        "**Question type** (TREC's 6 coarse classes, chance 0.17) needs a model that knows English. Measured on "
        "SmolLM2-135M-Instruct (200 held-out TREC questions): 0.29 raw / 0.38 calibrated at 0 shots, 0.43 / 0.48 "
        "with 4 demonstrations; with the chat template 0.40 / 0.35 and 0.34 / 0.32. " + _HERE
    ),
    "topic": (
        "**Topic** (AG News classes) needs a model that knows English and news; not measured here (no AG News copy "
        "offline). " + _HERE
    ),
    "key_value": (
        "**Key -> value**: the values are arbitrary, so only the demonstrations tell them: the model "
        "must copy from its context (induction). The README's default model (`gpt-stdlib`, trained with "
        "the in-context warm-up) is right 69% of the time with 4 demonstrations and 85% with 8 on "
        "held-out mappings (chance 12.5%; the query's key is among 8 random lines 90% of the time). "
        "Here every key of the query is in the demonstrations."
    ),
}
# the preset the page opens on: the one the default model answers from its context
FIRST_PRESET = "key_value"


@dataclass(frozen=True, kw_only=True)
class Preset:
    """What choosing a preset fills in: the `PromptForm` fields of the same names, and the note shown beside."""

    name: str
    input_prefix: str
    output_prefix: str
    delimiter: str  # escaped, as the form's field holds it
    labels: str
    demonstrations: list
    query: str
    note: str

    @classmethod
    def filled_fields(cls) -> list[str]:
        """The `PromptForm` fields a preset fills, in this class's order."""
        form_fields = set(PromptForm.field_names())
        return [f.name for f in dataclasses.fields(cls) if f.name in form_fields]

    def form(self, model: str | None, **changes) -> PromptForm:
        """The form this preset fills, for `model`, with `changes` to any field."""
        filled = {name: getattr(self, name) for name in self.filled_fields()}
        return PromptForm(**{"model": model, "preset": self.name, **filled, **changes})


def preset(name: str) -> Preset:
    """The fields preset `name` fills; an unknown name is refused with the known ones."""
    if name not in EXAMPLES:
        raise InputError(f"Unknown preset {name!r}; choose one of {', '.join(EXAMPLES)}.")
    template = PRESETS[name]
    rows, query = EXAMPLES[name]
    if template.verbalizer:
        words = sorted(set(template.verbalizer.values()))
    else:  # key -> value: the values of the demonstrations, in order of appearance
        words = list(dict.fromkeys(label for _, label in rows))
    return Preset(
        name=name,
        input_prefix=template.input_prefix,
        output_prefix=template.output_prefix,
        delimiter=escape(template.demo_delimiter),
        labels=", ".join(words),
        demonstrations=[list(row) for row in rows],
        query=query,
        note=PRESET_NOTES[name],
    )
