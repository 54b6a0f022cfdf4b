"""Does SimCLR pretraining learn useful features? kNN accuracy on CIFAR-10 vs the same encoder at random init.

For each seed: SimCLR pretraining on CIFAR-10 train (../shared/data/cifar10/train.parquet) for a fixed CPU
budget with `scripts/pretrain.py`'s own code path (`run_pretraining`, the number of steps chosen from a
measured step time), holding out a seeded 5% of the images. The kNN monitor (k = 20 and 200, cosine,
temperature-weighted votes) classifies the held-out images against a bank of 5,000 labelled training
images, every quarter of the run. The baseline is the identical encoder at its random initialisation,
scored on the same bank and queries.

Prints mean +- std over seeds, saves a plot of kNN accuracy over training and
benchmarks/results/exp_contrastive.json.

    python benchmarks/exp_contrastive.py                       # 3 seeds x 5 minutes
    python benchmarks/exp_contrastive.py --seeds 0 --budget_minutes 1
"""

import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from common import (
    DATA,
    OUTPUTS,
    argument_parser,
    pyplot,
    reset_accelerate,
    result_path,
    sample_std,
    save_figure,
    save_json,
)

import hfssl  # noqa: F401
from hfssl.losses import NTXentLoss
from hfssl.models.encoders import SimCLRConfig, SimCLRModel
from hfssl.training.contrastive import ContrastiveArguments, ContrastiveObjective
from hfssl.training.loop import run_pretraining

CIFAR = DATA / "cifar10" / "train.parquet"

# the ContrastiveArguments every run of this experiment shares (recorded as "flags" in the results JSON)
FLAGS = {
    "objective": "contrastive",
    "resnet_layers": [1, 1, 1, 1],
    "resnet_widths": [32, 64, 128, 256],
    "projection_dims": [512, 128],
    "per_device_train_batch_size": 128,
    "learning_rate": 2e-3,
    "image_size": 32,
    "knn_k": [20, 200],
    "knn_bank_size": 5000,
    "eval_split_fraction": 0.05,
}


def seconds_per_step() -> float:
    config = SimCLRConfig(resnet_layers=[1, 1, 1, 1], resnet_widths=[32, 64, 128, 256], projection_dims=[512, 128])
    model = SimCLRModel(config).train().to(memory_format=torch.channels_last)
    optimizer, loss_fn = torch.optim.AdamW(model.parameters()), NTXentLoss(0.5)
    x = torch.randn(FLAGS["per_device_train_batch_size"], 3, 32, 32).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss_fn(*model(x, x.flip(-1), return_loss=False).projections.chunk(2)).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * 1.15  # + augmentation (~4% measured) and loop overhead


def random_init_knn(seed: int, workdir: Path) -> dict[str, float]:
    """kNN accuracy of the untrained encoder on exactly the bank and queries the pretraining run uses."""
    reset_accelerate()
    objective = ContrastiveObjective(
        ContrastiveArguments(**FLAGS, dataset=str(CIFAR), seed=seed, output_dir=str(workdir / "random_init"))
    )
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(seed)
    setup = objective.setup(accelerator)
    loader = torch.utils.data.DataLoader(setup.eval_dataset, batch_size=256, collate_fn=setup.collate_fn)
    return objective.evaluate(setup.model, loader, accelerator)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget_minutes", type=float, default=5.0, help="Training budget per seed (<= 15).")
    parser.add_argument("--output_dir", type=Path, default=OUTPUTS / "exp_contrastive")
    parser.add_argument("--results_name", default="exp_contrastive", help="Name of the .json / .png in results/.")
    parser.add_argument(
        "--max_steps",
        type=int,
        default=None,
        help="Train exactly this many steps instead of the number the budget allows on this machine "
        "(to repeat a recorded run: its JSON has max_steps).",
    )
    return parser.parse_args(argv)


def steps_for(args) -> int:
    """--max_steps, or the steps that fit the budget (measured step time; ~15% left for the kNN evaluations)."""
    if args.max_steps:
        max_steps = args.max_steps
        print(f"{max_steps} steps of {FLAGS['per_device_train_batch_size']} images per run (--max_steps)")
    else:
        step_s = seconds_per_step()
        max_steps = max(8, int(args.budget_minutes * 60 * 0.85 / step_s))  # ~15% for the kNN evaluations
        print(
            f"estimated {step_s:.2f} s/step -> {max_steps} steps of {FLAGS['per_device_train_batch_size']} images "
            f"per {args.budget_minutes:g}-minute run"
        )
    return max_steps


