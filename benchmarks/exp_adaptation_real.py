"""Does pretraining help adaptation, most when labels are few? The text half of exp_adaptation.py, on real models.

Arms (each pretrained model against the identical architecture at random initialisation, seed 0, same tokenizer):
- all-MiniLM-L6-v2 (a 6-layer BERT encoder) vs `BertModel` at random init;
- SmolLM2-135M-Instruct (a 30-layer llama) vs the llama at random init;
- hfssl's main-command GPT (`accelerate launch scripts/pretrain.py`, pretrained here for minutes), as a third row.

Tasks: SST-2 (../shared/data/sst2/train.txt, 2 classes) and TREC coarse (../shared/data/trec/train.txt, fine labels
merged into 6). 500 examples of each (seed 0) are held out for evaluation and never trained on; K labelled examples
per class are drawn from the rest with `few_shot_indices` (seeds 0, 1, 2: the draw and the training seed).
K in {8, 32, 128} on SST-2; TREC's smallest class (ABBR) has 78 training examples, so TREC uses K in {8, 32, 64}.

Methods:
- probe: `fit_linear_probe` (L-BFGS logistic regression) on frozen `text_features`, for every pooling the model
  allows (MiniLM: mean / first = [CLS]; decoders: mean / last token); K = all too for MiniLM and the GPT;
  LoRA at K = all (--lora_all_tasks);
- full, lp-ft, surgical (first / middle / last block + head), lora (rank 8): `run_finetune` (scripts/finetune.py's
  code) on `AutoModelForSequenceClassification` (BERT reads [CLS] through its pooler, llama/GPT the last token),
  AdamW at 1e-4 (LoRA 1e-3), head 10x, batch 16, for about --steps optimizer steps (ceil(steps / batches per
  epoch) epochs, at most 20); K = all: one epoch (there the seed sets only the training order and the head's init).
  MiniLM gets every method (--every_method_tasks); random-init BERT gets full; SmolLM2 gets LoRA at every K
  (--smollm2_lora_ks) and full fine-tuning at K <= 32 (--smollm2_full_ks; a full step costs ~1.6 s there); the
  GPT full. The whole run takes about 80 minutes alone on 2 cores: its cells' times add up to 143 minutes, but 92
  of those were measured while three experiments shared the cores, 3-4x slower.

    python benchmarks/exp_adaptation_real.py --quick      # minutes: SST-2, K = 8, 1 seed, a few arms
    python benchmarks/exp_adaptation_real.py              # the README tables (about 80 minutes on 2 cores)
    python benchmarks/exp_adaptation_real.py --report     # print the saved tables

Results go to benchmarks/results/exp_adaptation_real.json after every cell; a rerun skips the cells it has (delete
the file, or pass --fresh, to measure again). Needs `python -m hfssl.reference fetch`; the GPT rows need a
main-command model in --gpt_model (skipped with a message when absent).
"""

import logging
import math
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from common import (
    DATA,
    OUTPUTS,
    RESULTS,
    ROOT,
    add_fresh,
    add_quick,
    add_report,
    argument_parser,
    load_json,
    markdown_row,
    markdown_rule,
    plus_minus,
    pyplot,
    reset_accelerate,
    resume,
    sample_std,
    save_figure,
    save_json,
)
from real_models import random_init_copy, reference

import hfssl  # noqa: F401
from hfssl.adapt.features import text_features
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe
from hfssl.data.labelled import LabelledData, few_shot_indices, load_labelled
from hfssl.data.splits import held_out_split
from hfssl.models.loading import load_pretrained, load_tokenizer

EVAL_SIZE = 500
TASKS = {"sst2": ("sst2/train.txt", None, [8, 32, 128]), "trec": ("trec/train.txt", ":", [8, 32, 64])}
POOLINGS = {"minilm": ("mean", "first"), "smollm2": ("mean", "last"), "gpt": ("mean", "last")}
# fine-tuning as measured: MiniLM through its [CLS] pooler (its classifier before --pooling; the others' defaults)
FINETUNE_POOLING = {"minilm": "cls"}
MODEL_NAMES = {"minilm": "all-MiniLM-L6-v2", "smollm2": "SmolLM2-135M-Instruct", "gpt": "hfssl GPT (main command)"}
FINETUNE_METHODS = {  # label: (method, surgical blocks)
    "full": ("full", None),
    "lp-ft": ("lp-ft", None),
    "surgical (first)": ("surgical", ["first"]),
    "surgical (middle)": ("surgical", ["middle"]),
    "surgical (last)": ("surgical", ["last"]),
    "lora": ("lora", None),
}


