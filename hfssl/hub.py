"""Share adapted models on the Hugging Face Hub: the upload folder, its model card, and the push itself.

`prepare_upload_folder` writes exactly what will be uploaded: the weights (a full model, or a LoRA adapter
with its `base_model`), tokenizer / image processor, config with `auto_map` plus the modeling code (so
`from_pretrained(repo, trust_remote_code=True)` works without hfssl), the run's JSON records and a
README.md model card whose `model-index` comes from the run's metrics.json (and prompt_eval.json when
present). `push_to_hub` creates the repository and uploads that folder with `huggingface_hub`.

Tokens come only from `huggingface_hub.get_token()` (the HF_TOKEN variable or `hf auth login`); they are
never printed, logged or written into the folder.
"""

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError

logger = logging.getLogger(__name__)

# top-level files of a saved model that belong on the Hub (folders such as checkpoints/ and logs never do)
_UPLOAD_SUFFIXES = {".json", ".safetensors", ".py", ".txt", ".model", ".jinja"}
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
_PIPELINE_TAGS = {
    "GPTForCausalLM": "text-generation",
    "GPTForSequenceClassification": "text-classification",
    "SimCLRModel": "image-feature-extraction",
    "SimCLRForImageClassification": "image-classification",
}


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Connection-level failures: the stdlib's, plus the HTTP client's that huggingface_hub uses."""
    import importlib

    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            types.append(importlib.import_module(module).TransportError)
    return tuple(types)


NETWORK_ERRORS = _network_error_types()


class HubError(RuntimeError):
    """A push that cannot go ahead or failed, with a message meant for the user."""


@dataclass(kw_only=True)
class HubArguments:
    """The push flags every training and adaptation script accepts (argument dataclasses inherit them)."""

    push_to_hub: bool = field(default=False, metadata={"help": "Push the saved model to the Hub at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository id (user/name) for --push_to_hub."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repository as private."})
    hub_adapter_only: bool = field(default=False, metadata={"help": "Push a LoRA adapter without merging it."})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id user/name.")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HubError(f"{path} is not valid JSON ({err}); fix or remove it before pushing.") from err


def _is_adapter(model_dir: Path) -> bool:
    return (model_dir / "adapter_config.json").is_file()


def _merge_adapter(model_dir: Path, out: Path) -> None:
    """Load base + adapter, merge the LoRA weights into the base and save a full model to `out`.

    A classification adapter's base is rebuilt with the label names of the run (metrics.json), so the
    saved head (in modules_to_save) fits.
    """
    from peft import PeftConfig, PeftModel
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )

    peft_config = PeftConfig.from_pretrained(str(model_dir))
    labels = _read_json(model_dir / "metrics.json").get("labels")
    kwargs = {}
    if labels:
        id2label = dict(enumerate(labels))
        kwargs = dict(num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    auto = {"SEQ_CLS": AutoModelForSequenceClassification, "CAUSAL_LM": AutoModelForCausalLM}.get(
        peft_config.task_type, AutoModelForImageClassification if labels else AutoModel
    )
    base = auto.from_pretrained(peft_config.base_model_name_or_path, **kwargs)
    PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload().save_pretrained(out)


def _hub_id(name: str | None) -> str | None:
    """`name` if it can be a Hub model id (not a local path), else None: the card metadata takes Hub ids only."""
    if not name or Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


def _copy_model_files(model_dir: Path, out: Path, skip: set[str]) -> None:
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in _UPLOAD_SUFFIXES and path.name not in skip:
            shutil.copy2(path, out / path.name)


def _ensure_remote_code(out: Path) -> None:
    """hfssl configs carry auto_map; make sure the modeling files it names sit beside the weights."""
    config = _read_json(out / "config.json")
    modules = {ref.split(".")[0] for ref in config.get("auto_map", {}).values() if isinstance(ref, str)}
    model_type = config.get("model_type", "")
    if not model_type.startswith("hfssl_"):
        return
    package = Path(__file__).parent / "models" / model_type.removeprefix("hfssl_")
    for module in modules:
        if not (out / f"{module}.py").is_file():
            source = package / f"{module}.py"
            if not source.is_file():
                raise HubError(f"config.json's auto_map names {module}.py, which hfssl does not ship.")
            shutil.copy2(source, out / source.name)


def _eval_results(metrics: dict, prompt_eval: dict, is_image: bool, run_args: dict) -> list[EvalResult]:
    """model-index entries from a run's metrics.json (adaptation, pretraining or meta-learning) and a
    prompt_eval.json."""
    results = []
    args = metrics.get("args") or run_args
    dataset = args.get("eval_dataset") or args.get("dataset")
    split = "validation" if args.get("eval_dataset") else "held-out part of the training file"
    if "accuracy" in metrics and dataset:
        task = "image-classification" if is_image else "text-classification"
        for metric in ("accuracy", "macro_f1"):
            if metric in metrics:
                results.append(
                    EvalResult(
                        task_type=task,
                        dataset_type=Path(dataset).stem,
                        dataset_name=dataset,
                        dataset_split=split,
                        metric_type=metric.replace("macro_f1", "f1"),
                        metric_name=f"{metric} ({metrics.get('method', 'adapted')})",
                        metric_value=round(float(metrics[metric]), 4),
                    )
                )
    for key, value in (metrics.get("final") or {}).items():  # pretraining: held-out loss, kNN accuracy
        if isinstance(value, (int, float)) and dataset:
            results.append(
                EvalResult(
                    task_type="image-feature-extraction" if is_image else "text-generation",
                    dataset_type=Path(dataset).stem,
                    dataset_name=dataset,
                    dataset_split=f"held-out {args.get('eval_split_fraction', '')} of the data",
                    metric_type=key,
                    metric_name=f"{key} (pretraining)",
                    metric_value=round(float(value), 4),
                )
            )
    for setting, row in (metrics.get("meta_test") or {}).items():  # meta-learning: N-way K-shot accuracy
        results.append(
            EvalResult(
                task_type="image-classification",
                dataset_type=Path(dataset or "episodes").stem,
                dataset_name=dataset or "episodes",
                dataset_split="meta-test classes",
                metric_type="accuracy",
                metric_name=f"{setting} accuracy (meta-test, "
                f"+- {100 * row['ci95']:.1f} pts 95% CI, {row['episodes']} episodes)",
                metric_value=round(float(row["accuracy"]), 4),
            )
        )
    for k, row in prompt_eval.get("shots", {}).items():
        for metric in ("accuracy", "accuracy_calibrated"):
            if metric in row:
                results.append(
                    EvalResult(
                        task_type="text-classification",
                        dataset_type=Path(prompt_eval["dataset"]).stem,
                        dataset_name=prompt_eval["dataset"],
                        dataset_split="held-out queries",
                        metric_type="accuracy",
                        metric_name=f"{metric} {k}-shot in context",
                        metric_value=round(row[metric]["mean"], 4),
                    )
                )
    return results


def build_model_card(folder: Path, repo_id: str, *, base_model: str | None, license: str = "apache-2.0") -> ModelCard:
    """A ModelCard for the prepared `folder`, filled from its config and JSON records."""
    config = _read_json(folder / "config.json")
    metrics = _read_json(folder / "metrics.json")
    prompt_eval = _read_json(folder / "prompt_eval.json")
    run_args = _read_json(folder / "run_args.json")
    adapter = _read_json(folder / "adapter_config.json")
    architecture = (config.get("architectures") or [None])[0]
    args = metrics.get("args") or run_args
    datasets = [d for d in {args.get("dataset"), args.get("eval_dataset")} if _hub_id(d) and "/" in d]
    tags = ["hfssl", *filter(None, [config.get("model_type"), metrics.get("method")])]
    data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        base_model=_hub_id(base_model),
        datasets=sorted(datasets) or None,
        tags=tags + (["lora"] if adapter else []),
        pipeline_tag=_PIPELINE_TAGS.get(architecture or ""),
        license=license,
        model_name=repo_id,
        eval_results=_eval_results(metrics, prompt_eval, "image_size" in config, run_args) or None,
    )
    results = "\n".join(
        f"| {r.metric_name} | {r.dataset_name} ({r.dataset_split}) | {r.metric_value} |"
        for r in (data.eval_results or [])
    )
    recipe = "\n".join(
        f"- `{k}`: `{v}`" for k, v in sorted(args.items()) if v not in (None, "", [], {}) and "token" not in k.lower()
    )
    auto_class, package = ("AutoPeftModel", "peft") if adapter else ("AutoModel", "transformers")
    load = (
        f'from {package} import {auto_class}\nmodel = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True)'
    )
    trained_on = (
        f"Trained on {metrics['num_train']} labelled examples, evaluated on {metrics['num_eval']}."
        if "num_train" in metrics
        else ""
    )
    content = f"""---
{data.to_yaml()}
---

