"""Induction heads, measured: do they form in a phase change during pretraining, do they need two layers, and what
does removing them cost a real model's few-shot accuracy?

Part 1 (pretraining). The README's main command (`accelerate launch scripts/pretrain.py`: the default GPT, 2 layers x
128, 4 heads, BPE 1024, 128-token blocks of the built-in docstrings, batch 16) is run in process (`PretrainingLoop`)
with `--analysis_steps` (hfssl.analysis.probe) for --max_steps steps in three cells, each with --seeds (the
training seed: corpus split, tokenizer data, initial weights, order):

- curriculum, 2 layers: the main command's in-context warm-up first (--icl_warmup_steps steps on 64-token blocks of
  `key value` documents whose mapping from 4 letter keys to 8 colour words is redrawn per document, so only
  copying from the context predicts a repeated key's value), then the docstrings with 10% of such documents mixed in;
- curriculum, 1 layer: the same with one layer (Olsson et al.: an induction head needs a previous-token head in an
  earlier layer to read from);
- text, 2 layers: the docstrings alone (`--icl_warmup_steps 0`).

Every --every steps (and at step 0) the probe (`--analysis_length 64`, the warm-up's block, in every cell) logs the
best head's prefix-matching score (4 random sequences of 31 tokens repeated twice) and the in-context learning score
(loss at token 64 minus loss at token 16 on 16 held-out blocks of docstrings), and this script scores key -> value
accuracy in context: 20 held-out mappings x 4 keys, k = 4 demonstration lines drawn from 32 of the mapping's
(exp_icl.py's evaluation; chance 1/8). The *transition
step* of a curve is the first measured step at which it has moved half of the way from its step-0 value to its final
value.

Part 2 (SmolLM2-135M-Instruct): the induction scan (`induction_scores`, 4 sequences of 50 tokens), then SST-2 and
TREC coarse at k = 4 (exp_icl_real.py's split, instruction and scoring: log-likelihood of the label words, raw and
calibrated, --queries queries, 3 demonstration seeds) with the top 2, 5 and 10 heads by prefix matching zeroed
(`ablate_heads`), against as many random heads drawn (per seed) from the rest.

    python benchmarks/exp_induction.py --quick     # about 5 minutes: 1 seed, 400 steps, 40 queries
    python benchmarks/exp_induction.py             # 3 seeds, 4,000 steps (2,500 warm-up; about 1 hour alone)
    python benchmarks/exp_induction.py --report    # print the saved tables

Writes benchmarks/results/exp_induction.json after every cell (a stopped run continues with the cells it measured)
and exp_induction.png (the curves of part 1, one time axis, mean and range over seeds).
"""

import random
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
    pyplot,
    reset_accelerate,
    result_path,
    resume,
    sample_std,
    save_figure,
    save_json,
)
from exp_icl import held_out_mappings, key_value_accuracy, key_value_classifier
from exp_icl_real import Scorer, load_split
from real_models import reference

import hfssl  # noqa: F401
from hfssl.analysis import ablate_heads, format_heads, head_layout, induction_scores
from hfssl.analysis.heads import forward_with_attentions
from hfssl.analysis.probe import ICL_SCORE, LOSS_SECOND_COPY, PREFIX_MATCHING_MAX
from hfssl.data.synthetic import draw_lines, draw_mapping
from hfssl.models.loading import load_causal_lm
from hfssl.training.causal_lm import CausalLMArguments
from hfssl.training.loop import PretrainingLoop

CELLS = {  # name -> (in-context warm-up, layers)
    "curriculum, 2 layers": (True, 2),
    "curriculum, 1 layer": (True, 1),
    "text, 2 layers": (False, 2),
}
CURVES = {  # key in the log -> label
    PREFIX_MATCHING_MAX: "best prefix-matching score, random tokens",
    "key_value_prefix_matching": "best prefix-matching score, key -> value lines",
    ICL_SCORE: "in-context learning score (nats)",
    "key_value_accuracy": "key -> value accuracy, k = 4",
}
KV_MAPPINGS, KV_SHOTS = 20, 4
ANALYSIS_LENGTH = 64  # the warm-up's blocks: every position the probe reads is trained in every cell
ABLATED = (2, 5, 10)
SHOTS = 4


