"""Does chain-of-thought prompting help a 135M-parameter model? SmolLM2-135M-Instruct on checkable multi-step tasks
and on SST-2, direct answers against chains of thought, with and without self-consistency.

Tasks (hfssl.data.reasoning_tasks, built offline and seeded; --queries queries each, the demonstrations drawn from
the other half of the same file, `--preset question_answer`: each answer is its own label):
- addition: "What is 347 + 586?", 3-digit numbers, rationale column by column;
- word problems: two-step arithmetic word problems from templates ("5 x 3 = 15. 12 + 15 = 27.");
- last letters: the last letters of two names, concatenated (Wei et al. 2022's task);
- sst2: ../shared/data/sst2/train.txt (the sentiment preset), a real labelled task with no rationales.

Conditions, each through `hfssl.adapt.prompt_eval.run_prompt_eval` (so: scripts/prompt_eval.py's numbers):
- direct: `--mode generate`, greedy, 8 new tokens, the answer read as prompt_eval reads short answers;
- cot: `--chain_of_thought`, greedy, up to CHAIN_TOKENS a chain (64 or 128); at k = 0 with the zero-shot trigger
  "Let's think step by step." (Kojima et al. 2022), at k = 4 with the demonstrations' rationales (Wei et al. 2022);
- cot + SC5: the same with 5 chains sampled at temperature 0.7 and a majority vote (Wang et al. 2022);
- direct, chat and cot, chat (k = 0): the same prompts as the user's turn of the model's chat template
  (`--apply_chat_template`, as lm-evaluation-harness runs instruct models), 32 new tokens for a direct answer.
SST-2 has no rationales, so its chains run at k = 0 only.

k in {0, 4}; 3 demonstration seeds at k = 4 (and for sampled runs at k = 0; greedy k = 0 has one prompt). Reported:
accuracy (of the vote); "no label": answers naming no label, wrong but kept (chains: an answer read that no query
has, e.g. a wrong sum, plus the parse failures; direct: `invalid_answers`); "nothing read": the chains' parse
failures (no answer could be read; counted as wrong, never dropped); tokens generated per query (all samples).

    python benchmarks/exp_cot.py --quick      # a few minutes: 12 queries, 1 seed, addition and sst2
    python benchmarks/exp_cot.py              # 40 queries, 3 seeds (54 minutes of cells on 2 cores)
    python benchmarks/exp_cot.py --report     # print the saved table

Writes benchmarks/results/exp_cot.json after every cell (a stopped run continues with the cells it measured) and
exp_cot.png. Needs `python -m hfssl.reference fetch` (SmolLM2).
"""

import statistics
import time
from pathlib import Path

from common import (
    DATA,
    OUTPUTS,
    add_fresh,
    add_quick,
    add_report,
    argument_parser,
    load_json,
    markdown_row,
    markdown_rule,
    plus_minus,
    pyplot,
    result_path,
    resume,
    save_figure,
    save_json,
)
from real_models import reference

import hfssl  # noqa: F401
from hfssl.adapt.prompt_eval import PromptEvalArguments, run_prompt_eval
from hfssl.data.reasoning_tasks import write_reasoning_file

TASKS = {  # name -> (reasoning task and its parameters, or None for a file in ../shared/data; preset)
    "addition": (("multi_digit_addition", {"digits": 3}), "question_answer"),
    "word problems": (("two_step_arithmetic", {}), "question_answer"),
    "last letters": (("last_letter_concatenation", {"words": 2}), "question_answer"),
    "sst2": (None, "sentiment"),
}
# tokens a chain may take, per task: about 1.5x the longest demonstration chain (SmolLM2's tokens: addition 88,
# word problems 33, last letters 31), as lm-evaluation-harness sets max_gen_toks per task; SST-2 has no
# demonstration chains and gets 128. A model that loops runs to the cap, which is most of the run's time.
CHAIN_TOKENS = {"addition": 128, "word problems": 64, "last letters": 64, "sst2": 128}
CONDITIONS = ("direct", "cot", "cot + SC5", "direct, chat", "cot, chat")
CHAT = ", chat"  # the same prompt as the model's user turn, through its chat template (k = 0 only)
SHOTS = (0, 4)
TRIGGER = "Let's think step by step."
FILE_EXAMPLES = 400  # per reasoning task: half the pool, half the queries
# parse failures: chains with no answer read; off-label answers: chains whose answer no query has (a wrong sum);
# invalid answers: direct answers naming no label (for the reasoning tasks: a wrong number, or none)
METRICS = ("accuracy", "parse_failures", "off_label_answers", "invalid_answers", "tokens_per_query")


def task_file(name: str, work: Path) -> Path:
    source, _ = TASKS[name]
    if source is None:
        return DATA / "sst2" / "train.txt"
    task, params = source
    path = work / f"{task}.jsonl"
    if not path.exists():
        write_reasoning_file(task, path, n=FILE_EXAMPLES, seed=0, **params)
    return path


