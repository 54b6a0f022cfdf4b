"""Does meta-learning help when the target task has 1 or 5 labelled examples per class?

Omniglot (../shared/data/omniglot/images_background_small1.zip: 136 characters x 20 drawers, 28x28),
characters split into meta-train / meta-validation / meta-test (70/15/15%, seed 0). Every method is scored
on the same 5-way episodes over meta-test characters (1 and 5 shots, 15 queries, --episodes each), as
mean query accuracy +- 95% CI over episodes. The network is the meta_train.py default (ResNet, one basic
block per stage, widths 32-32-64-64).

- scratch: a fresh network trained on the support set only (Adam, --adapt_steps steps);
- SimCLR + linear probe / + fine-tune: the encoder is pretrained with SimCLR (hfssl's contrastive
  objective, `run_pretraining`) on the *meta-train* images only, then per episode a logistic-regression
  probe (L-BFGS) on its features, or fine-tuning of encoder + head on the support set;
- MAML, FOMAML, ANIL, ProtoNet: `run_meta_training` on the meta-train characters (each trained with the
  shots it is tested with), tested with 3 inner steps (ProtoNet: none);
- SimCLR + ANIL: ANIL meta-training starting from the SimCLR encoder.

    python benchmarks/exp_meta.py                 # the README table (about 40 minutes on 2 cores)
    python benchmarks/exp_meta.py --episodes 600 --meta_steps 1000   # tighter intervals, longer training
    python benchmarks/exp_meta.py --quick         # a few minutes, to check the script

Prints the table, writes benchmarks/results/exp_meta.json and exp_meta.png.
"""

import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from common import (
    DATA,
    OUTPUTS,
    RESULTS,
    argument_parser,
    markdown_row,
    markdown_rule,
    plus_minus,
    pyplot,
    reset_accelerate,
    save_figure,
    save_json,
)
from PIL import Image
from torch.nn import functional as F

import hfssl  # noqa: F401
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe
from hfssl.data.episodes import EpisodeSampler, split_classes
from hfssl.data.vision import channel_stats, load_images
from hfssl.meta.algorithms import features, use_batch_statistics
from hfssl.meta.episode_data import EpisodeData
from hfssl.meta.trainer import MetaArguments, build_model, mean_ci95, run_meta_training
from hfssl.training.contrastive import ContrastiveArguments
from hfssl.training.loop import run_pretraining

OMNIGLOT = DATA / "omniglot" / "images_background_small1.zip"
WIDTHS = [32, 32, 64, 64]


def simclr_pretrain(images, train_classes, out: Path, steps: int) -> Path:
    """SimCLR on the meta-train characters' images only (written as an image folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        keep = torch.isin(images.labels, torch.tensor(train_classes))
        for i in torch.nonzero(keep).flatten().tolist():
            folder = Path(tmp) / f"c{int(images.labels[i]):03d}"
            folder.mkdir(exist_ok=True)
            Image.fromarray(images.pixels[i].permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
        reset_accelerate()
        run_pretraining(
            ContrastiveArguments(
                dataset=tmp,
                image_size=28,
                resnet_layers=[1, 1, 1, 1],
                resnet_widths=list(WIDTHS),
                projection_dims=[128, 64],
                per_device_train_batch_size=128,
                learning_rate=2e-3,
                max_steps=steps,
                eval_steps=0,
                save_steps=0,
                output_dir=str(out),
                overwrite_output_dir=True,
                report_to="none",
                knn_k=[20],
                knn_bank_size=1000,
                eval_split_fraction=0.05,
                seed=0,
            )
        )
    return out


def _meta_args(**kw) -> MetaArguments:
    return MetaArguments(
        dataset=str(OMNIGLOT), image_size=28, resnet_widths=WIDTHS, class_split=[0.7, 0.15, 0.15], seed=0, **kw
    )


def train_from(model_factory, data, episode, steps: int, lr: float) -> float:
    """Train a fresh copy on the support set (Adam), then query accuracy."""
    model = model_factory()
    use_batch_statistics(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x_s, y_s, x_q, y_q = data.tensors(episode)
    for _ in range(steps):
        loss = F.cross_entropy(model(x_s).logits, y_s)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (model(x_q).logits.argmax(-1) == y_q).float().mean().item()


def probe_accuracy(encoder, data, episode) -> float:
    x_s, y_s, x_q, y_q = data.tensors(episode)
    with torch.no_grad():
        f_s, f_q = features(encoder, x_s), features(encoder, x_q)
    head = fit_linear_probe(f_s, y_s, int(y_s.max()) + 1, LinearProbeConfig(l2=1e-2))
    with torch.no_grad():
        return (head(f_q.to(head.weight.dtype)).argmax(-1) == y_q).float().mean().item()


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--episodes", type=int, default=200, help="Test episodes per cell (meta_train.py: 600).")
    parser.add_argument("--meta_steps", type=int, default=300)
    parser.add_argument("--simclr_steps", type=int, default=400)
    parser.add_argument("--adapt_steps", type=int, default=20)
    parser.add_argument("--output_dir", type=Path, default=OUTPUTS / "exp_meta")
    args = parser.parse_args(argv)
    if not OMNIGLOT.is_file():
        raise SystemExit(f"{OMNIGLOT} not found: this experiment needs the shared data folder.")
    if args.quick:
        args.episodes, args.meta_steps, args.simclr_steps, args.adapt_steps = 40, 20, 20, 10
    return args


def record(table: dict, name: str, k: int, accuracies: list[float]) -> None:
    """A per-episode method's cell: mean and 95% CI over its episodes, into table[name]["<k>-shot"], printed."""
    m, ci = mean_ci95(accuracies)
    table.setdefault(name, {})[f"{k}-shot"] = {"accuracy": m, "ci95": ci, "episodes": len(accuracies)}
    print(f"{name:<24} 5-way {k}-shot: {100 * m:5.1f} +- {100 * ci:.1f}", flush=True)