# ---- part 1 --------------------------------------------------------------------------------------------------------
def key_value_prefix_matching(model, tokenizer, num_docs: int = 16, length: int = 64) -> float:
    """The best head's prefix-matching score on key -> value documents instead of random tokens: the mean attention
    from a repeated key's token to the token right after that key's latest earlier occurrence (its value), over
    `num_docs` held-out documents cut to `length` tokens (the probe's length). Lines whose key token also holds
    other characters (a BPE merge) are left out."""
    rng = random.Random(20_000)  # documents no training run draws
    rows, pairs = [], []
    for _ in range(num_docs):
        text = "\n".join(f"{k} {v}" for k, v in draw_lines(draw_mapping(rng), 40, rng))
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"][: length - 1], encoded["offset_mapping"][: length - 1]
        starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]  # each line's key character
        line_starts = set(starts)
        token_at = {a: t for t, (a, b) in enumerate(offsets) if b - a == 1 and a in line_starts}  # one-character keys
        last_seen: dict[str, int] = {}
        for start in starts:
            key_token = token_at.get(start)
            if key_token is None or key_token + 1 >= len(ids):
                continue
            key = text[start]
            if key in last_seen:
                pairs.append((len(rows), key_token + 1, last_seen[key] + 2))  # BOS shifts every position by 1
            last_seen[key] = key_token
        rows.append([tokenizer.eos_token_id, *ids] + [tokenizer.pad_token_id] * (length - 1 - len(ids)))
    layout = head_layout(model)
    with torch.no_grad():
        _, attentions = forward_with_attentions(model, torch.tensor(rows, device=model.device), layout)
    scores = torch.stack([torch.stack([a[b, :, q, k] for b, q, k in pairs]).mean(0) for a in attentions])  # (L, nh)
    return float(scores.max())


class KeyValueCurve:
    """A callback that scores key -> value accuracy in context every `every` steps (and at the last) of `loop`."""

    def __init__(self, every: int):
        self.every, self.loop = every, None
        self.mappings, self.pools = held_out_mappings(KV_MAPPINGS)
        self.points: dict[int, float] = {}  # key -> value accuracy
        self.prefix: dict[int, float] = {}  # prefix matching on key -> value documents

    def measure(self, step: int) -> None:
        loop = self.loop
        model = loop.accelerator.unwrap_model(loop.model)
        training = model.training
        model.eval()
        with torch.no_grad():
            classifier = key_value_classifier(model, loop.objective.tokenizer)
            self.points[step] = key_value_accuracy(classifier, self.mappings, self.pools, KV_SHOTS, seed=0)
        self.prefix[step] = key_value_prefix_matching(model, loop.objective.tokenizer, length=ANALYSIS_LENGTH)
        model.train(training)

    def on_step_end(self, step: int, loss: float) -> None:
        if step % self.every == 0 or step == self.loop.max_steps:
            self.measure(step)


