"""Arguments every entry point shares, the checks they all use, and the one command-line parser.

Each entry point has one arguments dataclass that is valid when constructed: defaults and checks live in
`__post_init__` (as in transformers' `TrainingArguments` and peft's configs) and every field has help. So the Python
API and the command line build the same, checked object: `FinetuneArguments(model_name_or_path=..., dataset=...)`
or `parse_cli(FinetuneArguments, argv)`.

`parse_cli` is the only place in hfssl that reads a command line: `HfArgumentParser` flags, plus
`--config recipe.yaml`, whose keys are any of the flags' names (flags on the command line win).
"""

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

import yaml
from transformers import HfArgumentParser

from .errors import InputError, MissingFileError
from .model_source import model_source

if TYPE_CHECKING:
    from transformers.hf_argparser import DataClassType

T = TypeVar("T")


# ---- checks shared by every arguments class ------------------------------------------------------------------
def require_positive(args, *names: str) -> None:
    """ValueError naming the first flag among `names` whose value is not > 0 (None counts as unset: allowed)."""
    for name in names:
        value = getattr(args, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(v is not None and v <= 0 for v in values):
            raise InputError(f"--{name} must be > 0, got {value}.")


def require_non_negative(args, *names: str) -> None:
    """ValueError naming the first flag among `names` whose value is < 0."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 0:
            raise InputError(f"--{name} must be >= 0, got {value}.")


def require_fraction(args, name: str, *, low_open: bool = False, high_open: bool = True) -> None:
    """ValueError unless 0 <= value <= 1 (with open ends as asked): e.g. [0, 1) for a held-out fraction."""
    value = getattr(args, name)
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise InputError(f"--{name} must be in {interval}, got {value}.")


def require_choice(args, name: str, choices) -> None:
    value = getattr(args, name)
    if value not in choices:
        raise InputError(f"--{name} must be one of {', '.join(map(str, choices))}, got {value!r}.")


def check_repo_id(repo_id: str, flag: str) -> None:
    """InputError naming `flag` unless `repo_id` is a repository id the Hub accepts, by huggingface_hub's own rules
    (`name` or `namespace/name`; letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters): checked when
    the arguments are built, so neither a dry run nor hours of training end in an id no push can use."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # exported lazily: mypy sees none

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        reason = str(err).replace(" Use `repo_type` argument if needed.", "")
        raise InputError(f"{flag} {repo_id!r} is not a Hub repository id: {reason}") from None


# ---- the fields every entry point shares ---------------------------------------------------------------------
@dataclass(kw_only=True)
class ModelSourceArguments:
    """The GGUF half of naming a pretrained model (mixed into every arguments class with --model_name_or_path)."""

    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "A llama.cpp GGUF checkpoint: the file's name inside --model_name_or_path (a folder or Hub "
            "repository). A path ending in .gguf as --model_name_or_path works too. Needs hfssl[gguf]."
        },
    )
    if TYPE_CHECKING:  # each class this is mixed into declares it, with its own default and help
        model_name_or_path: str | None

    @property
    def source(self):
        """Where the pretrained model comes from (a `ModelSource`); None without one."""
        return model_source(self.model_name_or_path, self.gguf_file) if self.model_name_or_path else None

    def check_model_source(self) -> None:
        if self.gguf_file and not self.model_name_or_path:
            raise InputError("--gguf_file names a file inside --model_name_or_path: give that folder or Hub id too.")


@dataclass(kw_only=True)
class LoraArguments:
    """The LoRA flags (peft) of every script that trains adapters: fine-tuning and post-training."""

    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: peft's, or hfssl's, for the model type)."}
    )

    def check_lora(self) -> None:
        require_positive(self, "lora_r", "lora_alpha")
        require_fraction(self, "lora_dropout")


