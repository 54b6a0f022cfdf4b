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

import copy
import statistics
import time
from pathlib import Path

import torch
from common import DATA, argument_parser, result_path, save_json

from hfssl.data.episodes import EpisodeSampler
from hfssl.data.vision import channel_stats, load_images
from hfssl.meta.algorithms import FunctionalMetaLearner
from hfssl.meta.episode_data import EpisodeData
from hfssl.meta.trainer import MetaArguments, build_model

OMNIGLOT = DATA / "omniglot" / "images_background_small1.zip"
RESULTS = result_path("bench_meta")
# hfssl engine options, by row name: its default, task by task, and the meta-batch under vmap
HFSSL_ENGINES = {
    "hfssl (torch.func)": {},
    "hfssl (task by task)": dict(task_threads=1),
    "hfssl (vmap)": dict(vectorize=True),
}


def outer_steps(learner, optimizer, data, sampler, first_episode: int, steps: int, meta_batch: int) -> float:
    """Seconds for `steps` outer steps (meta_batch tasks each)."""
    start = time.perf_counter()
    for s in range(steps):
        optimizer.zero_grad()
        learner.meta_backward([data.tensors(sampler[first_episode + s * meta_batch + t]) for t in range(meta_batch)])
        optimizer.step()
    return time.perf_counter() - start


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 steps instead of 4 of 10.")
    parser.add_argument("--algorithm", default="maml", choices=["maml", "fomaml", "anil"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def learn2learn_engine():
    """hfssl's learn2learn engine class; SystemExit ("skipped: ...") when it or learn2learn is not installed."""
    try:
        from hfssl.meta.learn2learn_engine import Learn2LearnMetaLearner
    except ImportError as err:
        raise SystemExit(f"skipped: {err}") from None
    try:
        import learn2learn  # noqa: F401
    except ImportError:
        raise SystemExit("skipped: learn2learn is not installed (bash scripts/install_learn2learn.sh)") from None
    return Learn2LearnMetaLearner


def episodes() -> tuple[EpisodeData, EpisodeSampler]:
    """Omniglot (else the built-in digits) as episode tensors, and its 5-way 1-shot 15-query sampler (seed 0)."""
    images = load_images(str(OMNIGLOT) if OMNIGLOT.is_file() else "digits", image_size=28)
    mean, std = channel_stats(images.pixels)
    data = EpisodeData(images.pixels, images.labels, mean, std)
    return data, EpisodeSampler(images.labels, None, ways=5, shots=1, queries=15, seed=0)


def meta_gradient_difference(base, algorithm: str, engine_class, data, sampler) -> tuple[float, float]:
    """(max |difference|, max |learn2learn gradient|) of the two engines' float64 meta-gradients on one meta-batch;
    SystemExit when they disagree. In float64: in float32 the second-order terms amplify the different summation
    orders of a vmapped and a looped pass to ~0.4% of the largest entry."""
    grads = {}
    tasks64 = [tuple(t.double() if t.is_floating_point() else t for t in data.tensors(sampler[i])) for i in range(4)]
    for name, engine in (("hfssl (torch.func)", FunctionalMetaLearner), ("learn2learn", engine_class)):
        model64 = copy.deepcopy(base).double()
        engine(model64, algorithm, 0.4, 1).meta_backward(tasks64)
        grads[name] = torch.cat([p.grad.flatten() for p in model64.parameters()])
    diff = (grads["hfssl (torch.func)"] - grads["learn2learn"]).abs().max().item()
    scale = grads["learn2learn"].abs().max().item()
    if diff > 1e-9 * scale:
        raise SystemExit(f"engines disagree: max |meta-gradient difference| {diff:.2e} (scale {scale:.2e})")
    return diff, scale


def time_engines(learners: dict, models: dict, data, sampler, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds of `steps` outer steps per round and engine, rounds alternating the engines' order (after a warm-up)."""
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    times = {name: [] for name in learners}
    for name, learner in learners.items():  # warm-up
        outer_steps(learner, optimizers[name], data, sampler, 1, 1, 4)
    for r in range(rounds):
        for name, learner in list(learners.items()) if r % 2 == 0 else list(reversed(learners.items())):
            times[name].append(outer_steps(learner, optimizers[name], data, sampler, 100 + r * steps * 4, steps, 4))
    return times


def result_rows(algorithm: str, ratios: dict[str, float], threads: int) -> list[dict]:
    rows = [
        {
            "name": f"{algorithm} meta-training tasks/s vs learn2learn",
            "ratio": ratios["hfssl (torch.func)"],
            "target": 1.0,
            "task_threads": threads,
        }
    ]
    rows += [
        {
            "name": f"{algorithm} meta-training tasks/s vs learn2learn, {name[7:-1]}",
            "ratio": ratios[name],
            "target": None,
        }
        for name in HFSSL_ENGINES
        if name != "hfssl (torch.func)"
    ]
    return rows


def main():
    args = parse_args()
    engine_class = learn2learn_engine()
    rounds, steps = (2, 5) if args.quick else (4, 10)

    data, sampler = episodes()
    meta_args = MetaArguments(dataset="bench", algorithm=args.algorithm, seed=0)  # seed 0: the recorded weights
    base = build_model(meta_args)
    models = {name: copy.deepcopy(base) for name in [*HFSSL_ENGINES, "learn2learn"]}
    learners = {
        name: FunctionalMetaLearner(models[name], args.algorithm, 0.4, 1, **options)
        for name, options in HFSSL_ENGINES.items()
    }
    learners["learn2learn"] = engine_class(models["learn2learn"], args.algorithm, 0.4, 1)
    threads = learners["hfssl (torch.func)"].threads_for(4)

    # same meta-gradients first
    diff, scale = meta_gradient_difference(base, args.algorithm, engine_class, data, sampler)

    times = time_engines(learners, models, data, sampler, rounds, steps)
    tasks_per_s = {name: steps * 4 / statistics.median(t) for name, t in times.items()}
    ratios = {name: value / tasks_per_s["learn2learn"] for name, value in tasks_per_s.items() if name in HFSSL_ENGINES}
    print(
        f"{args.algorithm}, 5-way 1-shot, meta-batch 4, {torch.get_num_threads()} torch threads (hfssl default: "
        f"{threads} task threads); float64 meta-gradients of one meta-batch agree to {diff:.1e} (max |g| {scale:.1e})"
    )
    for name, value in tasks_per_s.items():
        print(f"  {name:<22} {value:8.2f} tasks/s" + (f"   ratio {ratios[name]:.2f}" if name in ratios else ""))
    print(f"ratio {ratios['hfssl (torch.func)']:.2f} (target 1.0)")
    record = {
        "rows": result_rows(args.algorithm, ratios, threads),
        "torch_threads": torch.get_num_threads(),
        "tasks_per_s": tasks_per_s,
        "times_s": times,
        "max_grad_diff": diff,
    }
    save_json(args.output, record)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
