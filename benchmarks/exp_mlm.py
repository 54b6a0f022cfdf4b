"""Masked-LM pretraining, two questions, 3 seeds each; prints the tables, saves JSON and a plot.

(a) Causal vs masked from scratch, at equal CPU minutes. The same-size GPT (`--objective causal_lm`, no in-context
    warm-up) and BERT (`--objective masked_lm`) pretrain on the same corpus — the built-in stdlib docstrings plus
    the unlabelled training sentences of SST-2 (labels dropped) — for the same wall-clock budget (steps set from a
    short timing run of each). Then a linear probe on SST-2 with K in {32, 128, all} labels per class, on a fixed
    held-out split, for both and for the same architectures at random initialisation. Pooling: each model's
    natural one (GPT: the last token; BERT: [CLS]) and the mean over tokens for both.
(b) Task-adaptive pretraining (TAPT, Gururangan et al. 2020) of a real encoder. MiniLM (the reference encoder,
    `python -m hfssl.reference fetch`) continues masked-LM pretraining on the unlabelled SST-2 training sentences
    for a few CPU minutes; then a linear probe (mean pooling) and LoRA fine-tuning ([CLS] through the pooler) with
    K in {8, 32, 128} labels per class, against MiniLM without the extra pretraining, on the same held-out split.
    masked_lm saves no pooler; the TAPT encoder is given MiniLM's own, so the two differ in the encoder only.

Seeds: the pretraining seed and the few-shot draw (seed s pairs with pretraining run s). The held-out split (872
sentences, SST-2's dev size) is fixed and never seen in pretraining.

    python benchmarks/exp_mlm.py --quick     # minutes: short budgets, 1 seed, fewer K
    python benchmarks/exp_mlm.py --minutes 4 --tapt_minutes 4   # the README tables (53 minutes on 2 CPU cores)
    python benchmarks/exp_mlm.py             # the default budgets, 5 and 6 minutes (about 1.2 hours)
"""

import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import (
    DATA,
    add_quick,
    argument_parser,
    markdown_row,
    markdown_rule,
    plus_minus,
    pyplot,
    reset_accelerate,
    result_path,
    sample_std,
    save_figure,
    save_json,
)

import hfssl  # noqa: F401
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.adapt.probe import ProbeArguments, run_linear_probe
from hfssl.data.text import load_text_dataset
from hfssl.reference import reference_model_path
from hfssl.training.causal_lm import CausalLMArguments
from hfssl.training.loop import run_pretraining
from hfssl.training.masked_lm import MaskedLMArguments

logger = logging.getLogger("exp_mlm")

