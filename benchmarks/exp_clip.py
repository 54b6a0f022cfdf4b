"""Does image-text pretraining give zero-shot classification of classes it never saw? CLIP on CIFAR-10 captions of 7
classes (airplane .. frog), evaluated on the 3 held-back classes (horse, ship, truck) among their own names (3-way)
and on all 10 (10-way), on 2,000 held-out images no run trains on; 3 seeds.

Every run is `scripts/pretrain.py --objective clip`'s code path (`run_pretraining`): an hfssl ResNet image tower
(1 block per stage, widths 32-64-128-256, 32 px), projections to 256, batch 128, AdamW 1e-3, captions from the 18
CIFAR templates of the CLIP paper, --max_steps steps. Arms:
- locked MiniLM: all-MiniLM-L6-v2 frozen, its caption features cached (open_clip's --lock-text); image tower fresh;
- unlocked MiniLM: the same, MiniLM trained too (the same learning rate);
- random text tower: MiniLM's architecture, fresh weights, trained;
- SimCLR image + locked MiniLM: the image tower starts from a SimCLR encoder pretrained here on the same 7 classes'
  images (`--objective contrastive`, 300 steps, trained once and kept in outputs/exp_clip/simclr);
- LiT: that SimCLR encoder locked (its features cached, no augmentation), MiniLM trained (Zhai et al. 2022).
Each trained model is evaluated with one template ("a photo of a {}."), and as prompt ensembles with the 7 "simple"
and 80 ImageNet templates of open_clip (from the CLIP paper's notebook) and the 18 CIFAR templates it trained on.
Against labels: a logistic-regression probe on the locked-MiniLM run's image-tower features, with K = 1, 4, 16
labelled training images of each unseen class (seeded), 3-way.

    python benchmarks/exp_clip.py             # every cell (a rerun measures only the missing ones)
    python benchmarks/exp_clip.py --quick     # 1 seed, 30 steps, 2 arms: checks the script
    python benchmarks/exp_clip.py --report    # print the saved tables

Results: benchmarks/results/exp_clip.json after every cell, exp_clip.png. Needs ../shared/data/cifar10 and
`python -m hfssl.reference fetch` (MiniLM).
"""

import statistics
import time
from pathlib import Path

import datasets
import torch
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
    reset_accelerate,
    result_path,
    resume,
    sample_std,
    save_figure,
    save_json,
)
from real_models import reference

import hfssl
from hfssl.adapt.linear_probe import fit_linear_probe
from hfssl.adapt.zero_shot_image import evaluate_zero_shot
from hfssl.data.caption_templates import TEMPLATE_SETS
from hfssl.data.labelled import few_shot_indices
from hfssl.data.vision import Normalize, load_images
from hfssl.models.loading import load_image_processor, load_pretrained, load_tokenizer
from hfssl.training.clip import ClipArguments
from hfssl.training.contrastive import ContrastiveArguments
from hfssl.training.loop import run_pretraining

CIFAR = DATA / "cifar10" / "train.parquet"
WORK = OUTPUTS / "exp_clip"
SEEN = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog"]
UNSEEN = ["horse", "ship", "truck"]
HELD_OUT = 2000
SEEDS = (0, 1, 2)
KS = (1, 4, 16)
TOWER = {"image_size": 32, "resnet_layers": [1, 1, 1, 1], "resnet_widths": [32, 64, 128, 256]}
ARMS = {
    "locked MiniLM": {"lock_text_tower": True},
    "unlocked MiniLM": {},
    "random text tower": {"text_tower_init": "random"},
    "SimCLR image + locked MiniLM": {"lock_text_tower": True, "simclr": True},
    "LiT: locked SimCLR image, MiniLM trained": {"lock_image_tower": True, "simclr": True},
}
EVAL_TEMPLATES = ("photo", "simple", "cifar", "openai")
SHORT = {  # the arms' names under the plot's bars
    "locked MiniLM": "locked\nMiniLM",
    "unlocked MiniLM": "unlocked\nMiniLM",
    "random text tower": "random\ntext tower",
    "SimCLR image + locked MiniLM": "SimCLR image\n+ locked MiniLM",
    "LiT: locked SimCLR image, MiniLM trained": "LiT: locked\nSimCLR image",
}


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--max_steps", type=int, default=150, help="Optimizer steps of every CLIP run.")
    add_quick(parser, "1 seed, 30 steps, the locked and random-text arms: checks the script.")
    add_fresh(parser)
    add_report(parser)
    return parser.parse_args(argv)


