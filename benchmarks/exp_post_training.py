"""Post-training a causal LM, RLHF's steps measured: base vs SFT vs SFT + DPO vs SFT + GRPO, LoRA vs full SFT, and a
reward model; on SmolLM2-135M-Instruct and on hfssl's own pretrained GPT. Prints the tables, saves JSON and a plot.

Tuning data: hfssl's built-in instruction tasks whose answers are checkable (addition, key -> value lookup, string
reversal, list sorting; `hfssl.data.instructions`), EXAMPLES_PER_TASK drawn per task with the seed, 20% of each
task's distinct prompts held out by a seeded split (`held_out_split`, seed = the run's seed). Each model, each seed:

- SFT from the base model (full parameters), and LoRA SFT at the same steps, batch and data (merged to score);
- from the SFT model: DPO (a frozen copy of the SFT model as reference, reference log-probabilities cached) on the
  same prompts with a chosen and a rejected answer (a wrong answer, or the right one in the wrong format);
- from the SFT model: GRPO, the checkable reward (`hfssl.posttrain.run.checked_reward`: 1 right and in the required
  format, 0.5 right in another format, 0.1 formatted but wrong), KL to the SFT model;
- from the SFT model: a reward model (Bradley-Terry), its pairwise accuracy on held-out pairs.

Scores of every arm: greedy answers to the held-out prompts (answer accuracy; share in the required format), and
0-shot accuracy on SST-2 and TREC queries that tuning never saw (`prompt_eval`: each label word's log-likelihood,
and generation), which asks whether tuning on the synthetic tasks hurt the others (forgetting). Mean ± sample std
over the seeds. hfssl's GPT is the README's main command's model (pretrained here once when absent: ~5 minutes).

    python benchmarks/exp_post_training.py --quick        # 1 seed, hfssl's GPT, few steps: checks the script
    python benchmarks/exp_post_training.py                # seeds 0 1 2, both models
    python benchmarks/exp_post_training.py --report       # the saved tables
"""

import logging
import shutil
import statistics
import time
from pathlib import Path

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

import hfssl  # noqa: F401
from hfssl.adapt.prompt_eval import PromptEvalArguments, run_prompt_eval
from hfssl.posttrain.arguments import PostTrainArguments
from hfssl.posttrain.run import run_post_training

logger = logging.getLogger("exp_post_training")

TASKS = ["addition", "lookup", "reversal", "sorting"]
EXAMPLES_PER_TASK = 100
# per method: optimizer steps and rows per step (the same for every model); learning rates per model below
STEPS = {"sft": 60, "dpo": 30, "grpo": 15, "reward": 30}
BATCH = {"sft": 8, "dpo": 8, "grpo": 8, "reward": 8}
LEARNING_RATES = {
    "smollm2": {"sft": 5e-5, "lora": 5e-4, "dpo": 5e-6, "grpo": 2e-6, "reward": 5e-5},
    "hfssl-gpt": {"sft": 5e-4, "lora": 5e-3, "dpo": 5e-5, "grpo": 2e-5, "reward": 5e-4},
}
COMMON = dict(
    instruction_tasks=TASKS, examples_per_task=EXAMPLES_PER_TASK, max_eval_examples=0, max_completion_length=24
)
GRPO = dict(num_generations=4, beta=0.04, temperature=1.0)
ZERO_SHOT = {"sst2": ("sst2/train.txt", "sentiment"), "trec": ("trec/train.txt", "question_type")}
ZERO_SHOT_QUERIES = 100
ARMS = ["base", "sft", "lora sft", "sft + dpo", "sft + grpo"]


def hfssl_gpt() -> Path:
    """The README main command's GPT (pretrained once into outputs/exp_post_training/gpt-stdlib)."""
    folder = OUTPUTS / "exp_post_training" / "gpt-stdlib"
    if not (folder / "model.safetensors").is_file():
        from hfssl.training.arguments import parse_pretrain_args
        from hfssl.training.loop import run_pretraining

        run_pretraining(parse_pretrain_args(["--output_dir", str(folder)]))
        reset_accelerate()
    return folder