def run_seed(seed: int, max_steps: int, output_dir: Path) -> dict:
    """One seed: the random-init baseline, then pretraining with the kNN monitor every quarter of the run."""
    baseline = random_init_knn(seed, output_dir)
    reset_accelerate()
    start = time.perf_counter()
    result = run_pretraining(
        ContrastiveArguments(
            **FLAGS,
            dataset=str(CIFAR),
            seed=seed,
            output_dir=str(output_dir / f"seed{seed}"),
            max_steps=max_steps,
            eval_steps=max(max_steps // 4, 1),
            save_steps=0,
            logging_steps=10,
            report_to="none",
            overwrite_output_dir=True,
        )
    )
    minutes = (time.perf_counter() - start) / 60
    curve = [(0, baseline["knn_top1_k20"])] + [
        (e["step"], e["knn_top1_k20"]) for e in result.log_history if "knn_top1_k20" in e
    ]
    run = {
        "seed": seed,
        "random_init": baseline,
        "pretrained": {k: v for k, v in result.final.items() if k.startswith("knn")},
        "minutes": minutes,
        "curve_k20": curve,
    }
    print(f"seed {seed}: random init {baseline}, pretrained {run['pretrained']} ({minutes:.1f} min)")
    return run


def knn_table(runs: list[dict], max_steps: int) -> tuple[dict, float]:
    """Print and return the table (mean, std of kNN top-1 % per encoder and k) and the gain at k=20."""

    def stat(kind, k):
        values = [100 * r[kind][f"knn_top1_k{k}"] for r in runs]
        return statistics.mean(values), sample_std(values)

    print(
        f"\nCIFAR-10 kNN top-1 (%) on 2,500 held-out images, bank of 5,000; {len(runs)} seed(s); "
        f"{max_steps} steps = {max_steps * FLAGS['per_device_train_batch_size'] / 47500:.2f} epochs "
        "of the 47,500 training images"
    )
    print(f"{'encoder':<28}{'k=20':>16}{'k=200':>16}")
    table = {}
    for kind, label in (("random_init", "random init"), ("pretrained", "SimCLR pretrained")):
        (m20, s20), (m200, s200) = stat(kind, 20), stat(kind, 200)
        table[kind] = {"k20": [m20, s20], "k200": [m200, s200]}
        print(f"{label:<28}{m20:>10.1f} +- {s20:<4.1f}{m200:>10.1f} +- {s200:<4.1f}")
    gain = table["pretrained"]["k20"][0] - table["random_init"]["k20"][0]
    print(f"gain at k=20: {gain:+.1f} points (target >= +10)")
    return table, gain


def plot(runs: list[dict], table: dict, budget_minutes: float, path: Path) -> None:
    """kNN accuracy (k=20) over training, a line per seed, the random-init mean as a dashed line."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        steps, acc = zip(*r["curve_k20"])
        ax.plot(steps, [100 * a for a in acc], marker="o", label=f"seed {r['seed']}")
    ax.axhline(table["random_init"]["k20"][0], color="gray", linestyle="--", label="random init (mean)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("kNN top-1, k=20 (%)")
    ax.set_title(f"SimCLR on CIFAR-10, {budget_minutes:g}-minute CPU budget per seed")
    ax.legend()
    save_figure(fig, path)


def main():
    args = parse_args()
    results = result_path(args.results_name)
    if not CIFAR.is_file():
        raise SystemExit(f"CIFAR-10 not found at {CIFAR} (the shared data folder is needed for this experiment).")
    max_steps = steps_for(args)
    runs = [run_seed(seed, max_steps, args.output_dir) for seed in args.seeds]
    table, gain = knn_table(runs, max_steps)
    save_json(results, {"runs": runs, "table": table, "max_steps": max_steps, "flags": FLAGS, "gain_k20": gain})
    plot(runs, table, args.budget_minutes, result_path(args.results_name, suffix=".png"))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
