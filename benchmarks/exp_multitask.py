"""Multi-task vs single-task fine-tuning of a real encoder on SST-2 + TREC; prints the tables, saves JSON and a plot.

MiniLM (all-MiniLM-L6-v2, the reference encoder: `python -m hfssl.reference fetch`) is fine-tuned in full with K
labelled examples per class of SST-2 (2 classes) and of TREC's 6 coarse question types (the fine labels
`DESC:manner` cut at the colon):

- single-task: one run per task (`finetune.py --dataset`);
- multi-task: one shared encoder and a head per task (`finetune.py --tasks sst2=...,trec=...`), with each task
  sampling rule (proportional, uniform, temperature T = 2) at fixed weights 1, and proportional sampling with the
  tasks' losses weighted by learned uncertainty (Kendall et al. 2018).

Every run of a seed sees the same examples: the same K per class, the same held-out 20% of each file (a function of
the seed), the same number of epochs and batch size. Does sharing the encoder help the smaller task, and which
sampling and weighting wins? Mean ± sample std of held-out accuracy over the seeds. With heads, 10 epochs up to
K = 32; above, ceil(320 / K) epochs (K = 48: 7), so that a K = 48 cell costs about what a K = 32 cell does. The
largest K is 48: TREC's smallest coarse class (ABBR, 86 sentences) keeps 63-70 once 20% is held out (by seed).

Text to text (`--text_to_text`): SmolLM2-135M-Instruct with LoRA writes each task's label word after the task's
prompt (`--multitask_format text_to_text`, presets sentiment and question_type), one task alone against both tasks
in one model (proportional sampling), ceil(80 / K) epochs (K = 8: 10, K = 32: 3, so that a K = 32 cell takes about
the steps of a K = 8 one); held-out 5% of each file (the log-likelihood scoring of every label word is the cost),
K = 8 and 32 by default.

    python benchmarks/exp_multitask.py --quick                 # 1 seed, K = 8: checks the script (about 3 minutes)
    python benchmarks/exp_multitask.py                         # seeds 0 1 2, K = 8, 32 and 48
    python benchmarks/exp_multitask.py --text_to_text          # SmolLM2 + LoRA, seeds 0 1 2, K = 8 and 32
    python benchmarks/exp_multitask.py --report                # the saved tables
"""

import logging
import math
import statistics
import tempfile
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
    sample_std,
    save_figure,
    save_json,
)

import hfssl  # noqa: F401
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.reference import reference_model_path
from hfssl.run.results import AdaptationResult, MultitaskResult

logger = logging.getLogger("exp_multitask")

TASKS = ("sst2", "trec")
# method -> the multi-task options (None: single-task runs)
METHODS = {
    "single-task": None,
    "multi: proportional": dict(task_sampling="proportional"),
    "multi: uniform": dict(task_sampling="uniform"),
    "multi: temperature 2": dict(task_sampling="temperature", sampling_temperature=2.0),
    "multi: uncertainty weights": dict(task_sampling="proportional", loss_weighting="uncertainty"),
}
# pooling as measured: MiniLM's [CLS] through its pooler (transformers' BERT classifier)
TRAINING = dict(
    num_train_epochs=10,
    per_device_train_batch_size=16,
    learning_rate=5e-5,
    per_device_eval_batch_size=64,
    pooling="cls",
)
EPOCHS_RULE = "10 up to K = 32, ceil(320 / K) above"
# text to text: SmolLM2 + LoRA, the label word after each task's prompt
TEXT_METHODS = {
    "text to text: single-task": None,
    "text to text: multi, proportional": dict(task_sampling="proportional"),
}
TEXT_TRAINING = dict(
    per_device_train_batch_size=16,
    learning_rate=5e-4,
    per_device_eval_batch_size=32,
    method="lora",
    multitask_format="text_to_text",
    eval_split_fraction=0.05,
)
PRESETS = {"sst2": "sentiment", "trec": "question_type"}


TEXT_EPOCHS_RULE = "ceil(80 / K)"


def epochs(k: int) -> int:
    return TRAINING["num_train_epochs"] if k <= 32 else math.ceil(320 / k)


def text_epochs(k: int) -> int:
    return math.ceil(80 / k)


def task_files(work: Path) -> dict[str, Path]:
    """SST-2 as it is, TREC with its coarse labels (`DESC:manner` -> `DESC`)."""
    trec = work / "trec_coarse.txt"
    lines = (DATA / "trec" / "train.txt").read_text().splitlines()
    trec.write_text("".join(f"{line.split(':', 1)[0]} {line.split(' ', 1)[1]}\n" for line in lines if line.strip()))
    return {"sst2": DATA / "sst2" / "train.txt", "trec": trec}


def _args(model: Path, out: Path, k: int, seed: int, **task) -> FinetuneArguments:
    training = TRAINING | {"num_train_epochs": epochs(k)}
    return FinetuneArguments(
        model_name_or_path=str(model), output_dir=str(out), num_labels_per_class=k, seed=seed, **training, **task
    )


