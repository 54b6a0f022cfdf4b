"""Few labels, many tasks: meta-learning over a real text encoder (all-MiniLM-L6-v2) on TREC's fine classes.

TREC (../shared/data/trec/train.txt) labels 50 fine classes (`LOC:city`, `HUM:ind`, ...). The classes with at least
15 examples (5 shots + 10 queries) are split with seed 0 into --test_classes meta-test classes and the rest for
meta-training: no meta-test class, and none of its questions, is ever trained on. Every row is scored on the same
5-way meta-test episodes (`EpisodeSampler(..., seed = s + 2)`, as `run_meta_training` draws them), 1 and 5 shots,
10 queries per class, --episodes episodes per setting and meta-training seed s:

- probe (frozen MiniLM): per episode, `fit_linear_probe` (L-BFGS logistic regression) on the support set's
  mean-pooled MiniLM sentence embeddings (what all-MiniLM-L6-v2 was trained to produce), scored on the queries;
- nearest centroid (frozen MiniLM): ProtoNet's rule on the same frozen embeddings, with no meta-training;
- ProtoNet / ANIL from MiniLM: `run_meta_training` (scripts/meta_train.py's code) starting from MiniLM as an
  `AutoModelForSequenceClassification` (phi = its [CLS] pooler output), meta-trained on 5-way 5-shot episodes of
  the meta-train classes for --meta_steps steps (Adam 3e-5), tested at 1 and 5 shots (ANIL: 10 inner steps);
- ProtoNet / ANIL from random init: the same, from the identical BertModel at random init (Adam 3e-4: a fresh
  network is given a from-scratch learning rate).

Each number is the mean over meta-training seeds of the mean query accuracy over episodes, ± the std over seeds,
with the 95% CI over episodes (1.96 s / sqrt(n)) of each seed beside it.

    python benchmarks/exp_meta_text.py --quick     # a few minutes: 1 seed, 10 meta-steps, 20 episodes
    python benchmarks/exp_meta_text.py             # the README table (about 15 minutes on 2 cores)
    python benchmarks/exp_meta_text.py --report    # print the saved table

Needs `python -m hfssl.reference fetch`. Writes benchmarks/results/exp_meta_text.json and exp_meta_text.png.
"""

import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import (
    DATA,
    OUTPUTS,
    RESULTS,
    add_quick,
    add_report,
    argument_parser,
    load_json,
    markdown_row,
    markdown_rule,
    plus_minus,
    pyplot,
    reset_accelerate,
    sample_std,
    save_figure,
    save_json,
)
from real_models import random_init_copy, reference

import hfssl  # noqa: F401
from hfssl.adapt.features import text_features
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe
from hfssl.data.episodes import EpisodeSampler
from hfssl.data.labelled import LabelledData, load_labelled
from hfssl.meta.trainer import MetaArguments, mean_ci95, run_meta_training
from hfssl.models.loading import load_pretrained, load_tokenizer

TREC = DATA / "trec" / "train.txt"
WAYS, QUERIES, TEST_SHOTS, TRAIN_SHOTS = 5, 10, (1, 5), 5
MIN_EXAMPLES = max(TEST_SHOTS) + QUERIES


def class_split(work: Path, num_test: int) -> tuple[Path, Path, LabelledData, dict]:
    """Write the meta-train and meta-test classes' questions as 'label text' files; (train file, test file,
    the meta-test data as load_labelled reads that file, a description)."""
    data = load_labelled(str(TREC))
    counts = torch.bincount(data.labels, minlength=len(data.names))
    kept = [c for c in range(len(data.names)) if counts[c] >= MIN_EXAMPLES]
    order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(0)).tolist()
    test = sorted(kept[i] for i in order[:num_test])
    train = sorted(kept[i] for i in order[num_test:])
    files = work / "meta_train.txt", work / "meta_test.txt"
    for classes, file in zip((train, test), files):
        wanted = set(classes)
        lines = [f"{data.names[y]} {x}\n" for x, y in zip(data.inputs, data.labels.tolist()) if y in wanted]
        file.write_text("".join(lines))
    described = {
        "meta_train_classes": [data.names[c] for c in train],
        "meta_test_classes": [data.names[c] for c in test],
        "dropped_classes (fewer than 15 examples)": [data.names[c] for c in range(len(data.names)) if c not in kept],
    }
    return *files, load_labelled(str(files[1])), described


