"""Meta-training speed: hfssl's torch.func MAML engine vs learn2learn's MAML, same model, same episodes.

Model: the meta_train.py default (ResNet with one basic block per stage, widths 32-32-64-64, 28x28 inputs,
5-way head, batch statistics); episodes: 5-way 1-shot, 15 queries, meta-batch 4, one inner SGD step
(alpha 0.4), Adam outer step, from Omniglot (../shared/data) or else the built-in digits. Both engines get
the same torch thread count (torch's default: the machine's cores). hfssl runs its default (on CPU: the
meta-batch's tasks in parallel threads, one intra-op thread each), and, as extra rows, task by task and with
the tasks together under vmap; learn2learn clones the model per task and runs them one by one. All start
from identical weights and must produce the same meta-gradients (checked in float64 on one meta-batch)
before anything is timed; then they alternate rounds of outer steps in one process.

Writes benchmarks/results/bench_meta.json rows {"name", "ratio", "target"}; ratio = hfssl tasks/s /
learn2learn tasks/s, target >= 1.0. Skips with a message when learn2learn is not installed.

    python benchmarks/bench_meta.py [--quick]
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from hfssl.data.episodes import EpisodeSampler
from hfssl.data.vision import channel_stats, load_images
from hfssl.meta.algorithms import FunctionalMetaLearner
from hfssl.meta.episode_data import EpisodeData
from hfssl.meta.trainer import MetaArguments, build_model

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"
RESULTS = ROOT / "benchmarks" / "results" / "bench_meta.json"


def outer_steps(learner, optimizer, data, sampler, first_episode: int, steps: int, meta_batch: int) -> float:
    """Seconds for `steps` outer steps (meta_batch tasks each)."""
    start = time.perf_counter()
    for s in range(steps):
        optimizer.zero_grad()
        learner.meta_backward([data.tensors(sampler[first_episode + s * meta_batch + t]) for t in range(meta_batch)])
        optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 steps instead of 4 of 10.")
    parser.add_argument("--algorithm", default="maml", choices=["maml", "fomaml", "anil"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        from hfssl.meta.learn2learn_engine import Learn2LearnMetaLearner
    except ImportError as err:
        raise SystemExit(f"skipped: {err}") from None
    try:
        import learn2learn  # noqa: F401
    except ImportError:
        raise SystemExit("skipped: learn2learn is not installed (bash scripts/install_learn2learn.sh)") from None
    rounds, steps = (2, 5) if args.quick else (4, 10)

    images = load_images(str(OMNIGLOT) if OMNIGLOT.is_file() else "digits", image_size=28)
    mean, std = channel_stats(images.pixels)
    data = EpisodeData(images.pixels, images.labels, mean, std)
    sampler = EpisodeSampler(images.labels, None, ways=5, shots=1, queries=15, seed=0)
    meta_args = MetaArguments(dataset="bench", algorithm=args.algorithm, seed=0)  # seed 0: the recorded weights
    base = build_model(meta_args)
    variants = {
        "hfssl (torch.func)": {},
        "hfssl (task by task)": dict(task_threads=1),
        "hfssl (vmap)": dict(vectorize=True),
    }
    models = {name: copy.deepcopy(base) for name in [*variants, "learn2learn"]}
    learners = {
        name: FunctionalMetaLearner(models[name], args.algorithm, 0.4, 1, **options)
        for name, options in variants.items()
    }
    learners["learn2learn"] = Learn2LearnMetaLearner(models["learn2learn"], args.algorithm, 0.4, 1)
    threads = learners["hfssl (torch.func)"].threads_for(4)

    # same meta-gradients first, in float64 (in float32 the second-order terms amplify the different summation
    # orders of a vmapped and a looped pass to ~0.4% of the largest entry)
    grads = {}
    tasks64 = [tuple(t.double() if t.is_floating_point() else t for t in data.tensors(sampler[i])) for i in range(4)]
    for name, engine in (("hfssl (torch.func)", FunctionalMetaLearner), ("learn2learn", Learn2LearnMetaLearner)):
        model64 = copy.deepcopy(base).double()
        engine(model64, args.algorithm, 0.4, 1).meta_backward(tasks64)
        grads[name] = torch.cat([p.grad.flatten() for p in model64.parameters()])
    diff = (grads["hfssl (torch.func)"] - grads["learn2learn"]).abs().max().item()
    scale = grads["learn2learn"].abs().max().item()
    if diff > 1e-9 * scale:
        raise SystemExit(f"engines disagree: max |meta-gradient difference| {diff:.2e} (scale {scale:.2e})")

    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    times = {name: [] for name in learners}
    for name, learner in learners.items():  # warm-up
        outer_steps(learner, optimizers[name], data, sampler, 1, 1, 4)
    for r in range(rounds):
        for name, learner in list(learners.items()) if r % 2 == 0 else list(reversed(learners.items())):
            times[name].append(outer_steps(learner, optimizers[name], data, sampler, 100 + r * steps * 4, steps, 4))
    tasks_per_s = {name: steps * 4 / statistics.median(t) for name, t in times.items()}
    ratios = {name: value / tasks_per_s["learn2learn"] for name, value in tasks_per_s.items() if name in variants}
    print(
        f"{args.algorithm}, 5-way 1-shot, meta-batch 4, {torch.get_num_threads()} torch threads (hfssl default: "
        f"{threads} task threads); float64 meta-gradients of one meta-batch agree to {diff:.1e} (max |g| {scale:.1e})"
    )
    for name, value in tasks_per_s.items():
        print(f"  {name:<22} {value:8.2f} tasks/s" + (f"   ratio {ratios[name]:.2f}" if name in ratios else ""))
    print(f"ratio {ratios['hfssl (torch.func)']:.2f} (target 1.0)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "name": f"{args.algorithm} meta-training tasks/s vs learn2learn",
            "ratio": ratios["hfssl (torch.func)"],
            "target": 1.0,
            "task_threads": threads,
        }
    ]
    rows += [
        {
            "name": f"{args.algorithm} meta-training tasks/s vs learn2learn, {name[7:-1]}",
            "ratio": ratios[name],
            "target": None,
        }
        for name in variants
        if name != "hfssl (torch.func)"
    ]
    args.output.write_text(
        json.dumps(
            {
                "rows": rows,
                "torch_threads": torch.get_num_threads(),
                "tasks_per_s": tasks_per_s,
                "times_s": times,
                "max_grad_diff": diff,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
