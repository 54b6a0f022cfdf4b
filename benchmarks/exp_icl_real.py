"""In-context learning and calibration on a real pretrained LM: SmolLM2-135M-Instruct on SST-2 and TREC coarse.

Data: ../shared/data/sst2/train.txt (2 classes) and ../shared/data/trec/train.txt (fine labels merged into the 6
coarse ones). Every prompt opens with an instruction that names the label words (INSTRUCTIONS). Each file is
split once (seed 0) into a demonstration half and a query half; the same --queries
queries (a seeded subset of the query half) are scored in every cell, so cells differ only in the prompt. For each
demonstration seed s a pool of --pool_size examples is drawn from the demonstration half; the k demonstrations come
from that pool:

- random: k pool examples drawn with seed s, shared by every query;
- balanced: as random, cycling over the classes (floor(k/C) or one more per class);
- nearest (KATE, Liu et al. 2022): per query, the k pool examples nearest to it in all-MiniLM-L6-v2's mean-pooled
  sentence embedding (cosine), the most similar last; the seed changes the pool, not the rule.

Every prompt is scored with `hfssl.adapt.prompt_classifier.PromptClassifier`: log-likelihood of each label word
(lm-evaluation-harness' definition), raw and with contextual calibration (Zhao et al. 2021: divide by the label
probabilities of content-free inputs under the same demonstrations), or greedy generation parsed for a label word.

The grid is a subset of shots x selection x calibration x prompt x scoring, chosen to answer the questions:
- shots: k in {0, 1, 2, 4, 8, 16} x {random (5 seeds), balanced (3 seeds)}, plain prompt, raw + calibrated, and
  nearest (3 seeds) at k in {1, 2, 4, 8}, raw only: a per-query prompt shares no prefix with the others, so a
  nearest cell costs about 10x a random one, and calibrating it 4x more (content-free inputs under each prompt);
- chat: the same k with the model's chat template (random, 3 seeds), raw + calibrated;
- generate: greedy generation vs log-likelihood at k in {0, 4} (random, 3 seeds), plain and chat;
- order: k = 4, 3 balanced demonstration sets, each in 5 distinct orders (--orders), raw + calibrated;
- gpt: hfssl's main-command GPT (`accelerate launch scripts/pretrain.py`: no knowledge of English) on the plain
  prompts (random, 3 seeds), as the "no language knowledge" row.

    python benchmarks/exp_icl_real.py --quick          # a few minutes: 40 queries, k in {0, 4}, 2 seeds
    python benchmarks/exp_icl_real.py                  # the README tables (at most about 2 hours on 2 cores)
    python benchmarks/exp_icl_real.py --report         # print the saved tables

Needs `python -m hfssl.reference fetch` (SmolLM2 and MiniLM) and, for the gpt part, a main-command model
(--gpt_model; the part is skipped with a message when it is absent). Writes benchmarks/results/exp_icl_real.json
(after every cell, so a stopped run keeps what it measured) and exp_icl_real.png.
"""

import itertools
import random
import statistics
import time
from pathlib import Path

import torch
from common import (
    DATA,
    OUTPUTS,
    RESULTS,
    add_fresh,
    add_quick,
    add_report,
    argument_parser,
    load_json,
    markdown_row,
    markdown_rule,
    plus_minus,
    pyplot,
    resume,
    sample_std,
    save_figure,
    save_json,
)
from real_models import reference

import hfssl  # noqa: F401
from hfssl.adapt.features import text_features
from hfssl.adapt.prompt_classifier import PromptClassifier
from hfssl.adapt.prompts import get_template, select_demonstrations
from hfssl.data.labelled import LabelledData, load_labelled
from hfssl.data.splits import held_out_split
from hfssl.models.loading import load_causal_lm, load_pretrained, load_tokenizer

TASKS = {"sst2": ("sst2/train.txt", "sentiment"), "trec": ("trec/train.txt", "question_type")}
# every prompt opens with the task's instruction naming the label words: without one, the chat-templated instruct
# model answers the question or comments on the review instead of classifying it (seen in a probe run)
INSTRUCTIONS = {
    "sst2": "Classify the sentiment of each review as positive or negative.",
    "trec": "Classify each question by the type of its answer: abbreviation, description, entity, person, location "
    "or number.",
}
PARTS = ("shots", "chat", "generate", "order", "gpt")


