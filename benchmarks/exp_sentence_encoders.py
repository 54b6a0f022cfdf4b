"""Do hfssl's adaptation methods make a sentence encoder as good a few-shot classifier as SetFit? all-MiniLM-L6-v2
on SST-2 and TREC coarse, K in {8, 16, 32, 64} labelled examples per class, 5 seeds.

Data as in exp_adaptation_real.py: 500 examples of each task held out (seed 0) and never trained on; each seed
draws K examples per class from the rest with `few_shot_indices(labels, K, seed)`, the same examples for every
arm (run_finetune draws them from the same file with the same call; SetFit gets them as a datasets.Dataset).

Arms:
- probe (mean): `fit_linear_probe` (L-BFGS logistic regression) on frozen mean-pooled features;
- SetFit: setfit 1.2.0 (Tunstall et al. 2022) with its defaults (CosineSimilarityLoss on pairs, 1 epoch, batch 16,
  body learning rate 2e-5 with 10% warm-up, then scikit-learn's LogisticRegression head), except
  num_iterations=20: the R of the SetFit paper and of its README. The library default pairs every example with
  every other ("oversampling"): about 123,000 pairs for TREC at K = 64, hours per seed on 2 CPU cores;
- contrastive: `finetune.py --method contrastive --pooling mean` on SetFit's budget (the same 2 R N pairs with
  R = 20, 1 epoch, batch 16, learning rate 2e-5, 10% warm-up), then hfssl's L-BFGS logistic-regression head on
  the unit-length embeddings (exp_sentence_heads.py chose unit length on a validation set);
- contrastive (head on the raw mean), reported only: the same tuning with the head hfssl fitted before
  exp_sentence_heads.py, on the raw mean-pooled vector; its cells were measured then;
- full, lp-ft, lora, each with --pooling mean and --pooling cls (MiniLM's [CLS] pooler, which its sentence
  training never used): as in exp_adaptation_real.py, about --steps optimizer steps, AdamW 1e-4 (LoRA 1e-3),
  head 10x, batch 16.

Wall time: seconds per seed of a cell, training and the 500 held-out predictions (hfssl's arms also save the
model). The performance figure is contrastive time / SetFit time at each K (goal <= 1.0); a rerun that measures
one of those two cells measures the other too, so the ratio always compares one sitting.

    python benchmarks/exp_sentence_encoders.py --quick    # SST-2, K = 8, 1 seed, probe, SetFit and contrastive
    python benchmarks/exp_sentence_encoders.py            # every cell (a rerun measures only the missing ones)
    python benchmarks/exp_sentence_encoders.py --report   # print the saved tables
    python benchmarks/exp_sentence_encoders.py --methods "probe (mean)" SetFit contrastive --tasks sst2
    python benchmarks/exp_sentence_encoders.py --methods contrastive --tasks trec --ks 64 --again  # with SetFit's

Results go to benchmarks/results/exp_sentence_encoders.json after every cell. Needs `pip install -e ".[bench]"`
(setfit) and `python -m hfssl.reference fetch` (MiniLM).
"""

import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import (
    OUTPUTS,
    add_fresh,
    add_quick,
    add_report,
    argument_parser,
    load_json,
    markdown_row,
    markdown_rule,
    plus_minus,
    reset_accelerate,
    result_path,
    resume,
    sample_std,
    save_json,
)
from exp_adaptation_real import epochs_for, split_task
from real_models import reference

import hfssl  # noqa: F401
from hfssl.adapt.features import text_features
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe
from hfssl.data.labelled import LabelledData, few_shot_indices
from hfssl.models.loading import load_pretrained, load_tokenizer

KS = (8, 16, 32, 64)
SEEDS = (0, 1, 2, 3, 4)
BATCH = 16
PAIR_ROUNDS = 20  # SetFit's num_iterations, the paper's R
FINETUNE = {f"{m} ({p})": (m, p) for m in ("full", "lp-ft", "lora") for p in ("mean", "cls")}
METHODS = ("probe (mean)", "SetFit", "contrastive", *FINETUNE)
RETIRED = ("contrastive (head on the raw mean)",)  # in the results and the tables; the code no longer runs them


def picked(train: LabelledData, k: int, seed: int) -> list[int]:
    return few_shot_indices(train.labels, k, seed, names=train.names)


def probe_cell(task: dict, k: int, seeds) -> list[float]:
    """Mean-pooled frozen features, an L-BFGS logistic regression per seed."""
    from transformers import AutoModel

    folder = str(reference("minilm"))
    model, tokenizer = load_pretrained(AutoModel, folder), load_tokenizer(folder)
    train, held_out = task["train"], task["held_out"]
    accuracies = []
    with torch.no_grad():
        eval_f = text_features(model, tokenizer, held_out.inputs, pooling="mean", batch_size=32)
        for seed in seeds:
            idx = picked(train, k, seed)
            train_f = text_features(model, tokenizer, [train.inputs[i] for i in idx], pooling="mean", batch_size=32)
            head = fit_linear_probe(train_f, train.labels[idx], len(train.names), LinearProbeConfig(seed=seed))
            accuracies.append((head(eval_f.to(head.weight.dtype)).argmax(-1) == held_out.labels).double().mean().item())
    return accuracies


