"""The model card of an upload folder: metadata and a results table from the run's typed result (metrics.json,
and prompt_eval.json when present), the recipe from its arguments, and how to load the model."""

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..models.helpers import is_image_model
from ..run.results import METRICS_FILE, PostTrainingResult, load_result
from .errors import HubError

# an architecture's pipeline task by the ending of its class name (transformers' own naming), or by name
PIPELINE_TAGS = {"SimCLRModel": "image-feature-extraction", "BertModel": "feature-extraction"}
PIPELINE_SUFFIXES = {
    "ForCausalLM": "text-generation",
    "LMHeadModel": "text-generation",
    "ForSequenceClassification": "text-classification",
    "ForImageClassification": "image-classification",
    "ForMaskedLM": "fill-mask",
}


def pipeline_tag(architecture: str | None) -> str | None:
    if not architecture:
        return None
    if architecture in PIPELINE_TAGS:
        return PIPELINE_TAGS[architecture]
    return next((task for suffix, task in PIPELINE_SUFFIXES.items() if architecture.endswith(suffix)), None)


PROMPT_EVAL_FILE = "prompt_eval.json"

_LIMITATIONS = """A small research model for learning and experimentation: trained on little data on a CPU budget, it
is not suitable for production decisions. Scores above hold for the named data and split only; expect
lower accuracy under distribution shift, and check for biases of the training data before any use."""


def read_json(path: Path) -> dict:
    """A JSON record of the folder ({} when absent); HubError naming the file when it does not parse."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HubError(f"{path} is not valid JSON ({err}); fix or remove it before pushing.") from None


def hub_id(name: str | None) -> str | None:
    """`name` if it can be a Hub model id (not a local path), else None: the card metadata takes Hub ids only."""
    if not name or Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


def _run_records(folder: Path):
    """(the run's typed result or None, the prompt-eval result or None): what the card reports."""
    try:
        return load_result(folder / METRICS_FILE), load_result(folder / PROMPT_EVAL_FILE)
    except ValueError as err:
        raise HubError(str(err)) from None


def _recipe(args: dict) -> str:
    lines = [f"- `{k}`: `{v}`" for k, v in sorted(args.items()) if v not in (None, "", [], {}) and "token" not in k]
    return "\n".join(lines) or "See run_args.json."


def _results_table(eval_results) -> str:
    rows = [f"| {r.metric_name} | {r.dataset_name} ({r.dataset_split}) | {r.metric_value} |" for r in eval_results]
    return "\n".join(["| metric | data | value |", "|---|---|---|", *(rows or ["| (no evaluation recorded) | | |"])])


def _how_to_load(repo_id: str, adapter: bool) -> str:
    auto_class, package = ("AutoPeftModel", "peft") if adapter else ("AutoModel", "transformers")
    return (
        "The modeling code is uploaded beside the weights, so hfssl need not be installed:\n\n```python\n"
        f'from {package} import {auto_class}\nmodel = {auto_class}.from_pretrained("{repo_id}", '
        "trust_remote_code=True)\n```"
    )


_POST_TRAINING = {
    "sft": "instruction tuning (SFT)",
    "reward": "a reward model (Bradley-Terry)",
    "dpo": "preference tuning (DPO)",
    "grpo": "an RL step (GRPO)",
}


def _what_was_done(result, method: str | None) -> str:
    objective = getattr(result, "objective", None)
    if objective:  # a pretraining run
        return f"hfssl: self-supervised pretraining (`--objective {objective}`)."
    if isinstance(result, PostTrainingResult):
        return f"hfssl: post-training with TRL, {_POST_TRAINING.get(result.method, result.method)}."
    return f"hfssl: self-supervised pretraining, then adaptation{f' by {method}' if method else ''}."


def _unit(result) -> str:
    if isinstance(result, PostTrainingResult):
        return "preference pairs" if result.method in ("reward", "dpo") else "rows"
    return "labelled examples"


def build_model_card(folder: Path, repo_id: str, *, base_model: str | None, license: str = "apache-2.0") -> ModelCard:
    """A ModelCard for the prepared `folder`, filled from its config and the run's typed results."""
    config = read_json(folder / "config.json")
    adapter = read_json(folder / "adapter_config.json")
    result, prompt_eval = _run_records(folder)
    if result is not None and result.legacy and hasattr(result, "task") and is_image_model(config):
        result.task = "image-classification"  # files before typed results did not say; the config does
    args = result.args if result is not None else read_json(folder / "run_args.json")
    method = getattr(result, "method", None)
    eval_results = [*(result.eval_results() if result else []), *(prompt_eval.eval_results() if prompt_eval else [])]
    architecture = (config.get("architectures") or [None])[0]
    datasets = [d for d in {args.get("dataset"), args.get("eval_dataset")} if d and hub_id(d) and "/" in d]
    data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        base_model=hub_id(base_model),
        datasets=sorted(datasets) or None,
        tags=["hfssl", *filter(None, [config.get("model_type"), method])] + (["lora"] if adapter else []),
        pipeline_tag=pipeline_tag(architecture),
        license=license,
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    trained_on = getattr(result, "num_train", None)
    sections = [
        f"# {repo_id}",
        f"{architecture or 'A model'} ({config.get('model_type', adapter.get('peft_type', 'adapter'))}) trained with "
        + _what_was_done(result, method)
        + (f"\nBase model: `{base_model}`." if base_model else ""),
        "## Results\n\n"
        + _results_table(eval_results)
        + (f"\n\nTrained on {trained_on} {_unit(result)}, evaluated on {result.num_eval}." if trained_on else ""),
        "## Training recipe\n\n" + _recipe(args),
        "## How to load\n\n" + _how_to_load(repo_id, bool(adapter)),
        "## Intended use and limitations\n\n" + _LIMITATIONS,
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