def load_split(task: str, num_queries: int) -> tuple[LabelledData, LabelledData, object]:
    """(queries, demonstration half, template): disjoint halves of the file (seed 0); queries a seeded subset."""
    path, preset = TASKS[task]
    template = get_template(preset, instruction=INSTRUCTIONS[task])
    data = load_labelled(str(DATA / path))
    if template.label_key_separator:
        data = data.merged_by_key(template.label_key_separator)
    demo_idx, query_idx = held_out_split(len(data), 0.5, seed=0)
    chosen = torch.randperm(len(query_idx), generator=torch.Generator().manual_seed(1))[:num_queries]
    return data.subset([query_idx[i] for i in sorted(chosen.tolist())]), data.subset(demo_idx), template


def summary(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": sample_std(values),
        "runs": values,
    }


def distinct_orders(k: int, count: int = 24) -> list[tuple[int, ...]]:
    """Orders of k demonstrations: the order as drawn first, then distinct permutations in a seeded order."""
    identity = tuple(range(k))
    others = [p for p in itertools.permutations(identity) if p != identity] if k <= 6 else []
    return [identity] + random.Random(0).sample(others, min(count - 1, len(others)))


class Scorer:
    """One model on one task: the prompts of a cell, scored, as metrics per demonstration draw."""

    def __init__(self, model, tokenizer, template, queries: LabelledData, demo_half: LabelledData, pool_size: int):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.queries, self.demo_half, self.pool_size = queries, demo_half, pool_size
        self.embeddings = None  # (demo half, queries): MiniLM sentence embeddings, for "nearest"
        self.classifiers = {}

    def classifier(self, chat: bool) -> PromptClassifier:
        if chat not in self.classifiers:
            self.classifiers[chat] = PromptClassifier(
                self.model, self.tokenizer, self.template, self.queries.names, batch_size=16, chat_template=chat
            )
        return self.classifiers[chat]

    def pool(self, seed: int) -> list[int]:
        """Indices into the demonstration half: seed s's pool."""
        n = len(self.demo_half)
        return sorted(random.Random(1000 + seed).sample(range(n), min(self.pool_size, n)))

    def demonstrations(self, k: int, strategy: str, seed: int, order: int | None = None) -> list[list[int]]:
        """Per query, k indices into the demonstration half; `order` re-shuffles a shared set (order 0: as drawn)."""
        pool = self.pool(seed)
        labels = self.demo_half.labels[pool].tolist()
        pool_emb = query_emb = None
        if strategy == "nearest":
            pool_emb, query_emb = self.embeddings[0][pool], self.embeddings[1]
        chosen = select_demonstrations(
            labels,
            k,
            strategy=strategy,
            seed=seed,
            num_queries=len(self.queries),
            pool_embeddings=pool_emb,
            query_embeddings=query_emb,
        )
        if order:
            permutation = distinct_orders(k)[order]
            chosen = [[chosen[0][i] for i in permutation]] * len(chosen)
        return [[pool[i] for i in idx] for idx in chosen]

    def score(self, k: int, strategy: str, seed: int, *, chat=False, mode="loglikelihood", order=None) -> dict:
        classifier = self.classifier(chat)
        chosen = self.demonstrations(k, strategy, seed, order)
        half = self.demo_half
        demos = [
            classifier.demonstrations([half.inputs[i] for i in idx], [int(half.labels[i]) for i in idx])
            for idx in chosen
        ]
        labels = self.queries.labels
        if mode == "generate":
            texts, predicted = classifier.generate(self.queries.inputs, demos, max_new_tokens=12)
            self.answers_sample = texts[:5]
            predicted = torch.tensor(predicted)
            return {
                "accuracy": (predicted == labels).double().mean().item(),
                "invalid_answers": (predicted < 0).double().mean().item(),
            }
        # per-query demonstrations (nearest) would need the content-free inputs under every query's own prompt:
        # 4x the cost of the cell, so nearest is scored raw only
        calibrate = strategy != "nearest"
        scores = classifier.score(self.queries.inputs, demos, calibrate=calibrate)
        predictions = {"": scores.loglik.argmax(-1)}
        if calibrate:
            predictions["_calibrated"] = scores.calibrated.argmax(-1)
        metrics = {"demonstrations_kept": statistics.fmean(scores.num_demonstrations)}
        for suffix, predicted in predictions.items():
            metrics[f"accuracy{suffix}"] = (predicted == labels).double().mean().item()
            # label bias: the share of queries given the most often predicted label (1/C when balanced)
            top = predicted.bincount(minlength=len(classifier.options)).max().item()
            metrics[f"top_label_share{suffix}"] = top / len(predicted)
        return metrics