def post_train(model_key: str, method: str, start: Path, out: Path, seed: int, steps: dict, **extra):
    """One run of scripts/post_train.py's API; its PostTrainingResult (the model saved in `out`)."""
    learning_rate = LEARNING_RATES[model_key]["lora" if extra.get("use_lora") else method]
    args = PostTrainArguments(
        method=method,
        model_name_or_path=str(start),
        output_dir=str(out),
        seed=seed,
        max_steps=steps[method],
        per_device_train_batch_size=BATCH[method],
        learning_rate=learning_rate,
        logging_steps=5,
        **COMMON,
        **(GRPO if method == "grpo" else {}),
        **extra,
    )
    result = run_post_training(args)
    reset_accelerate()
    return result


def zero_shot(model: Path, seed: int, queries: int) -> dict[str, float]:
    """0-shot accuracy on SST-2 and TREC queries (tuning never saw them): log-likelihood and generation."""
    scores = {}
    for task, (path, preset) in ZERO_SHOT.items():
        for mode in ("loglikelihood", "generate"):
            args = PromptEvalArguments(
                model_name_or_path=str(model),
                dataset=str(DATA / path),
                preset=preset,
                shots="0",
                num_seeds=1,
                seed=seed,
                mode=mode,
                max_eval_examples=queries,
            )
            scores[f"{task} 0-shot ({mode})"] = run_prompt_eval(args).shots["0"]["accuracy"]["mean"]
    return scores


def measure_seed(model_key: str, base: Path, seed: int, work: Path, steps: dict, queries: int) -> list[dict]:
    """Every arm's scores for one model and seed, and the reward model's pairwise accuracy."""
    rows = []

    def row(arm: str, held_out: dict, folder: Path, seconds: float) -> None:
        rows.append({"model": model_key, "arm": arm, "seed": seed, "seconds": seconds, "held_out": held_out,
                     "zero_shot": zero_shot(folder, seed, queries)})  # fmt: skip

    start = time.perf_counter()
    sft = post_train(model_key, "sft", base, work / "sft", seed, steps)
    sft_seconds = time.perf_counter() - start
    row("base", sft.before, base, 0.0)
    row("sft", sft.after, work / "sft", sft_seconds)
    for arm, method, extra, begin in [
        ("lora sft", "sft", {"use_lora": True, "merge_adapter": True}, base),
        ("sft + dpo", "dpo", {}, work / "sft"),
        ("sft + grpo", "grpo", {}, work / "sft"),
    ]:
        start = time.perf_counter()
        out = work / arm.replace(" ", "").replace("+", "-")
        result = post_train(model_key, method, begin, out, seed, steps, **extra)
        row(arm, result.after, out, time.perf_counter() - start)
    start = time.perf_counter()
    reward = post_train(model_key, "reward", work / "sft", work / "reward", seed, steps)
    rows.append({"model": model_key, "arm": "reward model", "seed": seed, "seconds": time.perf_counter() - start,
                 "before": reward.before, "after": reward.after})  # fmt: skip
    return rows


def _cell(rows: list[dict], key) -> str:
    values = [key(r) for r in rows]
    return plus_minus(100 * statistics.fmean(values), 100 * sample_std(values)) if values else ""


