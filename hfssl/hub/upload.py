"""Share adapted models on the Hugging Face Hub: the upload folder, its model card, and the push itself.

`prepare_upload_folder` writes exactly what will be uploaded: the weights (a full model, or a LoRA adapter
with its `base_model`), tokenizer / image processor, config with `auto_map` plus the modeling code (so
`from_pretrained(repo, trust_remote_code=True)` works without hfssl), the run's JSON records and a
README.md model card whose `model-index` comes from the run's metrics.json (and prompt_eval.json when
present). `push_to_hub` creates the repository and uploads that folder with `huggingface_hub`.

Tokens come only from `huggingface_hub.get_token()` (the HF_TOKEN variable or `hf auth login`); they are
never printed, logged or written into the folder.
"""

import logging
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from ..models.loading import load_pretrained
from ..run.arguments import HubArguments
from ..run.confinement import check_confined
from ..run.model_source import ModelSource, model_source
from ..run.results import load_result
from .card import build_model_card, read_json
from .errors import NETWORK_ERRORS, HubError
from .records import local_path_as_relative, refuse_tokens, relative_local_paths

logger = logging.getLogger(__name__)

# top-level files of a saved model that belong on the Hub (folders such as checkpoints/ and logs never do)
_UPLOAD_SUFFIXES = {".json", ".safetensors", ".py", ".txt", ".model", ".jinja"}
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
UPLOAD_MARKER = ".hfssl-upload"  # marks a --dry_run folder, which a later dry run may replace