def minilm_embeddings(texts_a: list[str], texts_b: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModel

    path = str(reference("minilm"))
    encoder, tokenizer = load_pretrained(AutoModel, path), load_tokenizer(path)
    with torch.no_grad():
        return tuple(
            text_features(encoder, tokenizer, texts, pooling="mean", batch_size=64) for texts in (texts_a, texts_b)
        )


def cells(part: str, shots: list[int], seeds: dict[str, int], orders: int, nearest_shots: list[int]) -> list[dict]:
    """The (k, strategy, seeds, chat, mode, order) cells of a part of the grid."""

    def draws(k, n):
        return list(range(n)) if k else [0]

    if part == "shots":
        out = [dict(k=0, strategy="random", seeds=[0])]
        for strategy in ("random", "balanced", "nearest"):
            ks = nearest_shots if strategy == "nearest" else shots
            out += [dict(k=k, strategy=strategy, seeds=draws(k, seeds[strategy])) for k in ks if k]
        return out
    if part in ("chat", "gpt"):
        return [dict(k=k, strategy="random", seeds=draws(k, seeds["balanced"]), chat=part == "chat") for k in shots]
    if part == "generate":  # the log-likelihood rows to compare with come from the shots and chat parts
        return [
            dict(k=k, strategy="random", seeds=draws(k, seeds["balanced"]), chat=chat, mode="generate")
            for chat in (False, True)
            for k in (0, 4)
            if k in shots
        ]
    if part == "order":
        return [
            dict(k=4, strategy="balanced", seeds=[s], orders=list(range(orders)), set=s)
            for s in range(seeds["balanced"])
        ]
    raise ValueError(part)


def _cell_key(part, task, k, strategy, prompt, mode, orders, seeds) -> tuple:
    return part, task, k, strategy, prompt, mode, orders, tuple(seeds)


def measure_cell(scorer: Scorer, cell: dict) -> dict[str, list[float]]:
    """Every metric of the cell, one value per demonstration seed (and order)."""
    runs: dict[str, list[float]] = {}
    for seed in cell["seeds"]:
        for order in cell.get("orders", [None]):
            metrics = scorer.score(
                cell["k"],
                cell["strategy"],
                seed,
                chat=cell.get("chat", False),
                mode=cell.get("mode", "loglikelihood"),
                order=order,
            )
            for name, value in metrics.items():
                runs.setdefault(name, []).append(value)
    return runs


def print_row(task: str, model_name: str, part: str, cell: dict, row: dict) -> None:
    extra = {
        "accuracy_calibrated": "calibrated",
        "invalid_answers": "invalid",
    }
    shown = [
        f"{label} {plus_minus(row[name]['mean'], row[name]['std'], '.3f')}"
        for name, label in extra.items()
        if name in row
    ]
    print(
        f"{task} {model_name} {part} k={cell['k']} {cell['strategy']} {row['prompt']} {row['mode']}: "
        f"{plus_minus(row['accuracy']['mean'], row['accuracy']['std'], '.3f')}"
        + "".join(f", {text}" for text in shown)
        + f" ({row['seconds']:.0f} s)",
        flush=True,
    )


def run_part(scorer: Scorer, task: str, model_name: str, part: str, cell_list, record, save) -> None:
    """The part's cells not in `record` yet, each measured, appended to record["rows"], saved and printed."""
    done = {
        _cell_key(r["part"], r["task"], r["k"], r["strategy"], r["prompt"], r["mode"], r["orders"], r["seeds"])
        for r in record["rows"]
    }
    for cell in cell_list:
        prompt, mode = "chat" if cell.get("chat") else "plain", cell.get("mode", "loglikelihood")
        orders = len(cell.get("orders", [None]))
        if _cell_key(part, task, cell["k"], cell["strategy"], prompt, mode, orders, cell["seeds"]) in done:
            continue
        start = time.perf_counter()
        runs = measure_cell(scorer, cell)
        row = {
            "part": part,
            "task": task,
            "model": model_name,
            "k": cell["k"],
            "strategy": cell["strategy"],
            "prompt": "chat" if cell.get("chat") else "plain",
            "mode": cell.get("mode", "loglikelihood"),
            "seeds": cell["seeds"],
            "orders": len(cell.get("orders", [None])),
            "seconds": time.perf_counter() - start,
            **{name: summary(values) for name, values in runs.items()},
        }
        if row["mode"] == "generate":
            row["answers_sample"] = scorer.answers_sample  # the last draw's first answers
        record["rows"].append(row)
        save()
        print_row(task, model_name, part, cell, row)


# ---- report --------------------------------------------------------------------------------------------------
def _cell(row: dict | None, metric: str) -> str:
    if row is None or metric not in row:
        return "—"
    m = row[metric]
    return f"{m['mean']:.3f}" if len(m["runs"]) == 1 else plus_minus(m["mean"], m["std"], ".3f")


def _find(rows, **match) -> dict | None:
    found = [r for r in rows if all(r.get(key) == value for key, value in match.items())]
    return found[0] if found else None


def accuracy_table(rows: list[dict], task: str, shots: list[int]) -> list[str]:
    """Raw and calibrated accuracy against k, a line per (model, prompt, selection) that has cells beyond k = 0."""
    out = [f"\n### {task}: accuracy, raw / calibrated (mean ± std over demonstration seeds)\n"]
    out += [markdown_row(["model, prompt", "selection", *(f"k={k}" for k in shots)]), markdown_rule(2, len(shots))]
    lines = [("SmolLM2, plain", s, "shots") for s in ("random", "balanced", "nearest")]
    lines += [("SmolLM2, chat", "random", "chat"), ("hfssl GPT, plain", "random", "gpt")]
    for label, strategy, part in lines:
        for metric in ("accuracy", "accuracy_calibrated"):
            cells_ = []
            for k in shots:
                row = _find(rows, task=task, part=part, k=k, strategy=strategy if k else "random")
                cells_.append(_cell(row, metric))
            if all(c == "—" for k, c in zip(shots, cells_) if k):  # k = 0 alone is the random row's
                continue
            name = f"{label} ({'calibrated' if metric.endswith('calibrated') else 'raw'})"
            out.append(markdown_row([name, strategy, *cells_]))
    return out


def generation_table(rows: list[dict], task: str) -> list[str]:
    """Greedy generation against log-likelihood scoring on the same seeds (nothing when no cell generated)."""
    generated = [r for r in rows if r["task"] == task and r["mode"] == "generate"]
    if not generated:
        return []
    out = ["\n| prompt | k | generation accuracy | invalid answers | log-likelihood accuracy (same seeds) |"]
    out.append(markdown_rule(1, 4))
    for r in generated:
        part = "chat" if r["prompt"] == "chat" else "shots"
        ll = _find(rows, task=task, part=part, k=r["k"], strategy="random")
        same = None
        if ll is not None:
            same = summary(ll["accuracy"]["runs"][: len(r["seeds"])])
        same_text = _cell({"a": same}, "a") if same else "—"
        out.append(markdown_row([r["prompt"], r["k"], _cell(r, "accuracy"), _cell(r, "invalid_answers"), same_text]))
    return out


def order_table(rows: list[dict], task: str) -> list[str]:
    """The spread over orders of each k=4 balanced demonstration set (nothing when the order part did not run)."""
    ordered = [r for r in rows if r["task"] == task and r["part"] == "order"]
    if not ordered:
        return []
    out = [
        "\n| k=4 balanced demonstration set | orders | raw: mean ± std (min-max) | calibrated: mean ± std (min-max) |",
        markdown_rule(0, 4),
    ]
    for r in ordered:
        texts = []
        for metric in ("accuracy", "accuracy_calibrated"):
            runs = r[metric]["runs"]
            texts.append(f"{plus_minus(r[metric]['mean'], r[metric]['std'], '.3f')} ({min(runs):.3f}-{max(runs):.3f})")
        out.append(markdown_row([f"seed {r['seeds'][0]}", r["orders"], *texts]))
    return out


def report(record: dict) -> str:
    """The saved tables of every task that has cells, as markdown."""
    rows, out = record["rows"], []
    shots = record["settings"]["shots"]
    for task in TASKS:
        if not any(r["task"] == task for r in rows):
            continue
        out += accuracy_table(rows, task, shots)
        out += generation_table(rows, task)
        out += order_table(rows, task)
    return "\n".join(out)


def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows, shots = record["rows"], record["settings"]["shots"]
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 5.5), squeeze=False)
    lines = [("shots", s) for s in ("random", "balanced", "nearest")] + [("chat", "random"), ("gpt", "random")]
    for ax, task in zip(axes[0], tasks):
        for i, (part, strategy) in enumerate(lines):
            for metric, style in (("accuracy", ":"), ("accuracy_calibrated", "-")):
                found = [
                    (k, _find(rows, task=task, part=part, k=k, strategy=strategy if k else "random")) for k in shots
                ]
                found = [(k, r) for k, r in found if r is not None and metric in r]
                if all(k == 0 for k, _ in found):  # nothing beyond the k = 0 cell that every selection shares
                    continue
                ax.errorbar(
                    [shots.index(k) for k, _ in found],
                    [r[metric]["mean"] for _, r in found],
                    yerr=[r[metric]["std"] for _, r in found],
                    linestyle=style,
                    marker="o",
                    color=f"C{i}",
                    capsize=3,
                    label=f"{'GPT' if part == 'gpt' else 'SmolLM2'} {part if part == 'chat' else ''} {strategy}"
                    f" {'cal.' if metric.endswith('calibrated') else 'raw'}",
                )
        chance = 1 / (2 if task == "sst2" else 6)
        ax.axhline(chance, color="gray", linestyle="--", label="chance")
        ax.set_xticks(range(len(shots)), [str(k) for k in shots])
        ax.set(xlabel="demonstrations k", ylabel="accuracy", title=f"{task}: raw (dotted) / calibrated (solid)")
        ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    save_figure(fig, path)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    add_quick(parser, "40 queries, k in {0, 4}, 2 seeds: checks the script.")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    parser.add_argument(
        "--nearest_shots",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="k of nearest selection (per-query prompts share no prefix: ~10x the cost of a random cell).",
    )
    parser.add_argument("--queries", type=int, default=300, help="Queries scored in every cell.")
    parser.add_argument("--pool_size", type=int, default=1000, help="Demonstration pool drawn per seed.")
    parser.add_argument("--random_seeds", type=int, default=5, help="Demonstration seeds of random selection.")
    parser.add_argument("--seeds", type=int, default=3, help="Demonstration seeds of every other cell.")
    parser.add_argument("--orders", type=int, default=5, help="Distinct orders of each k=4 demonstration set.")
    parser.add_argument("--model", default=None, help="The LM (default: the reference SmolLM2-135M-Instruct).")
    parser.add_argument("--gpt_model", type=Path, default=OUTPUTS / "gpt-main", help="A main-command GPT folder.")
    add_report(parser)
    add_fresh(parser)
    return parser.parse_args(argv)


