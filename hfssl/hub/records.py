"""What an upload folder may hold: no Hub token of any kind, no absolute paths of the author's machine.

- `refuse_tokens`: a file holding a string of a Hugging Face access token's form (`hf_` and 34 letters or digits),
  or the current token whatever its form, stops the upload, naming the file and byte offset and never the token.
  Every file is scanned whole, in UTF-8 and UTF-16.
- `relative_local_paths`: in the JSON records (metrics.json, run_args.json, adapter_config.json, probe.json, ...),
  an absolute local path becomes a path relative to the model folder, as a Hub id stays a Hub id.
"""

import json
import os
import re
from pathlib import Path

from huggingface_hub import get_token

from .errors import HubError

# a Hub access token's form (`hf_` and 34 letters or digits), as bytes in each encoding text files come in: ASCII
# and UTF-8 (the same bytes here), UTF-16 little- and big-endian (Windows editors, PowerShell redirection)
TOKEN_FORMS = {
    "UTF-8": re.compile(rb"hf_[A-Za-z0-9]{34}(?![A-Za-z0-9])"),
    "UTF-16-LE": re.compile(rb"h\x00f\x00_\x00(?:[A-Za-z0-9]\x00){34}(?![A-Za-z0-9]\x00)"),
    "UTF-16-BE": re.compile(rb"\x00h\x00f\x00_(?:\x00[A-Za-z0-9]){34}(?!\x00[A-Za-z0-9])"),
}
_CHUNK = 16 * 2**20
_OVERLAP = 1024  # longer than any token in any encoding: a token split by a chunk border is still found


def _secret_offset(path: Path, needles: list[tuple[str, re.Pattern | bytes]]) -> tuple[int, str] | None:
    """(byte offset, encoding) of the first token-like string in the whole file, read in overlapping chunks."""
    with open(path, "rb") as f:
        start, tail = 0, b""
        while chunk := f.read(_CHUNK):
            window = tail + chunk
            for encoding, needle in needles:
                at = (
                    window.find(needle)
                    if isinstance(needle, bytes)
                    else (m.start() if (m := needle.search(window)) else -1)
                )
                if at >= 0:
                    return start - len(tail) + at, encoding
            tail = window[-_OVERLAP:]
            start += len(chunk)
    return None


def refuse_tokens(folder: Path) -> None:
    """HubError naming the first file of `folder` (at any depth) and the byte offset where it holds a Hub token or a
    string of its form, never the token. Every file is scanned whole (weights too: a safetensors header or tensor
    bytes can hold text), in UTF-8 and UTF-16; the current token (HF_TOKEN or `hf auth login`) whatever its form."""
    needles: list[tuple[str, re.Pattern | bytes]] = list(TOKEN_FORMS.items())
    current = get_token()
    if current:
        needles += [(encoding, current.encode(encoding)) for encoding in ("utf-8", "utf-16-le", "utf-16-be")]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        found = _secret_offset(path, needles)
        if found is not None:
            offset, encoding = found
            raise HubError(
                f"{path.relative_to(folder)}, byte {offset} ({encoding.upper()}), holds what looks like a Hugging "
                "Face access token; remove it before pushing (the folder was not uploaded)."
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