def measure(model: Path, files: dict[str, Path], method: str, k: int, seed: int, work: Path) -> dict[str, float]:
    """Held-out accuracy of each task under `method`, for this K and seed."""
    if method in TEXT_METHODS:
        return measure_text_to_text(model, files, method, k, seed, work)
    options = METHODS[method]
    with tempfile.TemporaryDirectory(dir=work) as cell:
        if options is None:
            results = {
                name: run_finetune(_args(model, Path(cell) / name, k, seed, dataset=str(path)))
                for name, path in files.items()
            }
            return {name: r.accuracy for name, r in results.items() if isinstance(r, AdaptationResult)}
        tasks = ",".join(f"{name}={path}" for name, path in files.items())
        result = run_finetune(_args(model, Path(cell) / "mt", k, seed, tasks=tasks, **options))
        assert isinstance(result, MultitaskResult)
        return {name: scores["accuracy"] for name, scores in result.tasks.items()}


def measure_text_to_text(
    model: Path, files: dict[str, Path], method: str, k: int, seed: int, work: Path
) -> dict[str, float]:
    """Held-out accuracy of each task, text to text: each task alone (one-task --tasks runs), or both in one LM."""
    options = TEXT_METHODS[method]
    groups = [[name] for name in files] if options is None else [list(files)]
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=work) as cell:
        for names in groups:
            result = run_finetune(
                FinetuneArguments(
                    model_name_or_path=str(model),
                    output_dir=str(Path(cell) / "-".join(names)),
                    num_labels_per_class=k,
                    seed=seed,
                    tasks=",".join(f"{name}={files[name]}" for name in names),
                    task_presets=",".join(f"{name}={PRESETS[name]}" for name in names),
                    num_train_epochs=text_epochs(k),
                    **TEXT_TRAINING,
                    **(options or {}),
                )
            )
            assert isinstance(result, MultitaskResult)
            accuracy |= {name: scores["accuracy"] for name, scores in result.tasks.items()}
    return accuracy


def table(record: dict, methods=METHODS) -> str:
    rows = [r for r in record["rows"] if r["method"] in methods]
    if not rows:
        return ""
    ks = sorted({r["k"] for r in rows})
    header = ["method", *[f"{task} K={k}" for k in ks for task in TASKS]]
    lines = [markdown_row(header), markdown_rule(1, len(header) - 1)]
    for method in methods:
        cells = [method]
        for k in ks:
            for task in TASKS:
                values = [r["accuracy"][task] for r in rows if r["method"] == method and r["k"] == k]
                cells.append(plus_minus(100 * statistics.fmean(values), 100 * sample_std(values)) if values else "")
        lines.append(markdown_row(cells))
    seeds = sorted({r["seed"] for r in rows})
    return "\n".join(lines) + f"\n\nHeld-out accuracy (%), mean ± sample std over seeds {seeds}."


def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows = [r for r in record["rows"] if r["method"] in METHODS]
    ks = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.6))
    for axis, task in zip(axes, TASKS):
        for method in METHODS:
            means = [
                100 * statistics.fmean([r["accuracy"][task] for r in rows if r["method"] == method and r["k"] == k])
                for k in ks
                if any(r["method"] == method and r["k"] == k for r in rows)
            ]
            axis.plot(ks[: len(means)], means, marker="o", label=method)
        axis.set(title=task, xlabel="K labelled examples per class", ylabel="held-out accuracy (%)", xscale="log")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="+", help="Default: 8 32 48; 8 32 with --text_to_text.")
    parser.add_argument("--text_to_text", action="store_true", help="SmolLM2 + LoRA, text to text (TEXT_METHODS).")
    add_quick(parser, "1 seed, K = 8.")
    add_fresh(parser)
    add_report(parser)
    args = parser.parse_args()
    default_ks = [8, 32] if args.text_to_text else [8, 32, 48]
    seeds, ks = ([0], [8]) if args.quick else (args.seeds, args.ks or default_ks)
    out = result_path("exp_multitask", "quick" if args.quick else "")
    settings = {
        "training": TRAINING,
        "model": "all-MiniLM-L6-v2",
        "epochs": EPOCHS_RULE,
        "text_to_text": {
            "training": TEXT_TRAINING,
            "epochs": TEXT_EPOCHS_RULE,
            "model": "SmolLM2-135M-Instruct",
            "presets": PRESETS,
        },
    }
    if args.report:
        record = load_json(out)
        print(table(record) + "\n\n" + table(record, TEXT_METHODS))
        return
    key = "smollm2" if args.text_to_text else "minilm"
    model = reference_model_path(key)
    if model is None:
        raise SystemExit(f"error: the reference model {key} is not fetched: python -m hfssl.reference fetch")
    logging.basicConfig(level=logging.WARNING)
    record = resume(out, {"settings": settings, "rows": []}, args.fresh)
    done = {(r["method"], r["k"], r["seed"]) for r in record["rows"]}
    work = OUTPUTS / "exp_multitask"
    work.mkdir(parents=True, exist_ok=True)
    files = task_files(work)
    for k in ks:
        for seed in seeds:
            for method in TEXT_METHODS if args.text_to_text else METHODS:
                if (method, k, seed) in done:
                    continue
                start = time.perf_counter()
                accuracy = measure(Path(model), files, method, k, seed, work)
                seconds = time.perf_counter() - start
                record["rows"].append(
                    {"method": method, "k": k, "seed": seed, "accuracy": accuracy, "seconds": seconds}
                )
                save_json(out, record)
                print(f"K={k} seed={seed} {method}: " + ", ".join(f"{t} {a:.3f}" for t, a in accuracy.items()))
    print(table(record) + "\n\n" + table(record, TEXT_METHODS))
    plot(record, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
