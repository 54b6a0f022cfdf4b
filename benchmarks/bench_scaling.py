"""What scaling out costs on this machine, as ratios, each pair run back to back through scripts/pretrain.py:

1. 1 process vs 2 gloo processes (`accelerate launch --multi_gpu --num_processes 2`) on the same global batch, for
   the causal LM and the contrastive objective: training items/s of 2 processes / 1 process. The machine's cores
   are split between the processes either way (torch threads = cores / local processes).
2. Contrastive accumulation by gradient cache: one batch of B vs k micro-batches of B/k (the same loss and
   gradients): items/s of k micro-batches / one batch.

Throughput is the median `items_per_second` of the logged windows after the first (warm-up) one. Each pair runs
--repeats times (base and other back to back, the order alternating); printed: the median throughputs, the median
of the per-repeat ratios and their range.

    python benchmarks/bench_scaling.py            # ~25 minutes on 2 cores
    python benchmarks/bench_scaling.py --quick
"""

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, argument_parser, result_path, save_json

SCRIPT = ROOT / "scripts" / "pretrain.py"
RESULTS = result_path("bench_scaling")
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"

LM = "--icl_warmup_steps 0 --hidden_size 256 --num_hidden_layers 4 --num_attention_heads 4 --block_size 128"
LM += " --eval_steps 0"
VISION = "--objective contrastive --resnet_widths 32 64 128 256 --image_size 32 --eval_steps 0"


def throughput(launcher: list[str], flags: str, batch: int, accumulation: int, steps: int, work: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=work))
    command = [*launcher, str(SCRIPT), *flags.split(), "--output_dir", str(out), "--report_to", "none"]
    command += ["--max_steps", str(steps), "--logging_steps", str(max(1, steps // 6)), "--save_steps", "0"]
    command += ["--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps", str(accumulation)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    rates = [e["items_per_second"] for e in history if "items_per_second" in e][1:]
    shutil.rmtree(out)
    return statistics.median(rates)


def pairs() -> list[tuple]:
    """(name, (launcher, flags, per-device batch, accumulation) of the base, the same of the other) of every pair."""
    one = [sys.executable]
    two = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2"]
    out = [
        (f"{name}: 2 processes / 1, global batch {batch}", (one, flags, batch, 1), (two, flags, batch // 2, 1))
        for name, flags, batch in (("causal LM", LM, 16), ("contrastive", VISION, 128))
    ]
    out += [
        (
            f"contrastive: gradient cache {k} x {128 // k} / one batch of 128",
            (one, VISION, 128, 1),
            (one, VISION, 128 // k, k),
        )
        for k in (2, 4)
    ]
    return out


def measure_pair(name: str, base: tuple, other: tuple, repeats: int, steps: int, work: Path) -> dict:
    """The pair's row: median throughputs of base ("one") and other ("two"), the median per-repeat ratio, its range."""
    runs = []
    for r in range(repeats):  # back to back, base first on even repeats: drift hits both sides alike
        order = (base, other) if r % 2 == 0 else (other, base)
        rates = {id(setting): throughput(*setting, steps, Path(work)) for setting in order}
        runs.append((rates[id(base)], rates[id(other)]))
    ratios = [b / a for a, b in runs]
    return {
        "name": name,
        "one": statistics.median(a for a, _ in runs),
        "two": statistics.median(b for _, b in runs),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "runs": runs,
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each pair (the order alternates).")
    args = parser.parse_args()
    steps, repeats = (24, 1) if args.quick else (45, args.repeats)
    with tempfile.TemporaryDirectory() as work:
        rows = [measure_pair(name, base, other, repeats, steps, Path(work)) for name, base, other in pairs()]
    print(f"{'':62s} {'base/s':>9s} {'other/s':>9s} {'ratio':>7s} {'min-max':>11s}  ({repeats} runs each)")
    for row in rows:
        spread = f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
        print(f"{row['name']:62s} {row['one']:9.0f} {row['two']:9.0f} {row['ratio']:7.2f} {spread:>11s}")
    save_json(RESULTS, {"steps": steps, "repeats": repeats, "rows": rows}, end="")  # written without a final newline
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