def frozen_rows(test: LabelledData, minilm: Path, seeds: list[int], episodes: int) -> dict:
    """Per-episode probe and nearest centroid on frozen mean-pooled MiniLM embeddings, on the meta-test episodes."""
    from transformers import AutoModel

    model, tokenizer = load_pretrained(AutoModel, str(minilm)), load_tokenizer(str(minilm))
    with torch.no_grad():
        embeddings = text_features(model, tokenizer, test.inputs, pooling="mean", batch_size=64)
    rows = {"probe (frozen MiniLM)": {}, "nearest centroid (frozen MiniLM)": {}}
    for k in TEST_SHOTS:
        per_seed = {name: [] for name in rows}
        for seed in seeds:
            sampler = EpisodeSampler(test.labels, None, WAYS, k, QUERIES, seed=seed + 2)
            accuracy = {name: [] for name in rows}
            for i in range(episodes):
                episode = sampler[i]
                x_s, x_q = embeddings[episode.support], embeddings[episode.query]
                head = fit_linear_probe(x_s, episode.support_labels, WAYS, LinearProbeConfig(seed=seed))
                with torch.no_grad():
                    predicted = head(x_q.to(head.weight.dtype)).argmax(-1)
                accuracy["probe (frozen MiniLM)"].append((predicted == episode.query_labels).float().mean().item())
                prototypes = torch.stack([x_s[episode.support_labels == c].mean(0) for c in range(WAYS)])
                nearest = torch.cdist(x_q, prototypes).argmin(-1)
                accuracy["nearest centroid (frozen MiniLM)"].append(
                    (nearest == episode.query_labels).float().mean().item()
                )
            for name in rows:
                per_seed[name].append(mean_ci95(accuracy[name]))
        for name in rows:
            rows[name][f"{k}-shot"] = per_seed[name]
    return rows


def meta_trained(algorithm: str, init: Path, lr: float, files, seed: int, args, work: Path, keep=None) -> dict:
    """run_meta_training from `init`: {'5-way 1-shot': (mean, ci95), ...} on the meta-test classes. The model is
    dropped after scoring unless `keep` names a folder for it."""
    reset_accelerate()
    with tempfile.TemporaryDirectory(dir=work) as cell:
        result = run_meta_training(
            MetaArguments(
                dataset=str(files[0]),
                eval_dataset=str(files[1]),
                model_name_or_path=str(init),
                pooling="cls",  # as measured: transformers' BERT classifier, [CLS] through its pooler
                output_dir=str(keep or Path(cell) / "meta"),
                overwrite_output_dir=keep is not None,
                algorithm=algorithm,
                ways=WAYS,
                shots=TRAIN_SHOTS,
                queries=QUERIES,
                test_shots=list(TEST_SHOTS),
                max_steps=args.meta_steps,
                meta_batch_size=1,
                outer_lr=lr,
                inner_lr=0.5,
                inner_steps=3,
                eval_inner_steps=10,
                eval_steps=0,
                save_steps=0,
                test_episodes=args.episodes,
                class_split=[1.0, 0.0, 0.0],  # every --dataset class meta-trains; --eval_dataset holds the test ones
                seed=seed,
            )
        )
    return {name: (score.accuracy, score.ci95) for name, score in result.meta_test.items()}


def card_check(folder: Path, scores: dict, work: Path) -> dict:
    """The dry-run model card of a kept meta-trained model carries the meta-test accuracies it measured."""
    from huggingface_hub import ModelCard

    from hfssl.hub.upload import push_to_hub

    upload = work / "card-example-upload"
    push_to_hub(folder, "you/minilm-trec-protonet", dry_run=True, dry_run_dir=upload)
    card = ModelCard.load(upload / "README.md")
    on_card = sorted(round(r.metric_value, 4) for r in card.data.eval_results if r.metric_type == "accuracy")
    measured = sorted(round(accuracy, 4) for accuracy, _ in scores.values())
    check = {"run": "ProtoNet from MiniLM, seed 0", "card_accuracies": on_card, "measured": measured}
    if on_card != measured:
        raise SystemExit(f"error: the model card does not carry the measured meta-test accuracies: {check}")
    print(f"model card check: {check}")
    return check


def summarise(per_seed: list[tuple[float, float]]) -> dict:
    means = [m for m, _ in per_seed]
    return {
        "mean": statistics.fmean(means),
        "std": sample_std(means),
        "per_seed": [{"accuracy": m, "ci95": ci} for m, ci in per_seed],
    }


