"""The layout of benchmarks/, checked by reading files (nothing there is imported or run): short functions, one ROOT,
results named by the rule in benchmarks/README.md, every script in the index, no private hfssl names."""

import ast
import functools
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HELPERS = {"common", "real_models"}  # imported by the scripts, not run
MAX_FUNCTION_LINES = 60


@functools.cache
def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(BENCHMARKS.glob("*.py"))}


def scripts() -> list[str]:
    return [name for name in modules() if name not in HELPERS]


def variants() -> set[str]:
    """The keys of the VARIANTS literal in benchmarks/common.py."""
    for node in modules()["common"].body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "VARIANTS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("benchmarks/common.py defines no VARIANTS")


def follows_naming_rule(filename: str, script_stems: list[str], known_variants: set[str]) -> bool:
    """<script>[_<variant>...].<json|png> with every variant known. Every script stem is tried, as several can
    prefix a name (exp_icl_real_quick: exp_icl_real + quick, not exp_icl + real + quick)."""
    stem, dot, suffix = filename.rpartition(".")
    if not dot or suffix not in ("json", "png"):
        return False
    for script in script_stems:
        if stem == script:
            return True
        if stem.startswith(script + "_") and all(v in known_variants for v in stem[len(script) + 1 :].split("_")):
            return True
    return False


def test_the_naming_rule_itself():
    stems, known = ["exp_icl", "exp_icl_real", "exp_lm"], {"quick", "3seeds", "7min"}
    assert follows_naming_rule("exp_icl_real_quick.png", stems, known)
    assert follows_naming_rule("exp_lm_3seeds_7min.json", stems, known)
    assert follows_naming_rule("exp_lm.json", stems, known)
    assert not follows_naming_rule("exp_lm_8min.json", stems, known)  # an unknown variant
    assert not follows_naming_rule("exp_lmx.json", stems, known)  # no such script
    assert not follows_naming_rule("exp_lm.csv", stems, known)
    assert not follows_naming_rule("exp_lm_quick", stems, known)


@pytest.mark.parametrize("name", sorted(path.stem for path in BENCHMARKS.glob("*.py")))
def test_no_function_over_60_lines(name):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(modules()[name])
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"benchmarks/{name}.py: split {long} into functions of at most {MAX_FUNCTION_LINES} lines"


def test_only_the_helper_module_defines_root():
    defining = []
    for name, tree in modules().items():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "ROOT" for t in targets):
                defining.append(name)
    assert defining == ["common"], f"ROOT is defined in {defining}: import it from benchmarks/common.py instead"


def test_every_script_uses_the_shared_helpers():
    missing = [
        name
        for name in scripts()
        if not any(isinstance(node, ast.ImportFrom) and node.module == "common" for node in modules()[name].body)
    ]
    assert not missing, f"{missing} do not import from benchmarks/common.py"


def test_results_follow_the_naming_rule():
    files = sorted(path.name for path in (BENCHMARKS / "results").iterdir())
    assert files, "benchmarks/results/ is empty"
    stems, known = scripts(), variants()
    wrong = [f for f in files if not follows_naming_rule(f, stems, known)]
    assert not wrong, (
        f"{wrong} in benchmarks/results/ do not follow <script>[_<variant>...].<json|png> "
        f"(scripts {sorted(stems)}, variants {sorted(known)} from VARIANTS in benchmarks/common.py)"
    )


def test_every_script_is_in_the_index():
    readme = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    missing = [f"{name}.py" for name in modules() if f"`{name}.py`" not in readme]
    assert not missing, f"benchmarks/README.md does not mention {missing}"


def test_no_private_hfssl_names():
    private = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hfssl":
                parts = node.module.split(".") + [alias.name for alias in node.names]
                private += [f"{name}.py: from {node.module} import {p}" for p in parts if p.startswith("_")]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "hfssl" and any(p.startswith("_") for p in parts):
                        private.append(f"{name}.py: import {alias.name}")
    assert not private, f"private hfssl names imported (use a public name): {private}"