# {repo_id}

{architecture or "A model"} ({config.get("model_type", adapter.get("peft_type", "adapter"))}) trained with
hfssl: self-supervised pretraining, then adaptation{f" by {metrics['method']}" if metrics.get("method") else ""}.
{f"Base model: `{base_model}`." if base_model else ""}

## Results

| metric | data | value |
|---|---|---|
{results or "| (no evaluation recorded) | | |"}

{trained_on}

## Training recipe

{recipe or "See run_args.json."}

## How to load

The modeling code is uploaded beside the weights, so hfssl need not be installed:

```python
{load}
```

## Intended use and limitations

A small research model for learning and experimentation: trained on little data on a CPU budget, it
is not suitable for production decisions. Scores above hold for the named data and split only; expect
lower accuracy under distribution shift, and check for biases of the training data before any use.
"""
    return ModelCard(content)


def prepare_upload_folder(
    model_dir: str | Path, out: str | Path, repo_id: str, *, adapter_only: bool = False, license: str = "apache-2.0"
) -> list[str]:
    """Write the exact folder that would be uploaded to `out`; return its file names (sorted).

    A LoRA adapter folder is merged into its base unless adapter_only; adapter_only on a full model is an
    error. Raises HubError with a clear message for a missing or unrecognised folder.
    """
    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise HubError(f"Model folder not found: {model_dir}")
    adapter = _is_adapter(model_dir)
    if not adapter and not (model_dir / "config.json").is_file():
        raise HubError(f"{model_dir} holds neither config.json (a model) nor adapter_config.json (an adapter).")
    if adapter_only and not adapter:
        raise HubError(f"--adapter_only: {model_dir} holds a full model, not a LoRA adapter (no adapter_config.json).")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base_model = None
    if adapter:
        base_model = _read_json(model_dir / "adapter_config.json").get("base_model_name_or_path")
        if adapter_only:
            _copy_model_files(model_dir, out, skip=set())
        else:
            _merge_adapter(model_dir, out)
            _copy_model_files(model_dir, out, skip={*_ADAPTER_FILES, "config.json"})
    else:
        _copy_model_files(model_dir, out, skip=set())
        args = _read_json(model_dir / "metrics.json").get("args") or _read_json(model_dir / "run_args.json")
        base_model = args.get("model_name_or_path")
    _ensure_remote_code(out)
    token = get_token()
    if token:  # a token must never travel with the files (weights are binary: only text files can hold one)
        for path in out.iterdir():
            if path.suffix != ".safetensors" and token in path.read_bytes().decode("utf-8", "ignore"):
                raise HubError(f"{path.name} contains your Hugging Face token; remove it before pushing.")
    build_model_card(out, repo_id, base_model=base_model, license=license).save(out / "README.md")
    return sorted(p.name for p in out.iterdir())


def _with_retries(action, what: str, attempts: int = 3, wait_s: float = 2.0):
    """Run action(); retry transient failures (5xx, 429, network), turn the rest into HubError."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            if status in (401, 403):
                raise HubError(
                    f"{what}: the Hub refused the token (HTTP {status}); check that it has write access "
                    "to this namespace."
                ) from None
            if status == 409:
                raise HubError(
                    f"{what}: name conflict (HTTP 409); the repository exists with another type or "
                    "you cannot write to it. Choose another --repo_id."
                ) from None
            if status not in (429, 500, 502, 503, 504) or attempt == attempts:
                raise HubError(f"{what} failed (HTTP {status}): {str(err).splitlines()[0]}") from None
        except NETWORK_ERRORS as err:
            if attempt == attempts:
                raise HubError(
                    f"{what}: could not reach the Hub after {attempts} attempts ({type(err).__name__}). "
                    "Check the network, or use --dry_run to prepare the folder offline."
                ) from None
        logger.warning("%s: transient failure, retrying (%d/%d)", what, attempt, attempts)
        time.sleep(wait_s * attempt)
    raise AssertionError("unreachable")


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    adapter_only: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    dry_run_dir: str | Path | None = None,
    api: HfApi | None = None,
    commit_message: str | None = None,
) -> dict:
    """Prepare the upload folder and push it (or, with dry_run, only write it). Returns a summary dict."""
    if not repo_id or repo_id.count("/") != 1:
        raise HubError(f"--repo_id must look like user/name, got {repo_id!r}.")
    token = get_token()
    if not dry_run and not token:
        raise HubError("No Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry_run).")
    if dry_run:
        folder = Path(dry_run_dir or Path(model_dir).with_name(Path(model_dir).name + "-hub-upload"))
        files = prepare_upload_folder(model_dir, folder, repo_id, adapter_only=adapter_only)
        return {"dry_run": True, "folder": str(folder), "files": files}
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        files = prepare_upload_folder(model_dir, tmp, repo_id, adapter_only=adapter_only)
        url = _with_retries(
            lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"), f"Creating {repo_id}"
        )
        if revision:
            _with_retries(
                lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), f"Creating branch {revision}"
            )
        commit = _with_retries(
            lambda: api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                repo_type="model",
                revision=revision,
                commit_message=commit_message or f"Upload {'adapter' if adapter_only else 'model'} with hfssl",
            ),
            f"Uploading to {repo_id}",
        )
    return {
        "dry_run": False,
        "repo_url": str(url),
        "commit": str(getattr(commit, "commit_url", commit)),
        "files": files,
    }


def push_after_training(hub: HubArguments, model_dir: str | Path) -> int:
    """The end of a script run with --push_to_hub: push, print where it went; the script's exit code.

    A failed push leaves the saved model in place and says so (exit code 2).
    """
    if not hub.push_to_hub:
        return 0
    try:
        result = push_to_hub(
            model_dir, hub.hub_model_id, private=hub.hub_private_repo, adapter_only=hub.hub_adapter_only
        )
    except HubError as err:
        print(f"error: the model is saved in {model_dir}, but pushing it failed: {err}", file=sys.stderr)
        return 2
    print(f"pushed {len(result['files'])} files to {result['repo_url']}")
    return 0