def markdown_table(record: dict) -> str:
    settings = record["settings"]
    lines = [
        f"{settings['ways']}-way episodes on {len(record['classes']['meta_test_classes'])} held-out TREC fine classes; "
        f"{settings['episodes']} episodes per setting and seed; seeds {settings['seeds']}; "
        "accuracy (%) mean ± std over seeds [95% CI over the episodes of each seed]\n",
        markdown_row(["method", "init", "1-shot", "5-shot"]),
        markdown_rule(2, 2),
    ]
    for row in record["rows"]:
        cells = []
        for k in TEST_SHOTS:
            cell = row[f"{WAYS}-way {k}-shot"]
            cis = "/".join(f"{100 * s['ci95']:.1f}" for s in cell["per_seed"])
            cells.append(f"{plus_minus(cell['mean'], cell['std'], scale=100)} [±{cis}]")
        lines.append(markdown_row([row["method"], row["init"], *cells]))
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows = record["rows"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        cells = [row[f"{WAYS}-way {k}-shot"] for k in TEST_SHOTS]
        ax.bar(
            [j + i * width for j in range(len(TEST_SHOTS))],
            [100 * c["mean"] for c in cells],
            width,
            yerr=[100 * c["std"] for c in cells],
            capsize=3,
            label=f"{row['method']} ({row['init']})",
        )
    ax.axhline(100 / WAYS, color="gray", linestyle="--", label="chance")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(TEST_SHOTS))], [f"{WAYS}-way {k}-shot" for k in TEST_SHOTS])
    ax.set(ylabel="meta-test accuracy (%)", title="TREC fine classes held out from meta-training")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    add_quick(parser, "1 seed, 10 meta-steps, 20 episodes.")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Meta-training seeds (default 0 1 2).")
    parser.add_argument("--meta_steps", type=int, default=60, help="Outer steps of each meta-training run.")
    parser.add_argument("--episodes", type=int, default=100, help="Meta-test episodes per shot setting and seed.")
    parser.add_argument("--test_classes", type=int, default=12, help="Fine classes held out for meta-testing.")
    parser.add_argument("--algorithms", nargs="+", default=["protonet", "anil"], choices=["protonet", "anil"])
    parser.add_argument("--work_dir", type=Path, default=OUTPUTS / "exp_meta_text")
    add_report(parser, "Print the saved table and exit.")
    return parser.parse_args(argv)


def add_frozen_rows(record: dict, save, test: LabelledData, minilm: Path, args) -> None:
    """The probe and nearest-centroid rows on frozen MiniLM embeddings, each saved and printed."""
    for method, cells in frozen_rows(test, minilm, args.seeds, args.episodes).items():
        row = {"method": method, "init": "MiniLM"}
        row |= {f"{WAYS}-way {k}": summarise(per_seed) for k, per_seed in cells.items()}
        record["rows"].append(row)
        save()
        print(row["method"], {k: round(v["mean"], 3) for k, v in row.items() if isinstance(v, dict)}, flush=True)


def add_meta_trained_rows(record: dict, save, files, minilm: Path, args) -> None:
    """ProtoNet / ANIL meta-trained from MiniLM and from random init, a row each (saved, printed); the ProtoNet run
    from MiniLM with seed args.seeds[0] is kept for the model card check."""
    from transformers import AutoModel

    inits = {
        "MiniLM": (minilm, 3e-5),
        "random init": (random_init_copy(minilm, args.work_dir / "bert-random", AutoModel), 3e-4),
    }
    for algorithm in args.algorithms:
        for init, (folder, lr) in inits.items():
            row_start = time.perf_counter()
            keep = args.work_dir / "card-example" if (algorithm, init) == ("protonet", "MiniLM") else None
            scores = [
                meta_trained(algorithm, folder, lr, files, seed, args, args.work_dir, keep if i == 0 else None)
                for i, seed in enumerate(args.seeds)
            ]
            if keep is not None:
                record["card_check"] = card_check(keep, scores[0], args.work_dir)
            row = {"method": f"{'ProtoNet' if algorithm == 'protonet' else 'ANIL'} (meta-trained)", "init": init}
            row |= {key: summarise([s[key] for s in scores]) for key in scores[0]}
            row["seconds_per_seed"] = (time.perf_counter() - row_start) / len(args.seeds)
            record["rows"].append(row)
            save()
            print(
                row["method"], init, {k: round(v["mean"], 3) for k, v in row.items() if isinstance(v, dict)}, flush=True
            )


def main():
    args = parse_args()
    name = "exp_meta_text_quick" if args.quick else "exp_meta_text"
    out = RESULTS / f"{name}.json"
    if args.report:
        print(markdown_table(load_json(out)))
        return
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    if args.quick:
        args.meta_steps, args.episodes = min(args.meta_steps, 10), min(args.episodes, 20)
    minilm = reference("minilm")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    *files, test, classes = class_split(args.work_dir, args.test_classes)
    print(f"meta-test classes: {classes['meta_test_classes']}")
    record = {
        "settings": {"ways": WAYS, "queries": QUERIES, "train_shots": TRAIN_SHOTS, "seeds": args.seeds}
        | {"meta_steps": args.meta_steps, "episodes": args.episodes},
        "classes": classes,
        "rows": [],
    }

    def save():
        save_json(out, record)

    add_frozen_rows(record, save, test, minilm, args)
    add_meta_trained_rows(record, save, files, minilm, args)
    record["minutes"] = (time.perf_counter() - start) / 60
    save()
    print(markdown_table(record))
    plot(record, RESULTS / f"{name}.png")
    print(f"wrote {out} ({record['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