def split_data() -> tuple[Path, list[int], list[int]]:
    """(the training pool's parquet, held-out row ids, pool row ids): a seeded 2,000 of CIFAR-10's training split are
    held out; the pool's seen-class images are written once to outputs/exp_clip/seen.parquet."""
    table = datasets.load_dataset("parquet", data_files=str(CIFAR), split="train")
    order = torch.randperm(len(table), generator=torch.Generator().manual_seed(0)).tolist()
    held_out, pool = order[:HELD_OUT], order[HELD_OUT:]
    seen_path = WORK / "seen.parquet"
    if not seen_path.is_file():
        names = table.features["label"].names
        seen_ids = {names.index(n) for n in SEEN}
        labels = table["label"]
        seen_path.parent.mkdir(parents=True, exist_ok=True)
        table.select([i for i in pool if labels[i] in seen_ids]).to_parquet(seen_path)
    return seen_path, held_out, pool


def simclr_encoder(seen: Path) -> Path:
    """A SimCLR encoder pretrained on the seen classes' pool images (once; kept in outputs/exp_clip/simclr)."""
    out = WORK / "simclr"
    if not (out / "model.safetensors").is_file():
        reset_accelerate()
        run_pretraining(
            ContrastiveArguments(
                **TOWER,
                dataset=str(seen),
                output_dir=str(out),
                max_steps=300,
                per_device_train_batch_size=128,
                projection_dims=[512, 128],
                eval_steps=0,
                save_steps=0,
                report_to="none",
                overwrite_output_dir=True,
            )
        )
    return out


def model_dir(arm: str, seed: int) -> Path:
    return WORK / arm.split(":")[0].replace(" ", "_").replace("+", "and") / f"seed{seed}"


def train(arm: str, seed: int, steps: int, seen: Path, simclr: Path | None) -> tuple[Path, float]:
    flags = dict(ARMS[arm])
    if flags.pop("simclr", False):
        flags["image_model_name_or_path"] = str(simclr)
    out = model_dir(arm, seed)
    reset_accelerate()
    start = time.perf_counter()
    run_pretraining(
        ClipArguments(
            **TOWER,
            **flags,
            dataset=str(seen),
            text_model_name_or_path=str(reference("minilm")),
            output_dir=str(out),
            seed=seed,
            max_steps=steps,
            per_device_train_batch_size=128,
            learning_rate=1e-3,
            templates="cifar",
            eval_split_fraction=0.0,
            eval_steps=0,
            save_steps=0,
            report_to="none",
            overwrite_output_dir=True,
        )
    )
    return out, (time.perf_counter() - start) / 60


def zero_shot(model_dir: Path, held_out) -> dict[str, float]:
    """Accuracy on the held-out images: 10-way over all, 3-way over the unseen classes' images, per template set."""
    model = load_pretrained(hfssl.DualEncoderModel, str(model_dir)).eval()
    tokenizer = load_tokenizer(str(model_dir))
    processor = load_image_processor(str(model_dir))
    normalize = Normalize(list(processor.image_mean), list(processor.image_std))
    names = held_out.label_names
    unseen = held_out.of_classes([names.index(n) for n in UNSEEN], relabel=True)
    scores = {}
    for key in EVAL_TEMPLATES:
        templates = TEMPLATE_SETS[key]
        scores[f"10-way {key}"] = evaluate_zero_shot(model, tokenizer, held_out, normalize, names, templates).accuracy
        scores[f"3-way {key}"] = evaluate_zero_shot(model, tokenizer, unseen, normalize, UNSEEN, templates).accuracy
    return scores


def probe(model_dir: Path, pool, held_out, seed: int) -> dict[str, float]:
    """3-way logistic-regression probe on the image tower's features: K labelled pool images per unseen class."""
    model = load_pretrained(hfssl.DualEncoderModel, str(model_dir)).eval()
    processor = load_image_processor(str(model_dir))
    normalize = Normalize(list(processor.image_mean), list(processor.image_std))
    ids = [held_out.label_names.index(n) for n in UNSEEN]

    def unseen_features(data):
        unseen = data.of_classes(ids, relabel=True)
        with torch.no_grad():
            pixels = normalize(unseen.pixels)
            features = torch.cat([model.image_tower_features(pixels[i : i + 256]) for i in range(0, len(unseen), 256)])
        return features, unseen.labels

    x_pool, y_pool = unseen_features(pool)
    x_test, y_test = unseen_features(held_out)
    scores = {}
    for k in KS:
        chosen = few_shot_indices(y_pool, k, seed)
        head = fit_linear_probe(x_pool[chosen], y_pool[chosen], len(UNSEEN))
        with torch.no_grad():
            scores[f"probe K={k}"] = (head(x_test.to(head.weight.dtype)).argmax(1) == y_test).float().mean().item()
    return scores


def plan(args) -> tuple[list[str], tuple[int, ...], int]:
    if args.quick:
        return ["locked MiniLM", "random text tower"], (0,), 30
    return list(ARMS), SEEDS, args.max_steps