def cell_arguments(name: str, condition: str, k: int, args, work: Path) -> PromptEvalArguments | None:
    """prompt_eval's arguments of one cell, or None where the cell does not exist (SST-2 chains at k > 0)."""
    _, preset = TASKS[name]
    cot, chat = condition.startswith("cot"), condition.endswith(CHAT)
    if (cot or chat) and k > 0 and (TASKS[name][0] is None or chat):
        return None
    sampled = condition == "cot + SC5"
    return PromptEvalArguments(
        model_name_or_path=str(reference("smollm2")),
        dataset=str(task_file(name, work)),
        preset=preset,
        shots=str(k),
        num_seeds=args.seeds,
        max_eval_examples=args.queries,
        mode="generate",
        max_new_tokens=32 if chat else 8,  # an assistant's turn answers in a sentence
        apply_chat_template=chat,
        chain_of_thought=cot,
        cot_trigger=TRIGGER if cot and k == 0 else None,
        num_samples=5 if sampled else 1,
        temperature=0.7 if sampled else 0.0,
        cot_max_new_tokens=CHAIN_TOKENS[name],
        per_device_eval_batch_size=64,  # the same answers as 16 (left-padded), 1.8x faster on 2 cores
    )


def measure(cell_args: PromptEvalArguments, k: int) -> dict:
    start = time.perf_counter()
    result = run_prompt_eval(cell_args)
    row = result.shots[str(k)]
    sample = (result.chains.get(str(k)) or [{}])[0]
    return {
        "shots": {m: row[m] for m in METRICS if m in row},
        "example": sample,
        "num_queries": result.num_queries,
        "seconds": time.perf_counter() - start,
    }


def cells(args):
    for name in args.tasks:
        for condition in CONDITIONS:
            for k in SHOTS:
                yield name, condition, k


def summed(shots: dict, *names: str) -> str:
    """mean ± sample std over the draws of the named metrics' sum, in %; "" when the cell has none of them."""
    found = [shots[n]["runs"] for n in names if n in shots]
    if not found:
        return ""
    totals = [sum(draw) for draw in zip(*found, strict=True)]
    std = statistics.stdev(totals) if len(totals) > 1 else 0.0
    return plus_minus(statistics.fmean(totals), std, ".1f", 100)


def table(rows: list[dict]) -> str:
    header = ["task", "condition", "k", "accuracy (%)", "no label (%)", "nothing read (%)", "tokens per query"]
    lines = [markdown_row(header), markdown_rule(2, 5)]
    for row in rows:
        shots = row["shots"]
        cells = [
            summed(shots, "accuracy"),
            summed(shots, "invalid_answers") or summed(shots, "parse_failures", "off_label_answers"),
            summed(shots, "parse_failures"),
            f"{shots['tokens_per_query']['mean']:.0f}" if "tokens_per_query" in shots else "",
        ]
        lines.append(markdown_row([row["task"], row["condition"], row["k"], *cells]))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for offset, condition in enumerate(CONDITIONS):
            found = [r for r in rows if r["task"] == task and r["condition"] == condition]
            width = 0.8 / len(CONDITIONS)
            xs = [SHOTS.index(r["k"]) + width * (offset - (len(CONDITIONS) - 1) / 2) for r in found]
            ys = [100 * r["shots"]["accuracy"]["mean"] for r in found]
            err = [100 * r["shots"]["accuracy"]["std"] for r in found]
            ax.bar(xs, ys, width=width, yerr=err, label=condition)
        ax.set_xticks(range(len(SHOTS)), [f"k = {k}" for k in SHOTS])
        ax.set(title=task, ylabel="accuracy (%)", ylim=(0, 100))
    axes[0][0].legend()
    save_figure(fig, path)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    add_quick(parser, "12 queries, 1 seed, addition and sst2: checks the script.")
    add_fresh(parser)
    add_report(parser)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3, help="Demonstration draws (and sampling seeds).")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.seeds, args.tasks = 12, 1, ["addition", "sst2"]
    return args


def _same_cell(row: dict, name: str, condition: str, k: int) -> bool:
    """A saved cell measured as this run would measure it (a chain's token cap is part of the cell)."""
    cap = row.get("chain_tokens", 128) if condition.startswith("cot") else CHAIN_TOKENS[name]
    return (row["task"], row["condition"], row["k"]) == (name, condition, k) and cap == CHAIN_TOKENS[name]


def main() -> None:
    args = parse_args()
    out = result_path("exp_cot", "quick" if args.quick else "")
    if args.report:
        record = load_json(out)
    else:
        settings = {"queries": args.queries, "seeds": args.seeds, "trigger": TRIGGER, "examples": FILE_EXAMPLES}
        record = resume(out, {"settings": settings, "rows": []}, args.fresh, run_control=("tasks",))
        work = OUTPUTS / "exp_cot"
        work.mkdir(parents=True, exist_ok=True)
        for name, condition, k in cells(args):
            cell_args = cell_arguments(name, condition, k, args, work)
            if cell_args is None or any(_same_cell(r, name, condition, k) for r in record["rows"]):
                continue
            record["rows"] = [r for r in record["rows"] if (r["task"], r["condition"], r["k"]) != (name, condition, k)]
            cap = {"chain_tokens": CHAIN_TOKENS[name]}
            record["rows"].append({"task": name, "condition": condition, "k": k, **cap, **measure(cell_args, k)})
            save_json(out, record)
            print(table(record["rows"][-1:]).splitlines()[-1], flush=True)
    print(f"\nSmolLM2-135M-Instruct, {record['settings']['queries']} queries, {record['settings']['seeds']} seeds")
    print(table(record["rows"]))
    plot(record["rows"], result_path("exp_cot", "quick" if args.quick else "", suffix=".png"))


if __name__ == "__main__":
    main()