SHAPE = dict(vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
BLOCK, BATCH = 128, 16


def pretrain(args):
    reset_accelerate()
    return run_pretraining(args)


# ---- data ----------------------------------------------------------------------------------------------------------
def sst2_split(work: Path) -> tuple[Path, Path, list[str]]:
    """(labelled training file, held-out file of 872 sentences, the training sentences without labels)."""
    lines = [line for line in (DATA / "sst2" / "train.txt").read_text().splitlines() if line.strip()]
    order = random.Random(0).sample(range(len(lines)), len(lines))
    held_out, train = [lines[i] for i in order[:872]], [lines[i] for i in order[872:]]
    train_file, held_out_file = work / "sst2_train.txt", work / "sst2_eval.txt"
    train_file.write_text("\n".join(train) + "\n")
    held_out_file.write_text("\n".join(held_out) + "\n")
    return train_file, held_out_file, [line.split(" ", 1)[1] for line in train]


def write_corpus(path: Path, documents: list[str]) -> Path:
    path.write_text("\n\n".join(d.strip().replace("\n\n", "\n") for d in documents) + "\n")  # one paragraph each
    return path


# ---- equal CPU minutes ---------------------------------------------------------------------------------------------
def steps_for(make_args, minutes: float, work: Path, name: str) -> int:
    """Optimizer steps that take `minutes` for this recipe: a 40-step timing run, the median of its later windows."""
    timing = pretrain(make_args(str(work / f"timing-{name}"), 40, seed=0, logging_steps=10))
    rates = [e["items_per_second"] for e in timing.log_history if "items_per_second" in e][1:]
    tokens_per_step = BATCH * BLOCK
    steps = max(20, int(minutes * 60 * statistics.median(rates) / tokens_per_step))
    logger.info("%s: %.0f tokens/s -> %d steps in %.1f min", name, statistics.median(rates), steps, minutes)
    return steps


def gpt_args(corpus: Path):
    def make(output_dir, steps, seed, logging_steps=50):
        return CausalLMArguments(
            output_dir=output_dir, dataset=str(corpus), block_size=BLOCK, per_device_train_batch_size=BATCH,
            max_steps=steps, seed=seed, icl_warmup_steps=0, eval_steps=0, save_steps=0, report_to="none",
            logging_steps=logging_steps, overwrite_output_dir=True, sample_max_new_tokens=1, **SHAPE,
        )  # fmt: skip

    return make


def bert_args(corpus: Path):
    def make(output_dir, steps, seed, logging_steps=50):
        return MaskedLMArguments(
            output_dir=output_dir, dataset=str(corpus), block_size=BLOCK, per_device_train_batch_size=BATCH,
            max_steps=steps, seed=seed, eval_steps=0, save_steps=0, report_to="none", logging_steps=logging_steps,
            overwrite_output_dir=True, pll_samples=4, **SHAPE,
        )  # fmt: skip

    return make


def random_init(trained: Path, target: Path, seed: int) -> Path:
    """The same architecture and tokenizer with fresh weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    config = AutoConfig.from_pretrained(trained)
    auto = AutoModelForMaskedLM if config.model_type == "bert" else AutoModelForCausalLM
    torch.manual_seed(seed)
    auto.from_config(config).save_pretrained(target)
    AutoTokenizer.from_pretrained(trained).save_pretrained(target)
    return target


# ---- adaptation ----------------------------------------------------------------------------------------------------
def probe(model: Path, train: Path, held_out: Path, k, seed: int, pooling: str, work: Path) -> float:
    with tempfile.TemporaryDirectory(dir=work) as cell:
        args = ProbeArguments(
            model_name_or_path=str(model), dataset=str(train), eval_dataset=str(held_out), num_labels_per_class=k,
            seed=seed, pooling=pooling, output_dir=str(Path(cell) / "probe"),
        )  # fmt: skip
        return run_linear_probe(args).accuracy


def lora(model: Path, train: Path, held_out: Path, k: int, seed: int, work: Path) -> float:
    with tempfile.TemporaryDirectory(dir=work) as cell:
        args = FinetuneArguments(
            model_name_or_path=str(model), dataset=str(train), eval_dataset=str(held_out), num_labels_per_class=k,
            seed=seed, method="lora", num_train_epochs=max(4, 320 // (2 * k)), learning_rate=1e-3,
            per_device_train_batch_size=16, per_device_eval_batch_size=64, output_dir=str(Path(cell) / "lora"),
        )  # fmt: skip
        return run_finetune(args).accuracy


def _row(part, model, method, k, accuracies, **extra) -> dict:
    return {
        "part": part,
        "model": model,
        "method": method,
        "k": k or "all",
        "mean": statistics.mean(accuracies),
        "std": sample_std(accuracies),
        "accuracies": accuracies,
        **extra,
    }


# ---- (a) causal vs masked from scratch ------------------------------------------------------------------------------
def part_a(work: Path, minutes: float, seeds, ks, train, held_out, sentences, save) -> list[dict]:
    builtin = list(load_text_dataset("stdlib_docstrings")["text"])
    corpus = write_corpus(work / "corpus.txt", builtin + sentences)
    recipes = {"GPT (causal_lm)": gpt_args(corpus), "BERT (masked_lm)": bert_args(corpus)}
    steps = {name: steps_for(make, minutes, work, name.split()[0]) for name, make in recipes.items()}
    models: dict[tuple[str, str], list[Path]] = {}
    pretraining = {}
    for name, make in recipes.items():
        for seed in seeds:
            out = work / f"{name.split()[0].lower()}-seed{seed}"
            start = time.perf_counter()
            result = pretrain(make(str(out), steps[name], seed))
            pretraining.setdefault(name, []).append(
                {"seed": seed, "steps": steps[name], "minutes": (time.perf_counter() - start) / 60, **result.final}
            )
            models.setdefault((name, "pretrained"), []).append(out)
            models.setdefault((name, "random init"), []).append(random_init(out, work / f"{out.name}-random", seed))
    poolings = {"GPT (causal_lm)": ("last", "mean"), "BERT (masked_lm)": ("first", "mean")}
    rows = []
    for (name, init), folders in models.items():
        for pooling in poolings[name]:
            for k in ks:
                accuracies = [
                    probe(folder, train, held_out, k, seed, pooling, work) for folder, seed in zip(folders, seeds)
                ]
                logger.info("(a) %s %s %s K=%s: %s", name, init, pooling, k, accuracies)
                rows.append(_row("a", name, f"probe ({pooling})", k, accuracies, init=init, steps=steps[name]))
                save(rows, pretraining)
    return rows


# ---- (b) task-adaptive pretraining of MiniLM -----------------------------------------------------------------------
def with_pooler_of(tapt: Path, base: Path, target: Path) -> Path:
    """The TAPT encoder as a BertModel folder with the base model's pooler (masked_lm saves none)."""
    from transformers import AutoTokenizer, BertModel

    encoder, original = BertModel.from_pretrained(tapt), BertModel.from_pretrained(base)
    encoder.pooler.load_state_dict(original.pooler.state_dict())
    encoder.save_pretrained(target)
    AutoTokenizer.from_pretrained(tapt).save_pretrained(target)
    return target


def part_b(work: Path, minutes: float, seeds, ks, train, held_out, sentences, save) -> list[dict]:
    minilm = reference_model_path("minilm")
    if minilm is None:
        raise SystemExit("(b) needs the MiniLM reference encoder: python -m hfssl.reference fetch")
    corpus = write_corpus(work / "sst2_sentences.txt", sentences)

    def make(output_dir, steps, seed, logging_steps=50):
        return MaskedLMArguments(
            output_dir=output_dir, dataset=str(corpus), model_name_or_path=str(minilm), block_size=64,
            per_device_train_batch_size=BATCH, max_steps=steps, seed=seed, learning_rate=1e-4, eval_steps=0,
            save_steps=0, report_to="none", logging_steps=logging_steps, overwrite_output_dir=True, pll_samples=4,
        )  # fmt: skip

    timing = pretrain(make(str(work / "timing-tapt"), 20, 0, logging_steps=5))
    rate = statistics.median([e["items_per_second"] for e in timing.log_history if "items_per_second" in e][1:])
    steps = max(20, int(minutes * 60 * rate / (BATCH * 64)))
    tapt, pretraining = [], []
    for seed in seeds:
        out = work / f"minilm-tapt-seed{seed}"
        result = pretrain(make(str(out), steps, seed))
        pretraining.append({"seed": seed, "steps": steps, **result.final})
        tapt.append(with_pooler_of(out, minilm, work / f"{out.name}-encoder"))
    rows = []
    for name, folders in (("MiniLM", [minilm] * len(seeds)), ("MiniLM + TAPT", tapt)):
        for method in ("probe (mean)", "lora"):
            for k in ks:
                accuracies = []
                for folder, seed in zip(folders, seeds):
                    if method == "lora":
                        accuracies.append(lora(folder, train, held_out, k, seed, work))
                    else:
                        accuracies.append(probe(folder, train, held_out, k, seed, "mean", work))
                logger.info("(b) %s %s K=%s: %s", name, method, k, accuracies)
                rows.append(_row("b", name, method, k, accuracies, tapt_steps=steps))
                save(rows, {"MiniLM + TAPT": pretraining})
    return rows


# ---- output --------------------------------------------------------------------------------------------------------
def markdown(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(str(r["k"]) for r in rows))
    lines = [markdown_row(["model", "init", "method", *(f"K={k}" for k in labels)]), markdown_rule(3, len(labels))]
    keys = list(dict.fromkeys((r["model"], r.get("init", "pretrained"), r["method"]) for r in rows))
    for model, init, method in keys:
        cells = {
            str(r["k"]): r
            for r in rows
            if (r["model"], r.get("init", "pretrained"), r["method"]) == (model, init, method)
        }
        text = [plus_minus(cells[k]["mean"], cells[k]["std"], scale=100) if k in cells else "" for k in labels]
        lines.append(markdown_row([model, init, method, *text]))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    parts = [p for p in ("a", "b") if any(r["part"] == p for r in rows)]
    fig, axes = plt.subplots(1, len(parts), figsize=(6.5 * len(parts), 4.5), squeeze=False)
    for ax, part in zip(axes[0], parts):
        mine = [r for r in rows if r["part"] == part]
        labels = list(dict.fromkeys(str(r["k"]) for r in mine))
        keys = list(dict.fromkeys((r["model"], r.get("init", "pretrained"), r["method"]) for r in mine))
        for i, key in enumerate(keys):
            cells = {str(r["k"]): r for r in mine if (r["model"], r.get("init", "pretrained"), r["method"]) == key}
            x = [j for j, k in enumerate(labels) if k in cells]
            ax.errorbar(
                x,
                [100 * cells[labels[j]]["mean"] for j in x],
                yerr=[100 * cells[labels[j]]["std"] for j in x],
                marker="o",
                capsize=3,
                linestyle=":" if key[1] == "random init" else "-",
                color=f"C{i % 10}",
                label=" / ".join(key),
            )
        ax.set_xticks(range(len(labels)), [f"K={k}" for k in labels])
        ax.set_ylabel("held-out SST-2 accuracy (%)")
        ax.set_title("(a) causal vs masked, equal CPU minutes" if part == "a" else "(b) MiniLM with and without TAPT")
        ax.legend(fontsize=6)
    save_figure(fig, path)


def main() -> None:
    parser = argument_parser(__doc__)
    add_quick(parser, "1 seed, 1-minute budgets, fewer K.")
    parser.add_argument("--parts", default="ab", help="Which parts to run: a, b or ab.")
    parser.add_argument("--minutes", type=float, default=5.0, help="(a) CPU minutes of pretraining per model.")
    parser.add_argument("--tapt_minutes", type=float, default=6.0, help="(b) CPU minutes of TAPT per seed.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work_dir", type=Path, default=None, help="Keep the models here (default: a temp dir).")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.minutes, args.tapt_minutes, args.seeds = min(args.minutes, 1.0), min(args.tapt_minutes, 1.0), 1
    seeds = list(range(args.seeds))
    ks_a, ks_b = ([32, None], [8, 32]) if args.quick else ([32, 128, None], [8, 32, 128])
    output = args.output or result_path("exp_mlm", "quick" if args.quick else "")
    work_root = args.work_dir or Path(tempfile.mkdtemp(prefix="exp_mlm-"))
    work_root.mkdir(parents=True, exist_ok=True)
    train, held_out, sentences = sst2_split(work_root)
    record = {"config": {k: str(v) for k, v in vars(args).items()}, "rows": [], "pretraining": {}}

    def save(rows, pretraining):
        record["rows"] = [r for r in record["rows"] if r["part"] != rows[0]["part"]] + rows
        record["pretraining"].update(pretraining)
        save_json(output, record, end="")  # written without a final newline

    start = time.perf_counter()
    if "a" in args.parts:
        part_a(work_root, args.minutes, seeds, ks_a, train, held_out, sentences, save)
    if "b" in args.parts:
        part_b(work_root, args.tapt_minutes, seeds, ks_b, train, held_out, sentences, save)
    for part in ("a", "b"):
        rows = [r for r in record["rows"] if r["part"] == part]
        if rows:
            print(f"\n({part}) held-out SST-2 accuracy (%), mean ± std over {len(seeds)} seeds:\n{markdown(rows)}")
    print(f"\npretraining: {json.dumps(record['pretraining'], indent=1)[:2000]}")
    print(f"total {(time.perf_counter() - start) / 60:.1f} min; wrote {output}")
    plot(record["rows"], output.with_suffix(".png"))


if __name__ == "__main__":
    main()