def _run_result(model_dir: Path):
    """The typed result in the folder's metrics.json (None without one); HubError naming a broken file."""
    try:
        return load_result(model_dir)
    except ValueError as err:
        raise HubError(str(err)) from None


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

    try:
        peft_config = PeftConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise HubError(f"{model_dir} holds no readable LoRA adapter (adapter_config.json): {err}") from None
    result = _run_result(model_dir)
    labels = getattr(result, "labels", None)
    kwargs: dict[str, Any] = {}
    if labels:
        id2label = dict(enumerate(labels))
        kwargs = dict(num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    auto = {"SEQ_CLS": AutoModelForSequenceClassification, "CAUSAL_LM": AutoModelForCausalLM}.get(
        peft_config.task_type or "", AutoModelForImageClassification if labels else AutoModel
    )
    base: str | ModelSource | None = peft_config.base_model_name_or_path
    if result is not None and result.args.get("model_name_or_path"):  # the run's own naming: a GGUF base too
        base = model_source(result.args["model_name_or_path"], result.args.get("gguf_file"))
    if not base:
        raise HubError(
            f"{model_dir}/adapter_config.json names no base model (base_model_name_or_path is empty) and no run "
            "record (metrics.json) names one."
        )
    base_model = load_pretrained(auto, base, new_head=bool(labels), **kwargs)
    try:
        adapted = PeftModel.from_pretrained(base_model, str(model_dir))
    except (OSError, ValueError, RuntimeError) as err:  # missing or truncated adapter weights, or another shape
        raise HubError(f"Could not apply the LoRA adapter in {model_dir} to {base}: {err}") from None
    adapted.merge_and_unload().save_pretrained(out)


def _copy_model_files(model_dir: Path, out: Path, skip: set[str]) -> None:
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in _UPLOAD_SUFFIXES and path.name not in skip:
            shutil.copy2(path, out / path.name)


def _ensure_remote_code(out: Path) -> None:
    """hfssl configs carry auto_map; make sure the modeling files it names sit beside the weights."""
    config = read_json(out / "config.json")
    modules = {ref.split(".")[0] for ref in config.get("auto_map", {}).values() if isinstance(ref, str)}
    model_type = config.get("model_type", "")
    if not model_type.startswith("hfssl_"):
        return
    package = Path(__file__).parents[1] / "models" / model_type.removeprefix("hfssl_")
    for module in modules:
        if not (out / f"{module}.py").is_file():
            source = package / f"{module}.py"
            if not source.is_file():
                raise HubError(f"config.json's auto_map names {module}.py, which hfssl does not ship.")
            shutil.copy2(source, out / source.name)


@contextmanager
def _upload_folder(out: Path, model_dir: Path, mark: bool):
    """`with _upload_folder(...)`: write the upload into a fresh `out`; if the block fails, a dry run's `out` (`mark`)
    is left as it was found: removed when this call made it (or replaced an earlier dry run), emptied of what this
    call wrote when it was an empty folder already. A temporary `out` (no mark) goes with its own context."""
    made = _fresh_upload_folder(out, model_dir, mark)
    try:
        yield
    except BaseException:
        if mark:
            for path in [out] if made else list(out.iterdir()):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise


def _fresh_upload_folder(out: Path, model_dir: Path, mark: bool) -> bool:
    """Make `out` an empty folder to prepare the upload in, removing nothing that hfssl did not write; return whether
    this call made it (new, or in place of an earlier dry run) rather than found it empty.

    A non-empty `out` is only reused when it is an earlier dry run (it holds UPLOAD_MARKER); the model folder itself
    (or a folder around or inside it) is refused.
    """
    resolved, source = out.resolve(), model_dir.resolve()
    if resolved == source or resolved.is_relative_to(source) or source.is_relative_to(resolved):
        raise HubError(f"The upload folder {out} is (or contains, or is inside) the model folder {model_dir}.")
    if out.exists() and not out.is_dir():
        raise HubError(f"The upload folder {out} is a file.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / UPLOAD_MARKER).is_file():
            raise HubError(
                f"{out} is not empty and is not an earlier hfssl dry run (it has no {UPLOAD_MARKER}): choose an "
                "empty or new --dry_run_dir."
            )
        shutil.rmtree(out)  # an earlier dry run: every file in it was written by hfssl
    made = not out.is_dir()
    out.mkdir(parents=True, exist_ok=True)
    if mark:
        (out / UPLOAD_MARKER).write_text("Written by hfssl's push --dry_run; the next dry run may replace it.\n")
    return made


def _uploaded_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != UPLOAD_MARKER)


def _prepare_gguf_upload(model_dir: Path, gguf_file, out: Path, repo_id: str, *, license: str, mark: bool):
    """A GGUF checkpoint goes up as what transformers loads fastest: converted to a safetensors folder."""
    from ..models.convert import convert_gguf

    try:
        source = model_source(str(model_dir), gguf_file)
    except (OSError, ValueError) as err:
        raise HubError(str(err)) from None
    with _upload_folder(out, Path(source.input_path), mark):
        convert_gguf(source, out)
        base = local_path_as_relative(source.input_path, Path(source.path))
        build_model_card(out, repo_id, base_model=base, license=license).save(out / "README.md")
        refuse_tokens(out)
    return _uploaded_files(out)


def prepare_upload_folder(
    model_dir: str | Path,
    out: str | Path,
    repo_id: str,
    *,
    adapter_only: bool = False,
    license: str = "apache-2.0",
    mark: bool = False,
    gguf_file: str | None = None,
) -> list[str]:
    """Write the exact folder that would be uploaded to `out`; return its file names (sorted).

    A LoRA adapter folder is merged into its base unless adapter_only; adapter_only on a full model is an
    error. Local paths in the records become paths relative to the model folder, and a file holding anything of a
    Hub token's form is refused. mark: label `out` as a dry run (which a later dry run may replace). Raises
    HubError with a clear message for a missing or unrecognised folder.
    """
    model_dir, out = Path(model_dir), Path(out)
    if model_dir.suffix.lower() == ".gguf" or gguf_file:
        return _prepare_gguf_upload(model_dir, gguf_file, out, repo_id, license=license, mark=mark)
    if not model_dir.is_dir():
        raise HubError(f"Model folder not found: {model_dir}")
    check_confined(model_dir)  # a link to a file outside the folder would upload that file
    adapter = _is_adapter(model_dir)
    if not adapter and not (model_dir / "config.json").is_file():
        raise HubError(f"{model_dir} holds neither config.json (a model) nor adapter_config.json (an adapter).")
    if adapter_only and not adapter:
        raise HubError(f"--adapter_only: {model_dir} holds a full model, not a LoRA adapter (no adapter_config.json).")
    with _upload_folder(out, model_dir, mark):
        if adapter:
            base_model = read_json(model_dir / "adapter_config.json").get("base_model_name_or_path")
            if adapter_only:
                _copy_model_files(model_dir, out, skip=set())
            else:
                _merge_adapter(model_dir, out)
                _copy_model_files(model_dir, out, skip={*_ADAPTER_FILES, "config.json"})
        else:
            _copy_model_files(model_dir, out, skip=set())
            result = _run_result(model_dir)
            args = result.args if result is not None else read_json(model_dir / "run_args.json")
            base_model = args.get("model_name_or_path")
        _ensure_remote_code(out)
        relative_local_paths(out, model_dir)
        build_model_card(out, repo_id, base_model=local_path_as_relative(base_model, model_dir), license=license).save(
            out / "README.md"
        )
        refuse_tokens(out)  # last: every file that goes up, the card included
    return _uploaded_files(out)


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
    gguf_file: str | None = None,
) -> dict:
    """Prepare the upload folder and push it (or, with dry_run, only write it). Returns a summary dict.

    model_dir: a saved folder, or a GGUF checkpoint (a .gguf path, or a folder with gguf_file), uploaded converted.
    """
    if not repo_id or repo_id.count("/") != 1:
        raise HubError(f"--repo_id must look like user/name, got {repo_id!r}.")
    token = get_token()
    if not dry_run and not token:
        raise HubError("No Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry_run).")
    if dry_run:
        folder = Path(dry_run_dir or Path(model_dir).with_name(Path(model_dir).name + "-hub-upload"))
        files = prepare_upload_folder(
            model_dir, folder, repo_id, adapter_only=adapter_only, mark=True, gguf_file=gguf_file
        )
        return {"dry_run": True, "folder": str(folder), "files": files}
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        files = prepare_upload_folder(model_dir, tmp, repo_id, adapter_only=adapter_only, gguf_file=gguf_file)
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
    try:  # HubArguments requires a hub_model_id with --push_to_hub
        result = push_to_hub(
            model_dir, cast(str, hub.hub_model_id), private=hub.hub_private_repo, adapter_only=hub.hub_adapter_only
        )
    except HubError as err:
        print(f"error: the model is saved in {model_dir}, but pushing it failed: {err}", file=sys.stderr)
        return 2
    print(f"pushed {len(result['files'])} files to {result['repo_url']}")
    return 0