@dataclass(kw_only=True)
class HubArguments:
    """The push flags of every script that saves a model."""

    push_to_hub: bool = field(default=False, metadata={"help": "Push the saved model to the Hub at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository id (user/name) for --push_to_hub."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repository as private."})
    hub_adapter_only: bool = field(default=False, metadata={"help": "Push a LoRA adapter without merging it."})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise InputError("--push_to_hub needs --hub_model_id user/name.")
        if self.hub_model_id is not None:
            check_repo_id(self.hub_model_id, "--hub_model_id")


@dataclass(kw_only=True)
class RunArguments(HubArguments):
    """What every run that writes a folder has: where, with which seed, and whether it may replace an earlier run."""

    # settings a resumed run may change (hfssl.run.resume): they do not change what the run computes
    RESUME_SAFE: ClassVar[frozenset] = frozenset(
        {
            "output_dir",
            "overwrite_output_dir",
            "resume_from_checkpoint",
            "push_to_hub",
            "hub_model_id",
            "hub_private_repo",
            "hub_adapter_only",
        }
    )

    # arguments added after checkpoints were written, with the value those runs had (hfssl.run.resume)
    ADDED_ARGUMENTS: ClassVar[dict] = {}

    output_dir: str = field(default="outputs/run", metadata={"help": "Where the model, metrics and checkpoints go."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, data order, splits and sampling."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the model or checkpoints of an earlier run in --output_dir (they are set aside)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not str(self.output_dir).strip():
            raise InputError("--output_dir must name a folder.")

    def to_dict(self) -> dict:
        """The arguments as JSON-ready values (what run_args.json and metrics.json record)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# ---- the one command-line parser -----------------------------------------------------------------------------
def flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` in argv (`--flag value` or `--flag=value`), else None."""
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


def read_recipe(argv: list[str]) -> dict:
    """The YAML recipe named by `--config` in argv ({} when there is none). Errors name the file."""
    spec = flag_value(argv, "--config")
    if spec is None:
        if "--config" in argv:
            raise InputError("--config needs a YAML file path.")
        return {}
    path = Path(spec)
    if not path.is_file():
        raise MissingFileError(f"Recipe file not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise InputError(f"Recipe {path} is not valid YAML{where}: {getattr(err, 'problem', err)}.") from None
    except UnicodeDecodeError as err:
        raise InputError(f"Recipe {path} is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise InputError(f"Recipe {path} must be a mapping of flag names to values, got {type(recipe).__name__}.")
    return recipe


def _accepts(annotation, value) -> bool:
    """Whether a YAML value fits a dataclass field's annotation (int for float is fine; bool is not an int)."""
    if value is None:
        return type(None) in typing.get_args(annotation) or annotation is type(None)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation) if a is not type(None))
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (object,)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    return True


def check_recipe(recipe: dict, cls: type, source: str) -> None:
    """ValueError for a key that is no flag of `cls`, or a value of the wrong type, naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(recipe) - set(fields))
    if unknown:
        raise InputError(f"Unknown keys in recipe {source}: {unknown}.")
    hints = typing.get_type_hints(cls)
    for key, value in recipe.items():
        if not _accepts(hints[key], value):
            raise InputError(
                f"Recipe {source}: {key} must be {_describe(hints[key])}, got {value!r} ({type(value).__name__})."
            )


def _describe(annotation) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


class _OnceParser(HfArgumentParser):
    """HfArgumentParser that refuses a flag given twice (argparse keeps the last value, silently): `--max_steps 3
    --max-steps 4`, `--widths 8 --widths 16`, `--shuffle --no_shuffle`. A flag counts once however many values it takes
    (`--resnet_widths 32 64`), and whichever spelling or `--flag=value` form; a `--config` recipe value is no flag."""

    _given: dict[str, str]  # dest -> the flag that first set it, during one parse

    def parse_known_args(self, args=None, namespace=None):
        self._given = {}
        return super().parse_known_args(args, namespace)

    def _get_values(self, action, arg_strings):
        if action.option_strings:  # called once per flag on the command line, never for a default
            flag, first = action.option_strings[0], self._given.get(action.dest)
            if first == flag:
                raise InputError(f"{flag} is given twice: give it once (the last value would silently win).")
            if first is not None:  # --shuffle and --no_shuffle: one setting, two flags
                raise InputError(f"{first} and {flag} are both given: give one of them (the last would silently win).")
            self._given[action.dest] = flag
        return super()._get_values(action, arg_strings)


def parse_cli(cls: type[T], argv: list[str] | None = None) -> T:
    """Parse `argv` (default sys.argv[1:]) into `cls`; `--config FILE.yaml` supplies defaults that flags override.

    The dataclass's `__post_init__` checks the result, so what comes back is a valid configuration.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _OnceParser(cast("DataClassType", cls))
    parser.add_argument("--config", default=None, help="YAML recipe whose keys are any of these flags' names.")
    recipe = read_recipe(argv)
    check_recipe(recipe, cls, flag_value(argv, "--config") or "")
    parser.set_defaults(**recipe)
    for action in parser._actions:  # a recipe may supply what the command line would otherwise have to
        if action.dest in recipe:
            action.required = False
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    args, remaining = outputs[0], outputs[-1]
    if remaining:
        raise InputError(f"Unrecognised arguments: {remaining}")
    return args
