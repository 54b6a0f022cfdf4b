"""Typed results of every run, and the one schema of `metrics.json`.

`run_pretraining`, `run_linear_probe`, `run_finetune`, `run_meta_training` and `run_prompt_eval` each return one of
these dataclasses. The same object is what `metrics.json` (or prompt_eval's `--output_file`) holds, written by
`save_result` and read back by `load_result`, and what the model card reads (`eval_results`): a renamed field is a
type error here, not a silently empty card.

A file's `kind` says which class it holds; files written before results were typed have no `kind`, and
`load_result` recognises them by the keys each kind always had.
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from huggingface_hub import EvalResult

from .errors import InputError

METRICS_FILE = "metrics.json"
SCHEMA_VERSION = 1


def _entry(task: str, dataset: str, split: str, metric_type: str, metric_name: str, value: float) -> EvalResult:
    """One model-index entry: `metric_name` = `value` (4 decimals) for `task` on `dataset` (`split`)."""
    return EvalResult(
        task_type=task,
        dataset_type=Path(dataset).stem or dataset,
        dataset_name=dataset,
        dataset_split=split,
        metric_type=metric_type,
        metric_name=metric_name,
        metric_value=round(float(value), 4),
    )


@dataclass(kw_only=True)
class RunResult:
    """What every run records: the arguments it ran with (JSON values)."""

    kind: ClassVar[str] = "run"
    args: dict = field(default_factory=dict)
    # not a field (no annotation), an instance attribute: True on results read from files written before results were
    # typed (result_from_dict sets it)
    legacy = False

    @property
    def dataset(self) -> str | None:
        """The data the scores below were measured on."""
        return self.args.get("eval_dataset") or self.args.get("dataset")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "schema": SCHEMA_VERSION, **asdict(self)}

    def eval_results(self) -> list[EvalResult]:
        """The model-index entries of a model card."""
        return []


@dataclass(kw_only=True)
class PretrainResult(RunResult):
    """A pretraining run: held-out metrics at the end (`final`), the logged history, and the closing report."""

    kind: ClassVar[str] = "pretraining"
    objective: str = ""
    task: str = "text-generation"  # the saved model's pipeline task: or fill-mask, image-feature-extraction
    output_dir: str = ""
    global_step: int = 0
    final: dict[str, float] = field(default_factory=dict)
    log_history: list[dict] = field(default_factory=list)
    report: str = ""

    def eval_results(self) -> list[EvalResult]:
        if not self.dataset:
            return []
        held_out = "its --eval_dataset" if self.args.get("eval_dataset") else "a held-out part of the data"
        return [
            _entry(self.task, self.dataset, held_out, key, f"{key} (pretraining)", value)
            for key, value in self.final.items()
            if isinstance(value, (int, float))
        ]


@dataclass(kw_only=True)
class AdaptationResult(RunResult):
    """A labelled task learned by a linear probe or fine-tuning (full, LP-FT, surgical, LoRA)."""

    kind: ClassVar[str] = "adaptation"
    method: str
    task: str = "text-classification"  # or image-classification
    accuracy: float
    macro_f1: float
    num_train: int
    num_eval: int
    num_labels_per_class: int | None = None
    labels: list[str] = field(default_factory=list)
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    changed_parameters: list[str] = field(default_factory=list)
    feature_cache_hits: int | None = None
    saved: str | None = None  # what was saved: a classifier class name, "probe_head", "adapter", "model"

    def eval_results(self) -> list[EvalResult]:
        if not self.dataset:
            return []
        split = "validation" if self.args.get("eval_dataset") else "held-out part of the training file"
        return [
            _entry(
                self.task,
                self.dataset,
                split,
                "f1" if metric == "macro_f1" else metric,
                f"{metric} ({self.method})",
                getattr(self, metric),
            )
            for metric in ("accuracy", "macro_f1")
        ]


@dataclass(kw_only=True)
class MultitaskResult(RunResult):
    """One encoder fine-tuned on several tasks (`finetune.py --tasks`): tasks[name] holds the task's dataset,
    accuracy, macro_f1, num_train, num_eval, labels, sampling_probability, steps and loss_weight; each task's own
    AdaptationResult is in OUTPUT_DIR/<name>/metrics.json beside its model."""

    kind: ClassVar[str] = "multitask"
    method: str
    task: str = "text-classification"
    task_sampling: str = "proportional"
    loss_weighting: str = "fixed"
    tasks: dict[str, dict] = field(default_factory=dict)
    log_history: list[dict] = field(default_factory=list)

    def eval_results(self) -> list[EvalResult]:
        split = "held-out part of the training file"
        return [
            _entry(
                self.task,
                scores["dataset"],
                split,
                "f1" if metric == "macro_f1" else metric,
                f"{name} {metric} (multi-task {self.method})",
                scores[metric],
            )
            for name, scores in self.tasks.items()
            for metric in ("accuracy", "macro_f1")
        ]


@dataclass(kw_only=True)
class MetaTestScore:
    accuracy: float
    ci95: float  # half-width of the normal 95% confidence interval over episodes
    episodes: int


@dataclass(kw_only=True)
class MetaResult(RunResult):
    """Meta-training on N-way K-shot episodes, scored on meta-test episodes per shot setting."""

    kind: ClassVar[str] = "meta_learning"
    method: str = "meta-learning"
    algorithm: str = ""
    engine: str = ""
    task: str = "image-classification"  # or text-classification
    meta_test: dict[str, MetaTestScore]
    history: list[dict] = field(default_factory=list)
    meta_steps: int = 0
    train_minutes: float = 0.0
    num_meta_train_classes: int = 0

    def __post_init__(self):
        self.meta_test = {
            k: v if isinstance(v, MetaTestScore) else MetaTestScore(**v) for k, v in self.meta_test.items()
        }

    def eval_results(self) -> list[EvalResult]:
        dataset = self.dataset or "episodes"
        return [
            _entry(
                self.task,
                dataset,
                "meta-test classes",
                "accuracy",
                f"{setting} accuracy (meta-test, +- {100 * score.ci95:.1f} pts 95% CI, {score.episodes} episodes)",
                score.accuracy,
            )
            for setting, score in self.meta_test.items()
        ]


@dataclass(kw_only=True)
class PromptEvalResult(RunResult):
    """Zero-/few-shot accuracy per number of demonstrations k: shots[k][metric] = {"mean", "std", "runs"}.

    With chain-of-thought, chains[k] holds what the model wrote for the first queries of the first draw (query,
    gold, prediction, chains, answers, rules, num_tokens); without it there is no `chains` key in the file.
    """

    kind: ClassVar[str] = "prompt_eval"
    model: str = ""
    num_queries: int = 0
    num_pool: int = 0
    label_words: dict[str, str] = field(default_factory=dict)
    chance: float = 0.0
    shots: dict[str, dict[str, dict]] = field(default_factory=dict)
    chains: dict[str, list[dict]] = field(default_factory=dict)
    pool_query_overlap: int = 0  # queries whose text is in the demonstration pool (kept out of their own demos)

    def to_dict(self) -> dict:
        payload = super().to_dict()
        if not self.chains:
            del payload["chains"]  # files of runs without chain-of-thought keep their layout
        return payload

    def eval_results(self) -> list[EvalResult]:
        dataset = self.dataset or "prompts"
        return [
            _entry(
                "text-classification",
                dataset,
                "held-out queries",
                "accuracy",
                f"{metric} {k}-shot in context",
                row[metric]["mean"],
            )
            for k, row in self.shots.items()
            for metric in ("accuracy", "accuracy_calibrated")
            if metric in row
        ]


@dataclass(kw_only=True)
class PostTrainingResult(RunResult):
    """A causal LM post-trained (SFT, reward model, DPO, GRPO): held-out scores before and after, on the same rows."""

    kind: ClassVar[str] = "post_training"
    method: str
    task: str = "text-generation"  # a reward model: text-classification
    num_train: int
    num_eval: int
    global_step: int = 0
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    saved: str | None = None  # "adapter" or "model"
    log_history: list[dict] = field(default_factory=list)

    @property
    def dataset(self) -> str | None:
        tasks = self.args.get("instruction_tasks") or []
        return super().dataset or (
            "hfssl instructions: " + ", ".join(t.split("=")[0] for t in tasks) if tasks else None
        )

    def eval_results(self) -> list[EvalResult]:
        if not self.dataset:
            return []
        split = "validation" if self.args.get("eval_dataset") else "held-out rows"
        entries = []
        for key, value in self.after.items():
            before = f"; before: {self.before[key]:.4f}" if key in self.before else ""
            entries.append(
                _entry(self.task, self.dataset, split, key.split("/")[0], f"{key} ({self.method}{before})", value)
            )
        return entries


RESULT_KINDS: dict[str, type[RunResult]] = {
    cls.kind: cls
    for cls in (PretrainResult, AdaptationResult, MultitaskResult, MetaResult, PromptEvalResult, PostTrainingResult)
}


def result_from_dict(payload: dict) -> RunResult:
    """The typed result a metrics.json payload holds (ValueError for an unknown kind).

    A result read from a file written before results were typed has `legacy = True`: fields those files lacked
    (e.g. the task of an adaptation) hold their defaults.
    """
    kind = payload.get("kind") or _legacy_kind(payload)
    if kind not in RESULT_KINDS:
        raise InputError(f"Unknown result kind {kind!r}; expected one of {sorted(RESULT_KINDS)}.")
    cls = RESULT_KINDS[kind]
    names = {f.name for f in fields(cls)}
    if "arguments" in payload and "args" not in payload:  # prompt_eval files before typed results
        payload = {**payload, "args": {"dataset": payload.get("dataset"), **payload["arguments"]}}
    if "dataset" in payload and "dataset" not in payload.get("args", {}):
        payload = {**payload, "args": {**payload.get("args", {}), "dataset": payload["dataset"]}}
    result = cls(**{k: v for k, v in payload.items() if k in names})
    result.legacy = "kind" not in payload
    return result


def _legacy_kind(payload: dict) -> str | None:
    """Files written before results were typed: each kind had keys no other had."""
    if "final" in payload and "log_history" in payload:
        return "pretraining"
    if "meta_test" in payload:
        return "meta_learning"
    if "shots" in payload:
        return "prompt_eval"
    if "accuracy" in payload and "method" in payload:
        return "adaptation"
    return None


def save_result(result: RunResult, path: str | os.PathLike) -> Path:
    """Write the result as JSON (atomically: a reader never sees half a file). `path`: a file or a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_result(path: str | os.PathLike) -> RunResult | None:
    """The result stored at `path` (a file, or a folder's metrics.json); None when there is none.

    ValueError names the file when it is not valid JSON or holds no known result.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}); fix or remove it.") from None
    try:
        return result_from_dict(payload)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path} holds no hfssl result: {err}") from None