def split_task(task: str, work: Path) -> tuple[LabelledData, LabelledData, Path, Path]:
    """(training part, held-out part, their 'label text' files): 500 held out with seed 0."""
    path, separator, _ = TASKS[task]
    data = load_labelled(str(DATA / path))
    if separator:
        data = data.merged_by_key(separator)
    train_idx, eval_idx = held_out_split(len(data), EVAL_SIZE / len(data), seed=0)
    parts = data.subset(train_idx), data.subset(eval_idx)
    files = work / f"{task}_train.txt", work / f"{task}_eval.txt"
    for part, file in zip(parts, files):
        file.write_text("".join(f"{part.names[y]} {x}\n" for x, y in zip(part.inputs, part.labels.tolist())))
    return *parts, *files


def epochs_for(num_examples: int, batch_size: int, steps: int, k) -> int:
    """About `steps` optimizer steps on a K subset (at most 20 epochs); one epoch on all the labels."""
    if k == "all":
        return 1
    return min(20, math.ceil(steps / math.ceil(num_examples / batch_size)))


class Experiment:
    """The cells of one task: probes on cached features, fine-tunes through run_finetune; results saved per cell."""

    def __init__(self, args, record: dict, save):
        self.args, self.record, self.save = args, record, save
        self.done = {self._key(r) for r in record["rows"]}

    @staticmethod
    def _key(row) -> tuple:
        return row["task"], row["model"], row["init"], row["method"], str(row["k"])

    def _add(self, row: dict) -> None:
        accuracies = row["accuracies"]
        row |= {
            "mean": statistics.fmean(accuracies),
            "std": sample_std(accuracies),
        }
        self.record["rows"].append(row)
        self.done.add(self._key(row))
        self.save()
        print(
            f"{row['task']} {row['model']} {row['init']} {row['method']} K={row['k']}: "
            f"{plus_minus(row['mean'], row['std'], scale=100)} ({row['seconds']:.0f} s)",
            flush=True,
        )

    def probe(self, task, train: LabelledData, held_out: LabelledData, model_key, init, folder, ks) -> None:
        """Linear probes for every pooling of the model, at every K (one feature pass over what the cells need)."""
        for pooling in POOLINGS[model_key]:
            method = f"probe ({pooling})"
            todo = [k for k in ks if (task, model_key, init, method, str(k)) not in self.done]
            if not todo:
                continue
            start = time.perf_counter()
            subsets = {
                (k, seed): list(range(len(train))) if k == "all" else few_shot_indices(train.labels, k, seed)
                for k in todo
                for seed in self.args.seeds
            }
            needed = sorted({i for idx in subsets.values() for i in idx})
            from transformers import AutoModel

            model, tokenizer = load_pretrained(AutoModel, str(folder)), load_tokenizer(str(folder))
            with torch.no_grad():
                texts = [train.inputs[i] for i in needed]
                train_f = dict(zip(needed, text_features(model, tokenizer, texts, pooling=pooling, batch_size=32)))
                eval_f = text_features(model, tokenizer, held_out.inputs, pooling=pooling, batch_size=32)
            del model
            seconds = (time.perf_counter() - start) / len(todo)
            for k in todo:
                accuracies = []
                for seed in self.args.seeds:
                    idx = subsets[(k, seed)]
                    head = fit_linear_probe(
                        torch.stack([train_f[i] for i in idx]),
                        train.labels[idx],
                        len(train.names),
                        LinearProbeConfig(seed=seed),
                    )
                    with torch.no_grad():
                        predicted = head(eval_f.to(head.weight.dtype)).argmax(-1)
                    accuracies.append((predicted == held_out.labels).double().mean().item())
                self._add(
                    dict(
                        task=task,
                        model=model_key,
                        init=init,
                        method=method,
                        k=k,
                        accuracies=accuracies,
                        seconds=seconds,
                    )
                )

    def finetune(self, task, files, num_classes, model_key, init, folder, label, ks) -> None:
        method, blocks = FINETUNE_METHODS[label]
        for k in ks:
            if (task, model_key, init, label, str(k)) in self.done:
                continue
            start, accuracies = time.perf_counter(), []
            num_examples = k * num_classes if k != "all" else sum(1 for _ in files[0].open())
            for seed in self.args.seeds:
                reset_accelerate()
                with tempfile.TemporaryDirectory(dir=self.args.work_dir) as cell:
                    result = run_finetune(
                        FinetuneArguments(
                            model_name_or_path=str(folder),
                            dataset=str(files[0]),
                            eval_dataset=str(files[1]),
                            num_labels_per_class=None if k == "all" else k,
                            seed=seed,
                            output_dir=str(Path(cell) / "adapted"),
                            method=method,
                            surgical_blocks=blocks or ["last"],
                            num_train_epochs=epochs_for(num_examples, 16, self.args.steps, k),
                            learning_rate=1e-3 if method == "lora" else 1e-4,
                            per_device_train_batch_size=16,
                            per_device_eval_batch_size=32,
                            pooling=FINETUNE_POOLING.get(model_key),
                        )
                    )
                accuracies.append(result.accuracy)
            seconds = (time.perf_counter() - start) / len(self.args.seeds)
            self._add(
                dict(task=task, model=model_key, init=init, method=label, k=k, accuracies=accuracies, seconds=seconds)
            )