def table(record: dict, model_key: str) -> str:
    rows = [r for r in record["rows"] if r["model"] == model_key and r["arm"] in ARMS]
    if not rows:
        return ""
    zero_shot_keys = list(rows[0]["zero_shot"])
    header = ["arm", "answer accuracy", "in format", *[f"acc. {t}" for t in TASKS], *zero_shot_keys, "minutes"]
    lines = [markdown_row(header), markdown_rule(1, len(header) - 1)]
    for arm in ARMS:
        cells = [r for r in rows if r["arm"] == arm]
        if not cells:
            continue
        line = [arm, _cell(cells, lambda r: r["held_out"]["answer_accuracy"])]
        line.append(_cell(cells, lambda r: r["held_out"]["format_share"]))
        line += [_cell(cells, lambda r, t=t: r["held_out"].get(f"accuracy/{t}", 0.0)) for t in TASKS]
        line += [_cell(cells, lambda r, k=k: r["zero_shot"][k]) for k in zero_shot_keys]
        line.append(f"{statistics.fmean(r['seconds'] for r in cells) / 60:.1f}")
        lines.append(markdown_row(line))
    seeds = sorted({r["seed"] for r in rows})
    reward = [r for r in record["rows"] if r["model"] == model_key and r["arm"] == "reward model"]
    trained, untrained = (_cell(reward, lambda r, w=w: r[w]["pairwise_accuracy"]) for w in ("after", "before"))
    note = (
        f"\n\nReward model from the SFT model: pairwise accuracy {trained}% (untrained: {untrained}%)."
        if reward
        else ""
    )
    return (
        "\n".join(lines)
        + f"\n\n{model_key}: %, mean ± sample std over seeds {seeds}; minutes: a whole run (training, held-out"
        + " scoring before and after, saving)."
        + note
    )


def plot(record: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    models = sorted({r["model"] for r in record["rows"]})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.6), squeeze=False)
    for axis, model_key in zip(axes[0], models, strict=True):
        arms = [a for a in ARMS if any(r["model"] == model_key and r["arm"] == a for r in record["rows"])]
        for offset, (metric, label) in enumerate(
            [("answer_accuracy", "answer accuracy"), ("format_share", "in format")]
        ):
            values = [
                [100 * r["held_out"][metric] for r in record["rows"] if r["model"] == model_key and r["arm"] == a]
                for a in arms
            ]
            axis.bar([i + 0.4 * offset for i in range(len(arms))], [statistics.fmean(v) for v in values], 0.4,
                     yerr=[sample_std(v) for v in values], label=label)  # fmt: skip
        axis.set_xticks([i + 0.2 for i in range(len(arms))], arms, rotation=20, fontsize=8)
        axis.set(title=model_key, ylabel="held-out instructions (%)", ylim=(0, 100))
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["hfssl-gpt", "smollm2"], choices=["hfssl-gpt", "smollm2"])
    add_quick(parser, "1 seed, hfssl's GPT, a fifth of the steps, 20 zero-shot queries.")
    add_fresh(parser)
    add_report(parser)
    args = parser.parse_args()
    quick = args.quick
    seeds, models = ([0], ["hfssl-gpt"]) if quick else (args.seeds, args.models)
    steps = {m: max(2, s // 5) for m, s in STEPS.items()} if quick else STEPS
    queries = 20 if quick else ZERO_SHOT_QUERIES
    out = result_path("exp_post_training", "quick" if quick else "")
    settings = {"tasks": TASKS, "examples_per_task": EXAMPLES_PER_TASK, "steps": steps, "batch": BATCH,
                "learning_rates": LEARNING_RATES, "grpo": GRPO, "zero_shot_queries": queries}  # fmt: skip
    if args.report:
        record = load_json(out)
        print("\n\n".join(table(record, m) for m in ("hfssl-gpt", "smollm2")))
        return
    logging.basicConfig(level=logging.WARNING)
    record = resume(out, {"settings": settings, "rows": []}, args.fresh)
    done = {(r["model"], r["seed"]) for r in record["rows"] if r["arm"] == "reward model"}
    for model_key in models:
        base = hfssl_gpt() if model_key == "hfssl-gpt" else reference("smollm2")
        for seed in seeds:
            if (model_key, seed) in done:
                continue
            work = OUTPUTS / "exp_post_training" / f"{model_key}-seed{seed}"
            shutil.rmtree(work, ignore_errors=True)  # this script's own work folder, of a cell not saved
            record["rows"] = [r for r in record["rows"] if (r["model"], r["seed"]) != (model_key, seed)]
            record["rows"] += measure_seed(model_key, base, seed, work, steps, queries)
            save_json(out, record)
            print(table(record, model_key))
    print("\n\n".join(table(record, m) for m in ("hfssl-gpt", "smollm2")))
    plot(record, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