def per_episode_rows(args, images, train_classes, data, samplers, table: dict, timings: dict) -> Path:
    """scratch, then SimCLR (pretrained on the meta-train images) + linear probe / + fine-tune; the SimCLR folder."""
    start = time.perf_counter()
    scratch = lambda: build_model(_meta_args())  # noqa: E731
    for k, sampler in samplers.items():
        record(
            table,
            "scratch",
            k,
            [train_from(scratch, data, sampler[i], args.adapt_steps, 1e-3) for i in range(args.episodes)],
        )
    timings["scratch"] = time.perf_counter() - start

    start = time.perf_counter()
    simclr_dir = simclr_pretrain(images, train_classes, args.output_dir / "simclr", args.simclr_steps)
    timings["simclr pretraining"] = time.perf_counter() - start
    simclr = lambda: build_model(_meta_args(model_name_or_path=str(simclr_dir)))  # noqa: E731
    encoder = simclr().eval()
    for k, sampler in samplers.items():
        record(
            table, "SimCLR + linear probe", k, [probe_accuracy(encoder, data, sampler[i]) for i in range(args.episodes)]
        )
        record(
            table,
            "SimCLR + fine-tune",
            k,
            [train_from(simclr, data, sampler[i], args.adapt_steps, 1e-3) for i in range(args.episodes)],
        )
    return simclr_dir


def meta_trained_rows(args, simclr_dir: Path, table: dict, timings: dict) -> None:
    """MAML, FOMAML, ANIL, ProtoNet and SimCLR + ANIL, each meta-trained with the shots it is tested with."""
    for name, extra in [
        ("MAML", {"algorithm": "maml"}),
        ("FOMAML", {"algorithm": "fomaml"}),
        ("ANIL", {"algorithm": "anil"}),
        ("ProtoNet", {"algorithm": "protonet"}),
        ("SimCLR + ANIL", {"algorithm": "anil", "model_name_or_path": str(simclr_dir)}),
    ]:
        for k in (1, 5):
            start = time.perf_counter()
            meta = _meta_args(
                **extra,
                shots=k,
                test_shots=[k],
                max_steps=args.meta_steps,
                eval_steps=0,
                save_steps=0,
                test_episodes=args.episodes,
                output_dir=str(args.output_dir / f"{name.replace(' ', '_')}-{k}shot"),
                overwrite_output_dir=True,
            )
            result = run_meta_training(meta)
            timings[f"{name} {k}-shot"] = time.perf_counter() - start
            row = dataclasses.asdict(result.meta_test[f"5-way {k}-shot"])  # accuracy, ci95, episodes
            table.setdefault(name, {})[f"{k}-shot"] = row
            print(f"{name:<24} 5-way {k}-shot: {100 * row['accuracy']:5.1f} +- {100 * row['ci95']:.1f}", flush=True)


def print_table(table: dict, args, test_classes) -> None:
    print(
        f"\nOmniglot, 5-way, {len(test_classes)} held-out characters, {args.episodes} episodes per cell, "
        f"mean +- 95% CI; meta-training {args.meta_steps} steps, SimCLR {args.simclr_steps} steps"
    )
    print(markdown_row(["method", "1-shot (%)", "5-shot (%)"]) + "\n" + markdown_rule(1, 2))
    for name, row in table.items():
        cells = [plus_minus(row[s]["accuracy"], row[s]["ci95"], scale=100) for s in ("1-shot", "5-shot")]
        print(markdown_row([name, *cells]))


def main():
    args = parse_args()
    torch.manual_seed(0)

    images = load_images(str(OMNIGLOT), image_size=28)
    mean, std = channel_stats(images.pixels)
    data = EpisodeData(images.pixels, images.labels, mean, std)
    train_classes, _, test_classes = split_classes(len(images.label_names), (0.7, 0.15, 0.15), seed=0)
    samplers = {k: EpisodeSampler(images.labels, test_classes, 5, k, 15, seed=2) for k in (1, 5)}
    table: dict[str, dict] = {}
    timings: dict[str, float] = {}
    simclr_dir = per_episode_rows(args, images, train_classes, data, samplers, table, timings)
    meta_trained_rows(args, simclr_dir, table, timings)

    print_table(table, args, test_classes)
    name = "exp_meta_quick" if args.quick else "exp_meta"
    save_json(
        RESULTS / f"{name}.json",
        {
            "table": table,
            "seconds": timings,
            "episodes": args.episodes,
            "meta_steps": args.meta_steps,
            "simclr_steps": args.simclr_steps,
            "adapt_steps": args.adapt_steps,
        },
    )
    if plot(table, RESULTS / f"{name}.png"):
        print(f"wrote {RESULTS / (name + '.json')} and {name}.png")
    else:
        print(f"wrote {RESULTS / (name + '.json')}")


def plot(table: dict, path: Path) -> bool:
    """Accuracy per method, 1- and 5-shot bars with their 95% CI; False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    names = list(table)
    fig, ax = plt.subplots(figsize=(9, 4))
    for offset, shots in ((-0.2, "1-shot"), (0.2, "5-shot")):
        values = [100 * table[n][shots]["accuracy"] for n in names]
        errors = [100 * table[n][shots]["ci95"] for n in names]
        ax.bar([i + offset for i in range(len(names))], values, 0.4, yerr=errors, label=shots, capsize=3)
    ax.axhline(20, color="gray", linestyle="--", label="chance")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set(ylabel="5-way accuracy (%)", title="Omniglot, held-out characters")
    ax.legend()
    save_figure(fig, path, announce=False)
    return True


if __name__ == "__main__":
    main()
