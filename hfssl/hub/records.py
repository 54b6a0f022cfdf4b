"""What an upload folder may hold: no Hub token of any kind, no absolute paths of the author's machine.

- `refuse_tokens`: a file holding a string of a Hugging Face access token's form (`hf_` and 34 letters or digits),
  or the current token whatever its form, stops the upload, naming the file and line and never the token.
  safetensors files are scanned in their JSON header (the only place text can hide in them).
- `relative_local_paths`: in the JSON records (metrics.json, run_args.json, adapter_config.json, probe.json, ...),
  an absolute local path becomes a path relative to the model folder, as a Hub id stays a Hub id.
"""

import json
import os
import re
import struct
from pathlib import Path

from huggingface_hub import get_token

from .errors import HubError

TOKEN_FORM = re.compile(rb"hf_[A-Za-z0-9]{34}(?![A-Za-z0-9])")


def _scanned_bytes(path: Path) -> bytes:
    if path.suffix != ".safetensors":
        return path.read_bytes()
    with open(path, "rb") as f:  # 8-byte little-endian header length, then the JSON header
        (length,) = struct.unpack("<Q", f.read(8) or b"\0" * 8)
        return f.read(min(length, 100_000_000))


def refuse_tokens(folder: Path) -> None:
    """HubError naming the first file (and line) of `folder` that holds a Hub token or a string of its form."""
    current = (get_token() or "").encode()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        content = _scanned_bytes(path)
        match = TOKEN_FORM.search(content)
        at = match.start() if match else (content.find(current) if current else -1)
        if at >= 0:
            line = content.count(b"\n", 0, at) + 1
            raise HubError(
                f"{path.name}, line {line}, holds what looks like a Hugging Face access token; remove it before "
                "pushing (the folder was not uploaded)."
            )


def local_path_as_relative(value, model_dir: Path):
    """An absolute local path as a path relative to the model folder; anything else (a Hub id, a number) as it is."""
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, model_dir)
    return value


def _relativise(value, model_dir: Path):
    if isinstance(value, dict):
        return {k: _relativise(v, model_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_relativise(v, model_dir) for v in value]
    return local_path_as_relative(value, model_dir)


def relative_local_paths(folder: Path, model_dir: Path) -> None:
    """Rewrite every JSON file of the upload folder with its absolute local paths relative to `model_dir`."""
    for path in sorted(folder.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HubError(f"{path.name} is not valid JSON ({err}); fix or remove it before pushing.") from None
        rewritten = _relativise(payload, model_dir.resolve())
        if rewritten != payload:
            path.write_text(json.dumps(rewritten, indent=2) + "\n")
