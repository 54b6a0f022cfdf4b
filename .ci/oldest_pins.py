"""Print `name==lower-bound` for the packages named on the command line, read from pyproject.toml's dependencies
(and its extras, for a package only an extra names, e.g. trl).

CI installs these into a second virtual environment to test the oldest end of every range it names.
"""

import re
import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
lower = {}
extras = [r for group in pyproject["project"].get("optional-dependencies", {}).values() for r in group]
for requirement in [*extras, *pyproject["project"]["dependencies"]]:  # a dependency's own bound wins
    match = re.match(r"^([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*>=\s*([^,;\s]+)", requirement)
    if match:
        lower[match.group(1).lower().replace("_", "-")] = match.group(2)
missing = [name for name in sys.argv[1:] if name.lower() not in lower]
if missing:
    sys.exit(f"pyproject.toml gives no lower bound (>=) for {missing}")
print(" ".join(f"{name}=={lower[name.lower()]}" for name in sys.argv[1:]))