def load_gpt(args):
    """The main-command GPT (model, tokenizer) for the gpt part, or None (with a message) when it is absent."""
    if "gpt" not in args.parts:
        return None
    if (args.gpt_model / "config.json").is_file():
        return load_causal_lm(str(args.gpt_model))
    print(
        f"gpt part skipped: no model in {args.gpt_model} (run `accelerate launch scripts/pretrain.py "
        f"--output_dir {args.gpt_model}` first)"
    )
    return None


def run_task(task: str, args, smollm2, gpt, seeds: dict[str, int], record: dict, save) -> None:
    """Every requested part of the grid on one task."""
    queries, demo_half, template = load_split(task, args.queries)
    print(f"\n{task}: {len(queries)} queries, demonstration half {len(demo_half)}, classes {queries.names}")
    scorer = Scorer(*smollm2, template, queries, demo_half, args.pool_size)
    if "shots" in args.parts:
        scorer.embeddings = minilm_embeddings(demo_half.inputs, queries.inputs)
    for part in args.parts:
        if part == "gpt":
            if gpt is None:
                continue
            part_scorer = Scorer(*gpt, template, queries, demo_half, args.pool_size)
            model_name = "hfssl GPT (main command)"
        else:
            part_scorer, model_name = scorer, "SmolLM2-135M-Instruct"
        run_part(
            part_scorer,
            task,
            model_name,
            part,
            cells(part, args.shots, seeds, args.orders, args.nearest_shots),
            record,
            save,
        )


def main():
    args = parse_args()
    name = "exp_icl_real_quick" if args.quick else "exp_icl_real"
    out = RESULTS / f"{name}.json"
    if args.report:
        print(report(load_json(out)))
        return
    if args.quick:
        args.queries, args.shots, args.random_seeds, args.seeds, args.orders, args.pool_size = 40, [0, 4], 2, 2, 3, 200
        args.nearest_shots = [4]
    seeds = {"random": args.random_seeds, "balanced": args.seeds, "nearest": args.seeds}
    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "gpt_model"} | {"gpt_model": str(args.gpt_model)},
        "rows": [],
    }
    # which cells run, not how they are measured: a run with other ones continues the saved results
    record = resume(out, record, args.fresh, run_control=("tasks", "parts", "nearest_shots", "report", "fresh"))
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save():
        save_json(out, record)

    start = time.perf_counter()
    smollm2 = load_causal_lm(args.model or str(reference("smollm2")))
    gpt = load_gpt(args)
    for task in args.tasks:
        run_task(task, args, smollm2, gpt, seeds, record, save)
    record["minutes"] = (time.perf_counter() - start) / 60
    save()
    print(report(record))
    plot(record, RESULTS / f"{name}.png")
    print(f"wrote {out} ({record['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
