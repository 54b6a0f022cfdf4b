"""Embedded default data sets: real data present offline on any machine where hfssl is installed.

`stdlib_docstrings`: the English docstrings of the Python standard library that runs hfssl — modules,
classes and functions, read from the source files with `ast` (no module is imported or executed). It is
human-written technical prose (a few MB), one document per docstring, in a fixed order, so every machine
with the same Python version builds the same corpus.
"""

import ast
import hashlib
import json
import logging
import os
import sys
import sysconfig
from pathlib import Path

from ..models.helpers import cache_dir as hfssl_cache_dir
from ..run.errors import InputError, MissingFileError

logger = logging.getLogger(__name__)

BUILTIN_TEXT_DATASETS = ("stdlib_docstrings",)

_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
_MIN_DOC_CHARS = 40  # drop one-word docstrings such as "Return self."


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return files


def _docstrings(source: str) -> list[str]:
    """Docstrings of a module and of every class and function in it, in source order."""
    tree = ast.parse(source)
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= _MIN_DOC_CHARS and doc.isascii():
                docs.append(doc.strip())
    return docs


def stdlib_docstrings() -> list[str]:
    """Every unique docstring (>= 40 ASCII characters) of this interpreter's standard library.

    Returns a list of documents (str). Files that do not parse (e.g. templates) are skipped.
    """
    seen, documents = set(), []
    for path in _source_files(_stdlib_root()):
        try:
            source = path.read_text(encoding="utf-8")
            docs = _docstrings(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # not Python 3 source; not part of the corpus
        for doc in docs:
            if doc not in seen:
                seen.add(doc)
                documents.append(doc)
    if not documents:
        raise MissingFileError(
            f"No standard-library docstrings found under {_stdlib_root()}: this Python installation ships no "
            "source files. Pass --dataset with a text file or Hub dataset instead."
        )
    return documents


def builtin_text_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write the built-in corpus `name` to a cached JSON-lines file, one `{"text": document}` per line.

    The file name carries the Python version and a hash of the interpreter's identity, so it is built once
    per interpreter. Returns the path of the .jsonl file.
    """
    if name not in BUILTIN_TEXT_DATASETS:
        raise InputError(f"Unknown built-in text dataset {name!r}; available: {', '.join(BUILTIN_TEXT_DATASETS)}.")
    cache = Path(cache_dir) if cache_dir else hfssl_cache_dir("corpora")
    cache.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(f"{sys.version}|{_stdlib_root()}".encode()).hexdigest()[:10]
    path = cache / f"{name}-py{sys.version_info.major}{sys.version_info.minor}-{tag}.jsonl"
    if not path.exists():
        documents = stdlib_docstrings()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in documents:
                f.write(json.dumps({"text": doc}) + "\n")
        os.replace(tmp, path)  # atomic: concurrent processes never see a half-written corpus
        logger.info("Built-in corpus %s: %d documents written to %s", name, len(documents), path)
    return path