def run_cell(arm: str, seed: int, steps: int, data: dict) -> dict:
    simclr = simclr_encoder(data["seen"]) if ARMS[arm].get("simclr") else None
    model_dir, minutes = train(arm, seed, steps, data["seen"], simclr)
    scores = zero_shot(model_dir, data["held_out"])
    if arm == "locked MiniLM":
        scores |= probe(model_dir, data["pool"], data["held_out"], seed)
    print(f"{arm}, seed {seed}: {minutes:.1f} min, " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return {"arm": arm, "seed": seed, "minutes": minutes, "scores": scores}


def summary(rows: list[dict], arm: str, key: str) -> tuple[float, float, int] | None:
    values = [r["scores"][key] for r in rows if r["arm"] == arm and key in r["scores"]]
    return (statistics.mean(values), sample_std(values), len(values)) if values else None


def tables(record: dict) -> str:
    rows = record["rows"]
    keys = [f"{n}-way {t}" for n in (3, 10) for t in EVAL_TEMPLATES]
    lines = [markdown_row(["arm", *keys, "minutes"]), markdown_rule(1, len(keys) + 1)]
    for arm in ARMS:
        cells = [summary(rows, arm, key) for key in keys]
        if not any(cells):
            continue
        minutes = [r["minutes"] for r in rows if r["arm"] == arm]
        shown = [plus_minus(c[0], c[1], scale=100) if c else "" for c in cells]
        lines.append(markdown_row([arm, *shown, f"{statistics.mean(minutes):.1f}"]))
    lines += ["", markdown_row(["unseen 3-way, locked MiniLM", "accuracy"]), markdown_rule(1, 1)]
    for key in ("3-way photo", "3-way cifar", *(f"probe K={k}" for k in KS)):
        cell = summary(rows, "locked MiniLM", key)
        if cell:
            label = f"zero-shot, {key.split()[1]} templates" if key.startswith("3-way") else f"linear probe, {key[6:]}"
            lines.append(markdown_row([label, plus_minus(cell[0], cell[1], scale=100)]))
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    rows = record["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    arms = [a for a in ARMS if summary(rows, a, "3-way cifar")]
    for offset, key in ((-0.2, "3-way cifar"), (0.2, "10-way cifar")):
        cells = [summary(rows, a, key) for a in arms]
        left.bar(
            [i + offset for i in range(len(arms))],
            [100 * c[0] for c in cells],
            0.4,
            yerr=[100 * c[1] for c in cells],
            label=key.replace(" cifar", ", 18 templates"),
        )
    left.set_xticks(range(len(arms)), [SHORT[a] for a in arms], fontsize=8)
    left.axhline(100 / 3, ls=":", c="grey")
    left.set_ylabel("zero-shot accuracy on held-out images (%)")
    left.legend()
    probes = [summary(rows, "locked MiniLM", f"probe K={k}") for k in KS]
    if all(probes):
        right.errorbar(KS, [100 * p[0] for p in probes], [100 * p[1] for p in probes], marker="o", label="linear probe")
        zero = summary(rows, "locked MiniLM", "3-way cifar")
        right.axhline(100 * zero[0], c="C1", label="zero-shot (no labels)")
        right.set_xscale("log", base=2)
        right.set_xlabel("labelled images per unseen class (K)")
        right.set_ylabel("3-way accuracy on unseen classes (%)")
        right.legend()
    fig.suptitle(f"CLIP on 7 CIFAR-10 classes, {record['settings']['max_steps']} steps, {len(SEEDS)} seeds")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    args = parse_args()
    out = result_path("exp_clip", "quick" if args.quick else "")
    arms, seeds, steps = plan(args)
    if args.report:
        print(tables(load_json(out)))
        return
    if not CIFAR.is_file():
        raise SystemExit(f"error: {CIFAR} is missing (../shared/data).")
    record = resume(
        out, {"settings": {"max_steps": steps, "held_out": HELD_OUT, "tower": TOWER}, "rows": []}, args.fresh
    )
    seen, held_out_ids, pool_ids = split_data()
    images = load_images(str(CIFAR), image_size=32)
    data = {"seen": seen, "held_out": images.subset(held_out_ids), "pool": images.subset(pool_ids)}
    for row in record["rows"]:  # cells measured before a template set joined EVAL_TEMPLATES: from their saved model
        missing = [t for t in EVAL_TEMPLATES if f"3-way {t}" not in row["scores"]]
        if missing and (model_dir(row["arm"], row["seed"]) / "config.json").is_file():
            row["scores"] = zero_shot(model_dir(row["arm"], row["seed"]), data["held_out"]) | row["scores"]
            save_json(out, record)
    done = {(r["arm"], r["seed"]) for r in record["rows"]}
    for seed in seeds:
        for arm in arms:
            if (arm, seed) not in done:
                record["rows"].append(run_cell(arm, seed, steps, data))
                save_json(out, record)
    print(tables(record))
    plot(record, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