def pretrain_cell(warmup: int, layers: int, seed: int, max_steps: int, every: int, work: Path) -> dict:
    """One run of the main command (`warmup` in-context warm-up steps, `layers` layers); its curves
    {key: {step: value}} and minutes."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        reset_accelerate()
        curve = KeyValueCurve(every)
        loop = PretrainingLoop(
            CausalLMArguments(
                output_dir=str(Path(tmp) / "run"),
                num_hidden_layers=layers,
                max_steps=max_steps,
                icl_warmup_steps=warmup,
                analysis_steps=every,
                analysis_length=ANALYSIS_LENGTH,
                eval_steps=0,
                save_steps=0,
                seed=seed,
                report_to="none",
                logging_steps=100,
                sample_max_new_tokens=1,
            ),
            callbacks=[curve],
        )
        curve.loop = loop
        curve.measure(0)
        loop.train()
        result = loop.save()
    curves: dict[str, dict] = {key: {} for key in (PREFIX_MATCHING_MAX, ICL_SCORE, LOSS_SECOND_COPY)}
    for entry in result.log_history:
        for key, points in curves.items():
            if key in entry:
                points[entry["step"]] = entry[key]
    curves["key_value_accuracy"] = curve.points
    curves["key_value_prefix_matching"] = curve.prefix
    return {"curves": curves, "minutes": (time.perf_counter() - started) / 60}


def transition_step(points: dict) -> int | None:
    """The first step at which the curve has moved half of the way from its step-0 value to its final value."""
    steps = sorted(int(s) for s in points)
    values = [points[s] if s in points else points[str(s)] for s in steps]
    start, end = values[0], values[-1]
    if abs(end - start) < 1e-9:
        return None
    return next(s for s, v in zip(steps, values) if (v - start) / (end - start) >= 0.5)


def _final(points: dict) -> float:
    return points[max(points, key=int)]


def part1_table(rows: list[dict]) -> str:
    header = [
        "cell",
        "seeds",
        *(f"final {label}" for label in CURVES.values()),
        "transition steps (pm random, pm kv, icl, kv)",
    ]
    lines = [markdown_row(header), markdown_rule(2, len(header) - 2)]
    for name in CELLS:
        runs = [r for r in rows if r.get("part") == 1 and r["cell"] == name]
        if not runs:
            continue
        cells = [name, len(runs)]
        for key in CURVES:
            finals = [_final(r["curves"][key]) for r in runs]
            cells.append(plus_minus(statistics.fmean(finals), sample_std(finals), ".3f"))
        steps = [
            "/".join(str(transition_step(r["curves"][key])) for key in CURVES) for r in runs
        ]  # per seed, in the order of CURVES
        cells.append("; ".join(steps))
        lines.append(markdown_row(cells))
    return "\n".join(lines)


# ---- part 2 --------------------------------------------------------------------------------------------------------
def random_heads(layout_shape: tuple[int, int], exclude: list, count: int, seed: int) -> list:
    """`count` heads drawn (seeded) from those not in `exclude`."""
    L, nh = layout_shape
    rest = [(layer, head) for layer in range(L) for head in range(nh) if (layer, head) not in set(exclude)]
    return sorted(random.Random(seed).sample(rest, count))


def part2(args, record: dict, save) -> None:
    model, tokenizer = load_causal_lm(str(reference("smollm2")))
    if "scan" not in record:
        scores = induction_scores(model, tokenizer)
        record["scan"] = {"top_heads": [list(h) for h in scores.top_heads(max(ABLATED))], **scores.to_dict()}
        save()
    scan = record["scan"]
    top = [tuple(h) for h in scan["top_heads"]]
    shape = (len(scan["prefix_matching"]), len(scan["prefix_matching"][0]))
    print(f"SmolLM2 top heads by prefix matching: {format_heads(top)}")
    scorers = {}
    for task in ("sst2", "trec"):
        queries, demo_half, template = load_split(task, args.queries)
        scorers[task] = Scorer(model, tokenizer, template, queries, demo_half, pool_size=1000)
    conditions = [("none", 0)] + [(kind, n) for n in ABLATED for kind in ("top", "random")]
    for seed in range(args.demo_seeds):  # seed by seed: a stopped run has whole seeds
        for task, scorer in scorers.items():
            for kind, n in conditions:
                key = (task, kind, n, seed)
                if any(r.get("part") == 2 and (r["task"], r["kind"], r["n"], r["seed"]) == key for r in record["rows"]):
                    continue
                heads = top[:n] if kind == "top" else random_heads(shape, top[: max(ABLATED)], n, seed) if n else []
                started = time.perf_counter()
                with ablate_heads(model, heads):
                    metrics = scorer.score(SHOTS, "random", seed)
                row = {"part": 2, "task": task, "kind": kind, "n": n, "seed": seed, "heads": format_heads(heads)}
                record["rows"].append({**row, **metrics, "seconds": time.perf_counter() - started})
                save()
                print(
                    f"{task} ablate {kind} {n} seed {seed}: accuracy {metrics['accuracy']:.3f}, calibrated "
                    f"{metrics['accuracy_calibrated']:.3f}"
                )


def part2_table(rows: list[dict]) -> str:
    lines = [
        markdown_row(["task", "heads zeroed", "accuracy", "accuracy, calibrated"]),
        markdown_rule(2, 2),
    ]
    for task in ("sst2", "trec"):
        for kind, n in [("none", 0)] + [(kind, n) for n in ABLATED for kind in ("top", "random")]:
            runs = [r for r in rows if r.get("part") == 2 and (r["task"], r["kind"], r["n"]) == (task, kind, n)]
            if not runs:
                continue
            name = "none" if not n else f"top {n} induction" if kind == "top" else f"{n} random"
            cells = [task, name]
            for metric in ("accuracy", "accuracy_calibrated"):
                values = [r[metric] for r in runs]
                cells.append(plus_minus(100 * statistics.fmean(values), 100 * sample_std(values)))
            lines.append(markdown_row(cells))
    return "\n".join(lines)


# ---- the plot and main ---------------------------------------------------------------------------------------------
def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4))
    for ax, (key, label) in zip(axes, CURVES.items(), strict=True):
        for name in CELLS:
            runs = [r for r in rows if r.get("part") == 1 and r["cell"] == name]
            if not runs:
                continue
            steps = sorted(int(s) for s in runs[0]["curves"][key])
            values = [[r["curves"][key][str(s) if str(s) in r["curves"][key] else s] for s in steps] for r in runs]
            mean = [statistics.fmean(v) for v in zip(*values)]
            line = ax.plot(steps, mean, label=name)[0]
            ax.fill_between(
                steps, [min(v) for v in zip(*values)], [max(v) for v in zip(*values)], alpha=0.2, color=line.get_color()
            )
        ax.set(xlabel="optimizer step", title=label)
    axes[0].legend()
    save_figure(fig, path)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    add_quick(parser, "1 seed, 400 steps, 40 queries, 1 demonstration seed: checks the script.")
    add_fresh(parser)
    add_report(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max_steps", type=int, default=4000, help="Steps of a run, the warm-up included.")
    parser.add_argument("--icl_warmup_steps", type=int, default=2500, help="In-context warm-up steps (curriculum).")
    parser.add_argument("--every", type=int, default=100, help="Steps between measurements.")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--demo_seeds", type=int, default=3)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_steps, args.icl_warmup_steps, args.every, args.queries, args.demo_seeds = (
            [0],
            400,
            200,
            50,
            40,
            1,
        )
    return args


def main() -> None:
    args = parse_args()
    out = result_path("exp_induction", "quick" if args.quick else "")
    if args.report:
        record = load_json(out)
    else:
        settings = {
            "model": "the main command's defaults",
            "max_steps": args.max_steps,
            "warmup_steps": args.icl_warmup_steps,
            "every": args.every,
            "queries": args.queries,
            "shots": SHOTS,
        }
        record = resume(out, {"settings": settings, "rows": []}, args.fresh)
        save = lambda: save_json(out, record)  # noqa: E731
        work = OUTPUTS / "exp_induction"
        work.mkdir(parents=True, exist_ok=True)
        for part in args.parts:
            if part == 2:
                part2(args, record, save)
                continue
            for seed in args.seeds:
                for name, (curriculum, layers) in CELLS.items():
                    if any(r.get("part") == 1 and (r["cell"], r["seed"]) == (name, seed) for r in record["rows"]):
                        continue
                    warmup = args.icl_warmup_steps if curriculum else 0
                    cell = pretrain_cell(warmup, layers, seed, args.max_steps, args.every, work)
                    record["rows"].append({"part": 1, "cell": name, "seed": seed, **cell})
                    save()
                    print(f"{name}, seed {seed}: {cell['minutes']:.1f} min")
                    print(part1_table(record["rows"]))
    print(
        f"\nPart 1: {args.max_steps if not args.report else record['settings']['max_steps']} steps; transition steps "
        "per seed in the order of the curves (prefix matching on random tokens, on key -> value lines, in-context "
        "score, key -> value accuracy)"
    )
    print(part1_table(record["rows"]))
    print("\nPart 2: SmolLM2-135M-Instruct, k = 4")
    print(part2_table(record["rows"]))
    plot(record["rows"], result_path("exp_induction", "quick" if args.quick else "", suffix=".png"))


if __name__ == "__main__":
    main()
