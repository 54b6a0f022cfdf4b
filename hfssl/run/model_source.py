"""Where a pretrained model comes from: a folder or Hub id, and for a llama.cpp GGUF checkpoint the file inside it.

Pure path logic (no file format is read here), so that every arguments class can name its model source. A GGUF is
named either as a path ending in `.gguf`, or as a folder (or Hub repository) plus `gguf_file=` the file's name inside
it, transformers' own spelling; loading and checking GGUF files is `hfssl.models.gguf`'s job.
"""

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, MissingFileError

GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: `path` (a folder or Hub id) and, for a GGUF checkpoint, the file inside it."""

    path: str
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def input_path(self) -> str:
        """What a run reads and must never write into: the GGUF file itself, else the folder (or Hub id)."""
        return str(Path(self.path) / self.gguf_file) if self.gguf_file else self.path

    def kwargs(self) -> dict:
        """The keyword arguments `from_pretrained` needs besides the path."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def __str__(self) -> str:
        return f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path


def model_source(name_or_path: str, gguf_file: str | None = None) -> ModelSource:
    """The source named by a --model_name_or_path (maybe a .gguf path) and an optional --gguf_file.

    FileNotFoundError when a local folder does not hold the named GGUF file.
    """
    if gguf_file is None and str(name_or_path).lower().endswith(GGUF_SUFFIX):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise MissingFileError(f"GGUF file not found: {name_or_path}")
        return ModelSource(str(path.parent), path.name)
    if gguf_file is not None:
        folder = Path(name_or_path).expanduser()
        if folder.is_dir() and not (folder / gguf_file).is_file():
            found = sorted(p.name for p in folder.glob(f"*{GGUF_SUFFIX}"))
            raise MissingFileError(
                f"--gguf_file {gguf_file}: no such file in {name_or_path}"
                + (f" (it holds {', '.join(found)})." if found else " (it holds no .gguf file).")
            )
        if folder.is_file():
            raise InputError(f"--gguf_file names a file inside a folder; {name_or_path} is a file, not a folder.")
    return ModelSource(str(name_or_path), gguf_file)