def card_check(record: dict, files, work: Path) -> dict:
    """The model card of one measured cell carries its measured accuracy: MiniLM LoRA, SST-2, K = 8, seed 0 is
    fine-tuned again into a kept folder, pushed with --dry_run (adapter-only), and the card's model-index accuracy
    is compared with the run's metrics.json and with the grid's seed-0 number of that cell."""
    from huggingface_hub import ModelCard

    from hfssl.hub.upload import push_to_hub

    folder, upload = work / "card-example" / "adapted", work / "card-example" / "upload"
    reset_accelerate()
    result = run_finetune(
        FinetuneArguments(
            model_name_or_path=str(reference("minilm")),
            dataset=str(files[0]),
            eval_dataset=str(files[1]),
            num_labels_per_class=8,
            seed=0,
            output_dir=str(folder),
            overwrite_output_dir=True,
            method="lora",
            num_train_epochs=epochs_for(16, 16, record["settings"]["steps"], 8),
            learning_rate=1e-3,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=32,
            pooling=FINETUNE_POOLING["minilm"],
        )
    )
    push_to_hub(folder, "you/minilm-sst2-lora-k8", adapter_only=True, dry_run=True, dry_run_dir=upload)
    card = ModelCard.load(upload / "README.md")
    on_card = [r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy"]
    grid = [
        r
        for r in record["rows"]
        if (r["task"], r["model"], r["init"], r["method"], r["k"]) == ("sst2", "minilm", "pretrained", "lora", 8)
    ]
    check = {
        "cell": "sst2, all-MiniLM-L6-v2, lora, K=8, seed 0",
        "card_accuracy": on_card[0] if on_card else None,
        "run_accuracy": result.accuracy,
        "grid_seed0_accuracy": grid[0]["accuracies"][0] if grid else None,
        "card_folder": str(upload.relative_to(ROOT)) if upload.is_relative_to(ROOT) else str(upload),
    }
    if not on_card or on_card[0] != round(result.accuracy, 4):
        raise SystemExit(f"error: the model card does not carry the measured accuracy: {check}")
    print(f"model card check: {check}")
    return check


def plan(args, gpt_present: bool) -> list[tuple]:
    """(task, model key, init, method label or 'probe', K values with 'all') in run order."""
    steps = []
    for task in args.tasks:
        ks = TASKS[task][2][:1] if args.quick else TASKS[task][2]
        every = [] if args.quick else ["all"]
        steps += [(task, "minilm", init, "probe", ks + every) for init in ("pretrained", "random init")]
        methods = ["full", "lora"] if args.quick else list(FINETUNE_METHODS)
        if task not in args.every_method_tasks:
            methods = [m for m in methods if m in ("full", "lora")]
        steps += [(task, "minilm", "pretrained", m, ks) for m in methods]
        if task in args.every_method_tasks or args.quick:
            steps += [(task, "minilm", "random init", "full", ks)]
        if not args.quick and task in args.lora_all_tasks:
            steps += [(task, "minilm", "pretrained", "lora", ["all"])]
        steps += [(task, "smollm2", init, "probe", ks) for init in ("pretrained", "random init")]
        lora_ks = [k for k in ks if args.smollm2_lora_ks is None or k in args.smollm2_lora_ks]
        if lora_ks and task in args.smollm2_finetune_tasks:
            steps += [(task, "smollm2", "pretrained", "lora", lora_ks)]
        full_ks = [k for k in ks if args.smollm2_full_ks is None or k in args.smollm2_full_ks]
        if full_ks and task in args.smollm2_finetune_tasks:
            steps += [(task, "smollm2", "pretrained", "full", full_ks)]
        if gpt_present:
            steps += [(task, "gpt", "pretrained", "probe", ks + every), (task, "gpt", "pretrained", "full", ks)]
    return [step for step in steps if step[1] in args.models]


# ---- report --------------------------------------------------------------------------------------------------
def row_groups(rows: list[dict], task: str) -> list[tuple[str, str, str]]:
    """The (model, init, method) rows of a task in reading order: model, pretrained before random init, the probes
    then the fine-tuning methods in FINETUNE_METHODS order (not the order the cells happened to be measured in)."""
    methods = [f"probe ({p})" for p in ("mean", "first", "last")] + list(FINETUNE_METHODS)
    groups = {(r["model"], r["init"], r["method"]) for r in rows if r["task"] == task}
    return sorted(groups, key=lambda g: (list(MODEL_NAMES).index(g[0]), g[1] != "pretrained", methods.index(g[2])))


def markdown_tables(record: dict) -> str:
    rows, out = record["rows"], []
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        ks = [str(k) for k in TASKS[task][2]] + ["all"]
        out += [f"\n### {task}: held-out accuracy (%), mean ± std over seeds {record['settings']['seeds']}\n"]
        out += [markdown_row(["model", "init", "method", *(f"K={k}" for k in ks)]), markdown_rule(3, len(ks))]
        best = {k: max((r["mean"] for r in task_rows if str(r["k"]) == k), default=None) for k in ks}
        for model, init, method in row_groups(rows, task):
            cells = {str(r["k"]): r for r in task_rows if (r["model"], r["init"], r["method"]) == (model, init, method)}
            text = []
            for k in ks:
                if k not in cells:
                    text.append("")
                    continue
                cell = plus_minus(cells[k]["mean"], cells[k]["std"], scale=100)
                if len(cells[k]["accuracies"]) == 1:
                    cell = f"{100 * cells[k]['mean']:.1f} (1 seed)"
                text.append(f"**{cell}**" if cells[k]["mean"] == best[k] else cell)
            out.append(markdown_row([MODEL_NAMES[model], init, method, *text]))
        gains = []
        for model in ("minilm", "smollm2"):
            for r in task_rows:
                if r["model"] != model or r["init"] != "pretrained":
                    continue
                twin = [
                    q
                    for q in task_rows
                    if q["model"] == model
                    and q["init"] == "random init"
                    and q["method"] == r["method"]
                    and q["k"] == r["k"]
                ]
                if twin:
                    gains.append(
                        f"{MODEL_NAMES[model]} {r['method']} K={r['k']}: {100 * (r['mean'] - twin[0]['mean']):+.1f}"
                    )
        if gains:
            out.append("\nPoints pretraining buys (pretrained - random init, same method): " + "; ".join(gains) + ".")
    return "\n".join(out)


def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows = record["rows"]
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ks = [str(k) for k in TASKS[task][2]] + ["all"]
        for i, (model, init, method) in enumerate(row_groups(rows, task)):
            cells = {
                str(r["k"]): r
                for r in rows
                if r["task"] == task and (r["model"], r["init"], r["method"]) == (model, init, method)
            }
            xs = [j for j, k in enumerate(ks) if k in cells]
            ax.errorbar(
                xs,
                [100 * cells[ks[j]]["mean"] for j in xs],
                yerr=[100 * cells[ks[j]]["std"] for j in xs],
                linestyle=":" if init == "random init" else "-",
                marker="o",
                color=plt.get_cmap("tab20")(i % 20),
                capsize=2,
                label=f"{model} {method}" + (" (random)" if init == "random init" else ""),
            )
        ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
        ax.set(ylabel="held-out accuracy (%)", title=f"{task}: pretrained (solid) vs random init (dotted)")
        ax.legend(fontsize=5, ncol=3)
    save_figure(fig, path)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    add_quick(parser, "SST-2, K = 8, 1 seed, probe + full + LoRA.")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Default 0 1 2 (quick: 0).")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=list(MODEL_NAMES))
    parser.add_argument(
        "--lora_all_tasks", nargs="*", default=list(TASKS), choices=list(TASKS), help="Tasks of MiniLM LoRA at K = all."
    )
    parser.add_argument(
        "--every_method_tasks",
        nargs="*",
        default=list(TASKS),
        choices=list(TASKS),
        help="Tasks where MiniLM gets LP-FT and surgical too, and random-init BERT full fine-tuning (elsewhere: "
        "the probes, full and LoRA).",
    )
    parser.add_argument(
        "--smollm2_finetune_tasks",
        nargs="*",
        default=list(TASKS),
        choices=list(TASKS),
        help="Tasks of SmolLM2 LoRA and full fine-tuning.",
    )
    parser.add_argument("--steps", type=int, default=40, help="Optimizer steps per fine-tune on a K subset (about).")
    parser.add_argument(
        "--smollm2_lora_ks", type=int, nargs="*", default=None, help="K values of SmolLM2 LoRA (default: every K)."
    )
    parser.add_argument(
        "--smollm2_full_ks",
        type=int,
        nargs="*",
        default=[8, 32],
        help="K values of SmolLM2 full fine-tuning.",
    )
    parser.add_argument("--gpt_model", type=Path, default=OUTPUTS / "gpt-main")
    parser.add_argument("--work_dir", type=Path, default=OUTPUTS / "exp_adaptation_real")
    add_fresh(parser)
    parser.add_argument(
        "--results_name",
        default=None,
        help="Write benchmarks/results/<name>.json and .png (e.g. one name per task, to run the tasks at once).",
    )
    add_report(parser)
    return parser.parse_args(argv)


def model_folders(args) -> tuple[dict, bool]:
    """({(model key, init): folder}, whether the main-command GPT is there); random-init copies made once."""
    from transformers import AutoModel, AutoModelForCausalLM

    folders = {
        ("minilm", "pretrained"): reference("minilm"),
        ("smollm2", "pretrained"): reference("smollm2"),
    }
    folders[("minilm", "random init")] = random_init_copy(
        folders[("minilm", "pretrained")], args.work_dir / "bert-random", AutoModel
    )
    folders[("smollm2", "random init")] = random_init_copy(
        folders[("smollm2", "pretrained")], args.work_dir / "llama-random", AutoModelForCausalLM
    )
    gpt_present = (args.gpt_model / "config.json").is_file()
    if gpt_present:
        folders[("gpt", "pretrained")] = args.gpt_model
    else:
        print(
            f"GPT rows skipped: no model in {args.gpt_model} "
            f"(`accelerate launch scripts/pretrain.py --output_dir {args.gpt_model}`)"
        )
    return folders, gpt_present


def run_cells(args, experiment: Experiment, folders: dict, gpt_present: bool, splits: dict) -> None:
    """Every cell of the plan, in order (the ones already measured are skipped by the experiment)."""
    for task, model_key, init, method, ks in plan(args, gpt_present):
        train, held_out, *files = splits[task]
        folder = folders[(model_key, init)]
        if method == "probe":
            experiment.probe(task, train, held_out, model_key, init, folder, ks)
        else:
            experiment.finetune(task, files, len(train.names), model_key, init, folder, method, ks)


def main():
    args = parse_args()
    name = args.results_name or ("exp_adaptation_real_quick" if args.quick else "exp_adaptation_real")
    out = RESULTS / f"{name}.json"
    if args.report:
        print(markdown_tables(load_json(out)))
        return
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    if args.quick:
        args.tasks, args.smollm2_lora_ks, args.smollm2_full_ks = ["sst2"], [8], []
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    datasets.disable_progress_bars()
    settings = {
        "seeds": args.seeds,
        "steps": args.steps,
        "eval_size": EVAL_SIZE,
        "batch_size": 16,
    }
    record = {"settings": settings, "rows": []}
    record = resume(out, record, args.fresh)
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    def save():
        save_json(out, record)

    folders, gpt_present = model_folders(args)
    experiment = Experiment(args, record, save)
    start = time.perf_counter()
    splits = {task: split_task(task, args.work_dir) for task in args.tasks}
    run_cells(args, experiment, folders, gpt_present, splits)
    if "sst2" in splits:
        record["card_check"] = card_check(record, splits["sst2"][2:], args.work_dir)
    record["minutes_this_run"] = (time.perf_counter() - start) / 60
    save()
    print(markdown_tables(record))
    plot(record, RESULTS / f"{name}.png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