def setfit_accuracy(task: dict, k: int, seed: int, work: Path) -> float:
    """setfit's Trainer with its defaults but num_iterations (see the module docstring)."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    train, held_out = task["train"], task["held_out"]
    idx = picked(train, k, seed)
    data = Dataset.from_dict({"text": [train.inputs[i] for i in idx], "label": train.labels[idx].tolist()})
    model = SetFitModel.from_pretrained(str(reference("minilm")))
    arguments = TrainingArguments(
        output_dir=str(work / "setfit"),
        num_iterations=PAIR_ROUNDS,
        seed=seed,
        report_to="none",
        save_strategy="no",
        show_progress_bar=False,
    )
    Trainer(model=model, args=arguments, train_dataset=data).train()
    predicted = torch.as_tensor(model.predict(held_out.inputs))
    return (predicted == held_out.labels).double().mean().item()


def hfssl_accuracy(task: dict, method: str, k: int, seed: int, work: Path) -> float:
    """run_finetune (scripts/finetune.py's code) on the task's files."""
    num_examples = k * len(task["train"].names)
    if method == "contrastive":
        recipe = dict(method="contrastive", pooling="mean", num_train_epochs=1, learning_rate=2e-5)
        recipe |= dict(contrastive_rounds=PAIR_ROUNDS)
    else:
        name, pooling = FINETUNE[method]
        epochs = epochs_for(num_examples, BATCH, 40, k)
        rate = 1e-3 if name == "lora" else 1e-4
        recipe = dict(method=name, pooling=pooling, num_train_epochs=epochs, learning_rate=rate)
    reset_accelerate()
    result = run_finetune(
        FinetuneArguments(
            model_name_or_path=str(reference("minilm")),
            dataset=str(task["files"][0]),
            eval_dataset=str(task["files"][1]),
            num_labels_per_class=k,
            seed=seed,
            output_dir=str(work / "adapted"),
            per_device_train_batch_size=BATCH,
            per_device_eval_batch_size=32,
            **recipe,
        )
    )
    return result.accuracy


def measure(task: dict, method: str, k: int, seeds) -> dict:
    """One cell: accuracy per seed and wall seconds per seed."""
    start = time.perf_counter()
    if method == "probe (mean)":
        accuracies = probe_cell(task, k, seeds)
    else:
        accuracies = []
        for seed in seeds:
            with tempfile.TemporaryDirectory(dir=OUTPUTS / "exp_sentence_encoders") as cell:
                run = setfit_accuracy if method == "SetFit" else hfssl_accuracy
                args = (task, k, seed, Path(cell)) if method == "SetFit" else (task, method, k, seed, Path(cell))
                accuracies.append(run(*args))
    seconds = (time.perf_counter() - start) / len(seeds)
    spread = {"mean": statistics.fmean(accuracies), "std": sample_std(accuracies)}
    return {"accuracies": accuracies, **spread, "seconds": seconds}


def plan(args) -> list[tuple[str, str, int]]:
    """(task, method, K) in run order: the probe, SetFit and contrastive cells first, then fine-tuning."""
    first = [m for m in METHODS[:3] if m in args.methods]
    later = [m for m in METHODS[3:] if m in args.methods]
    cells = [(t, m, k) for t in args.tasks for k in args.ks for m in first]
    return cells + [(t, m, k) for t in args.tasks for k in args.ks for m in later]


TIMED_PAIR = {"SetFit": "contrastive", "contrastive": "SetFit"}  # their time ratio is the performance figure


def to_measure(record: dict, cells: list, again: bool = False) -> list:
    """The planned cells without a clean result: missing, or flagged `timed_beside_other_work` (`again`: every planned
    cell, as after a change to the code they time). SetFit's and the contrastive method's cells of one (task, K) are
    measured together when either is planned and either is not clean, or when their rows carry different `run`s (a
    rerun stopped between them), whatever --methods says: their time ratio always compares one sitting of the same
    machine."""
    rows = {(r["task"], r["method"], r["k"]): r for r in record["rows"]}

    def clean(cell) -> bool:
        return not again and cell in rows and not rows[cell].get("timed_beside_other_work")

    def with_partner(cell) -> list:
        task, method, k = cell
        return [cell, (task, TIMED_PAIR[method], k)] if method in TIMED_PAIR else [cell]

    ordered = list(dict.fromkeys(x for cell in cells for x in with_partner(cell)))
    todo = {cell for cell in cells if not clean(cell)}
    for cell in cells:  # a partner's pair is its planned cell's pair
        pair = with_partner(cell)
        if len(pair) == 2 and (not all(map(clean, pair)) or len({rows[c].get("run") for c in pair}) > 1):
            todo.update(pair)
    return [cell for cell in ordered if cell in todo]


# ---- report --------------------------------------------------------------------------------------------------
def tables(record: dict) -> str:
    out = []
    for task in ("sst2", "trec"):
        rows = {(r["method"], r["k"]): r for r in record["rows"] if r["task"] == task}
        if not rows:
            continue
        seeds = len(record["settings"]["seeds"])
        out += [f"\n### {task}: held-out accuracy (%), mean ± std over {seeds} seeds; seconds per seed\n"]
        out += [markdown_row(["method", *(f"K={k}" for k in KS)]), markdown_rule(1, len(KS))]
        best = {k: max((r["mean"] for (_, kk), r in rows.items() if kk == k), default=None) for k in KS}
        for method in (*METHODS[:3], *RETIRED, *METHODS[3:]):
            cells = [rows.get((method, k)) for k in KS]
            if not any(cells):
                continue
            text = [_cell(c, best[k]) for c, k in zip(cells, KS)]
            out.append(markdown_row([method, *text]))
        if any(method in TIMED_PAIR for method, _ in rows):
            paired = [_paired_gap(rows.get(("contrastive", k)), rows.get(("SetFit", k))) for k in KS]
            out.append(markdown_row(["contrastive - SetFit, paired by seed (points)", *paired]))
            ratio = [_time_ratio(rows.get(("contrastive", k)), rows.get(("SetFit", k))) for k in KS]
            out.append(markdown_row(["time, contrastive / SetFit", *ratio]))
    return "\n".join(out)


def _cell(row: dict | None, best: float | None) -> str:
    if row is None:
        return ""
    seconds = "time not comparable" if row.get("timed_beside_other_work") else f"{row['seconds']:.0f} s"
    text = f"{plus_minus(row['mean'], row['std'], scale=100)} ({seconds})"
    return f"**{text}**" if row["mean"] == best else text


def _paired_gap(ours: dict | None, peer: dict | None) -> str:
    """Mean ± std over seeds of (ours - peer) accuracy in points: both arms saw the same examples per seed."""
    if not ours or not peer or len(ours["accuracies"]) != len(peer["accuracies"]):
        return ""
    gaps = [a - b for a, b in zip(ours["accuracies"], peer["accuracies"])]
    mean = round(100 * statistics.fmean(gaps), 1) + 0.0  # + 0.0: equal means print +0.0, not -0.0
    return f"{mean:+.1f} ± {100 * sample_std(gaps):.1f}"


def _time_ratio(ours: dict | None, peer: dict | None) -> str:
    """contrastive / SetFit seconds; none for a cell timed while other work shared the CPU (flagged
    `timed_beside_other_work` in the results: its accuracy stands, a rerun measures it again), and "not timed
    together" for cells of different runs, or (rows from before `run` was recorded) of different days or without a
    date: a ratio compares one sitting."""
    if not ours or not peer or ours.get("timed_beside_other_work") or peer.get("timed_beside_other_work"):
        return ""
    if ours.get("run") != peer.get("run") or not ours.get("date") or ours.get("date") != peer.get("date"):
        return "not timed together"
    return f"{ours['seconds'] / peer['seconds']:.2f}"


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    add_quick(parser, "SST-2, K = 8, 1 seed, probe, SetFit and contrastive: checks the script.")
    add_fresh(parser)
    add_report(parser)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "trec"], choices=["sst2", "trec"])
    parser.add_argument("--ks", nargs="+", type=int, default=list(KS), choices=KS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--again",
        action="store_true",
        help="Measure the planned cells again even where saved (after a code change); rerun after an interruption "
        "without it, or the cells it finished are measured once more.",
    )
    args = parser.parse_args(argv)
    args.seeds = list(SEEDS)
    if args.quick:
        args.tasks, args.ks, args.seeds, args.methods = ["sst2"], [8], [0], list(METHODS[:3])
    return args


def main() -> None:
    args = parse_args()
    run = time.strftime("%Y-%m-%dT%H:%M:%S")  # this invocation: SetFit's and contrastive's cells share it
    out = result_path("exp_sentence_encoders", "quick" if args.quick else "")
    if not args.report:
        settings = {"seeds": args.seeds, "batch_size": BATCH, "pair_rounds": PAIR_ROUNDS, "finetune_steps": 40}
        record = resume(out, {"settings": settings, "rows": []}, args.fresh)
        work = OUTPUTS / "exp_sentence_encoders"
        work.mkdir(parents=True, exist_ok=True)
        tasks: dict = {}
        for name, method, k in to_measure(record, plan(args), args.again):
            record["rows"] = [r for r in record["rows"] if (r["task"], r["method"], r["k"]) != (name, method, k)]
            if name not in tasks:
                train, held_out, *files = split_task(name, work)
                tasks[name] = {"train": train, "held_out": held_out, "files": files}
            row = {"task": name, "method": method, "k": k, **measure(tasks[name], method, k, args.seeds)}
            row["date"], row["run"] = time.strftime("%Y-%m-%d"), run  # a time ratio compares one sitting
            record["rows"].append(row)
            save_json(out, record)
            print(f"{name} {method} K={k}: {plus_minus(row['mean'], row['std'], scale=100)} ({row['seconds']:.0f} s)")
    print(tables(load_json(out)))


if __name__ == "__main__":
    main()
