"""The README is a short front door whose links resolve, states the test count once, and quotes results as measured.

Pure file reading: no hfssl import, no model, no network.
"""

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
MAX_README_LINES = 500

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_TEST_COUNT = re.compile(r"\b\d[\d,]*\s+tests\b")


def _markdown_files() -> list[Path]:
    return [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text outside code blocks and inline code, where links and claims live."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def _flat(text: str) -> str:
    """Text with markdown emphasis removed and line breaks collapsed, so a wrapped phrase still matches."""
    return " ".join(text.replace("**", "").split())


def test_readme_is_a_front_door_of_at_most_500_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_relative_links_resolve():
    broken = []
    for page in _markdown_files():
        for target in _LINK.findall(_prose(page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue  # http(s), mailto, ...: not ours to check; a pure anchor is in the same page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_the_test_count_is_stated_in_one_place():
    found = [
        f"{page.relative_to(ROOT)}: {m.group(0)!r}"
        for page in _markdown_files()
        for m in _TEST_COUNT.finditer(_flat(page.read_text()))
    ]
    assert len(found) <= 1, "the number of tests is stated in more than one place:\n" + "\n".join(found)


def _json(name: str):
    return json.loads((RESULTS / name).read_text())


def _final(curve: dict) -> float:
    """The last point of a curve saved as {step: value} (JSON keys: strings)."""
    return curve[max(curve, key=int)]


def _row(rows: list[dict], name: str) -> dict:
    (row,) = [r for r in rows if r["name"] == name]
    return row


def _cell(data, task: str, method: str, k: int) -> dict:
    """One cell of exp_sentence_encoders.json."""
    return next(r for r in data["rows"] if (r["task"], r["method"], r["k"]) == (task, method, k))


# (results file, how to read the number from it, the README phrase that quotes it)
HEADLINES: list[tuple[str, Callable[[object], float], str]] = [
    (
        "bench_lm.json",
        lambda d: _row(d, "train_tokens_per_s")["ratio"],
        "hfssl's GPT trains at {:.2f}x the tokens/s of transformers' `GPT2LMHeadModel`",
    ),
    (
        "exp_contrastive_15min.json",
        lambda d: d["gain_k20"],
        "15-minute budget gives +{:.1f} kNN points over random init",
    ),
    (
        "bench_probe.json",
        lambda d: _row(d, "probe_training_time")["ratio"],
        "probing on cached features is {:.1f}x faster than running the frozen encoder every epoch",
    ),
    (
        "bench_prompting.json",
        lambda d: _row(d["rows"], "scored examples/s vs lm-eval hf backend, 8 shots")["ratio"],
        "hfssl scores 8-shot prompts at {:.2f}x lm-evaluation-harness' speed",
    ),
    (
        "bench_meta.json",
        lambda d: _row(d["rows"], "maml meta-training tasks/s vs learn2learn")["ratio"],
        "MAML meta-training runs at {:.2f}x learn2learn's tasks/s",
    ),
    (
        "exp_induction.json",
        lambda d: statistics.fmean(
            _final(r["curves"]["key_value_prefix_matching"])
            for r in d["rows"]
            if r.get("part") == 1 and r["cell"] == "curriculum, 2 layers"
        ),
        "key -> value lines jumps from about 0.2 to {:.3f}",
    ),
    (
        "exp_cot.json",
        lambda d: 100 * max(r["shots"]["accuracy"]["mean"] for r in d["rows"] if r["task"] != "sst2"),
        "tasks no condition gets past {:.0f}% accuracy",
    ),
    (
        "exp_multitask.json",
        lambda d: (
            100
            * (
                statistics.fmean(
                    r["accuracy"]["sst2"]
                    for r in d["rows"]
                    if (r["method"], r["k"]) == ("text to text: multi, proportional", 8)
                )
                - statistics.fmean(
                    r["accuracy"]["sst2"]
                    for r in d["rows"]
                    if (r["method"], r["k"]) == ("text to text: single-task", 8)
                )
            )
        ),
        "sharing adds +{:.1f} points to SST-2",
    ),
    (
        "exp_sentence_encoders.json",
        lambda d: _cell(d, "sst2", "contrastive", 16)["seconds"] / _cell(d, "sst2", "SetFit", 16)["seconds"],
        "in {:.2f}x SetFit's time",
    ),
    (
        "exp_sentence_encoders.json",
        lambda d: 100 * _cell(d, "sst2", "contrastive", 16)["mean"],
        "`--method contrastive` scores {:.1f} ±",
    ),
    (
        "exp_clip.json",
        lambda d: 100 * statistics.fmean(r["scores"]["3-way photo"] for r in d["rows"] if r["arm"] == "locked MiniLM"),
        "3 classes it never saw from their names alone: {:.1f} ±",
    ),
    (
        "bench_post_training.json",
        lambda d: d["sft"]["ratio"],
        "SFT runs at {:.3f}x the tokens/s of TRL's own `SFTTrainer`",
    ),
    (
        "bench_post_training.json",
        lambda d: d["dpo"]["ratio"],
        "and DPO at {:.3f}x `DPOTrainer`'s pairs/s",
    ),
    (
        "exp_post_training.json",
        lambda d: (
            100
            * statistics.fmean(
                r["held_out"]["answer_accuracy"] for r in d["rows"] if (r["model"], r["arm"]) == ("smollm2", "sft")
            )
        ),
        "SFT lifts SmolLM2's held-out answer accuracy from 16.7% to {:.1f}%",
    ),
    (
        "bench_prompting_smollm2.json",
        lambda d: _row(d["rows"], "scored examples/s vs lm-eval hf backend, 8 shots")["ratio"],
        "on SmolLM2, hfssl scores 8-shot prompts at {:.2f}x lm-evaluation-harness' speed",
    ),
]


def test_readme_headlines_match_the_results_files():
    readme = _flat(README.read_text())
    wrong = []
    for name, read, phrase in HEADLINES:
        expected = phrase.format(read(_json(name)))
        if expected not in readme:
            wrong.append(f"{name}: README.md should say {expected!r}")
    assert not wrong, "README headline numbers differ from benchmarks/results:\n" + "\n".join(wrong)
