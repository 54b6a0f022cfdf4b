"""Does pretraining help adaptation, most when labels are few? Every method, pretrained vs random init.

Text: a GPT pretrained on ../shared/data text (Tiny Shakespeare + WikiText-2) for a CPU budget with
`scripts/pretrain.py`'s code path, and the same architecture and tokenizer at random initialisation, both
adapted to SST-2 (../shared/data/sst2/train.txt; a fixed seeded 20% held out for evaluation) with K labels
per class by every method (linear probe, full fine-tune, LP-FT, surgical (last block), LoRA).
Images: a SimCLR encoder pretrained on CIFAR-10 (a seeded 90% of train) vs the same encoder at random init,
adapted with K labels per class, evaluated on 2,000 of the remaining CIFAR-10 images.

Each (modality, init, method, K) runs with several seeds (few-shot subset and training seed); the script
prints a table per modality (accuracy mean +- std), saves it as JSON and plots accuracy vs K, a line per
method and init.

Fine-tuning methods train `--epochs` epochs on a K-per-class subset and `--epochs_all` on the whole training
set (21x more SST-2 examples than K=128: the same epochs would take hours on a CPU). `--work_dir` keeps the
pretrained and random-init models and the splits, and a later run with the same folder reuses them; results
of each modality are merged into the JSON file, so modalities can run separately.

    python benchmarks/exp_adaptation.py --quick      # a few minutes: K in {8, 32} / {1, 10}, 1 seed, short runs
    python benchmarks/exp_adaptation.py              # the README table (about 2 hours on 2 CPU cores)
"""

import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from common import (
    DATA,
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
    sample_std,
    save_figure,
    save_json,
)

import hfssl  # noqa: F401
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.adapt.probe import ProbeArguments, run_linear_probe
from hfssl.models.encoders import SimCLRModel
from hfssl.models.gpt import GPTForCausalLM
from hfssl.training.arguments import PretrainArguments
from hfssl.training.causal_lm import CausalLMArguments
from hfssl.training.contrastive import ContrastiveArguments
from hfssl.training.loop import run_pretraining

METHODS = ("probe", "full", "lp-ft", "surgical", "lora")


def pretrain(args: PretrainArguments) -> Path:
    reset_accelerate()
    return Path(run_pretraining(args).output_dir)


def pretrained_once(args: PretrainArguments) -> Path:
    """`pretrain(args)` into args.output_dir, or the model an earlier run with this --work_dir saved there."""
    target = Path(args.output_dir)
    if (target / "config.json").is_file():
        logging.getLogger(__name__).info("reusing the model in %s", target)
        return target
    return pretrain(args)


def random_init_copy(pretrained: Path, model_cls, target: Path) -> Path:
    """The same architecture (config) and companions (tokenizer / image processor) with fresh weights (seed 0)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    if (target / "config.json").is_file():
        return target
    config = AutoConfig.from_pretrained(pretrained)
    torch.manual_seed(0)
    model_cls(config).save_pretrained(target)
    companion = AutoTokenizer if (pretrained / "tokenizer.json").is_file() else AutoImageProcessor
    companion.from_pretrained(pretrained).save_pretrained(target)
    return target


def text_setup(work: Path, minutes: float, quick: bool) -> tuple[dict, Path, Path]:
    corpus = work / "corpus"
    corpus.mkdir(exist_ok=True)
    for name in ("tinyshakespeare/input.txt", "wikitext2/valid.txt"):
        (corpus / name.replace("/", "_")).write_text((DATA / name).read_text(encoding="utf-8"), encoding="utf-8")
    steps = max(20, int(minutes * 60 / 0.3))  # ~0.3 s per step of this model on 2 CPU cores
    pretrained = pretrained_once(
        CausalLMArguments(
            output_dir=str(work / "gpt"),
            dataset=str(corpus),
            vocab_size=2048,
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=256,
            block_size=128,
            max_steps=steps,
            learning_rate=2e-3,
            icl_warmup_steps=0,  # the settings this experiment was recorded with
            eval_steps=0,
            save_steps=0,
            report_to="none",
            overwrite_output_dir=True,
        )
    )
    untrained = random_init_copy(pretrained, GPTForCausalLM, work / "gpt-random")
    lines = [line for line in (DATA / "sst2" / "train.txt").read_text().splitlines() if line.strip()]
    order = random.Random(0).sample(range(len(lines)), len(lines))
    cut = int(0.8 * len(lines))
    train, held_out = work / "sst2_train.txt", work / "sst2_eval.txt"
    train.write_text("\n".join(lines[i] for i in order[:cut]) + "\n")
    held_out.write_text("\n".join(lines[i] for i in (order[cut : cut + 400] if quick else order[cut:])) + "\n")
    return {"pretrained": pretrained, "random init": untrained}, train, held_out


def image_setup(work: Path, minutes: float) -> tuple[dict, Path, Path]:
    cifar = datasets.load_dataset("parquet", data_files=str(DATA / "cifar10" / "train.parquet"), split="train")
    split = cifar.train_test_split(test_size=0.1, seed=0)
    train, held_out = work / "cifar_train.parquet", work / "cifar_eval.parquet"
    split["train"].to_parquet(train)
    split["test"].select(range(2000)).to_parquet(held_out)
    steps = max(8, int(minutes * 60 / 0.8))  # ~0.8 s per step of this model on 2 CPU cores
    pretrained = pretrained_once(
        ContrastiveArguments(
            output_dir=str(work / "simclr"),
            dataset=str(train),
            resnet_layers=[1, 1, 1, 1],
            resnet_widths=[32, 64, 128, 256],
            per_device_train_batch_size=128,
            max_steps=steps,
            eval_steps=0,
            save_steps=0,
            report_to="none",
            overwrite_output_dir=True,
        )
    )
    untrained = random_init_copy(pretrained, SimCLRModel, work / "simclr-random")
    return {"pretrained": pretrained, "random init": untrained}, train, held_out


def adapt(
    method: str, model: Path, train: Path, held_out: Path, k: int | None, seed: int, work: Path, epochs: int
) -> float:
    """Held-out accuracy of `method` on `model` with K labels per class (None: all); epochs of fine-tuning."""
    with tempfile.TemporaryDirectory(dir=work) as cell:  # each cell's adapted model is scored, then dropped
        common = dict(
            model_name_or_path=str(model),
            dataset=str(train),
            eval_dataset=str(held_out),
            num_labels_per_class=k,
            seed=seed,
            output_dir=str(Path(cell) / "adapted"),
        )
        if method == "probe":
            return run_linear_probe(ProbeArguments(**common)).accuracy
        lr = 1e-3 if method == "lora" else 1e-4
        return run_finetune(
            FinetuneArguments(
                **common,
                method=method,
                num_train_epochs=epochs,
                learning_rate=lr,
                per_device_train_batch_size=32,
                per_device_eval_batch_size=32,
            )
        ).accuracy


def run_modality(name, models, train, held_out, ks, seeds, work, epochs, on_row=lambda rows: None) -> list[dict]:
    """Every (init, method, K) cell over the seeds; `on_row(rows)` after each cell (to save partial results).
    epochs: (for a K subset, for all the labels)."""
    rows = []
    for init, model in models.items():
        for method in METHODS:
            for k in ks:
                accuracies = []
                for seed in seeds:
                    start = time.perf_counter()
                    accuracies.append(
                        adapt(method, model, train, held_out, k, seed, work, epochs[0] if k else epochs[1])
                    )
                    logging.getLogger(__name__).info(
                        "%s %s %s K=%s seed %d: %.4f (%.0f s)",
                        name,
                        init,
                        method,
                        k,
                        seed,
                        accuracies[-1],
                        time.perf_counter() - start,
                    )
                rows.append(
                    {
                        "modality": name,
                        "init": init,
                        "method": method,
                        "k": k or "all",
                        "mean": statistics.mean(accuracies),
                        "std": sample_std(accuracies),
                        "accuracies": accuracies,
                    }
                )
                on_row(rows)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The README form of a modality's table: mean +- std (%) per init x method x K, best mean per K in bold."""
    labels = list(dict.fromkeys(str(r["k"]) for r in rows))
    best = {k: max(r["mean"] for r in rows if str(r["k"]) == k) for k in labels}
    lines = [markdown_row(["init", "method", *(f"K={k}" for k in labels)]), markdown_rule(2, len(labels))]
    for init in ("pretrained", "random init"):
        for method in METHODS:
            cells = {str(r["k"]): r for r in rows if r["init"] == init and r["method"] == method}
            text = [
                plus_minus(cells[k]["mean"], cells[k]["std"], scale=100) if k in cells else "not run" for k in labels
            ]
            text = [f"**{t}**" if k in cells and cells[k]["mean"] == best[k] else t for t, k in zip(text, labels)]
            lines.append(markdown_row([init, method, *text]))
    return "\n".join(lines)


def plot(rows: list[dict], ks, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    labels = [str(k or "all") for k in ks]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for init, style in (("pretrained", "-"), ("random init", ":")):
        for i, method in enumerate(METHODS):
            cells = {str(r["k"]): r for r in rows if r["init"] == init and r["method"] == method}
            means = [100 * cells[k]["mean"] for k in labels]
            stds = [100 * cells[k]["std"] for k in labels]
            ax.errorbar(
                range(len(labels)),
                means,
                yerr=stds,
                linestyle=style,
                marker="o",
                color=f"C{i}",
                label=f"{method} ({init})",
                capsize=3,
            )
    ax.set_xticks(range(len(labels)), [f"K={k}" for k in labels])
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{rows[0]['modality']}: pretrained (solid) vs random init (dotted)")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    add_quick(parser)
    parser.add_argument("--modalities", nargs="+", default=["text", "images"], choices=["text", "images"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="Fine-tuning epochs on a K subset (default 10).")
    parser.add_argument(
        "--epochs_all", type=int, default=None, help="Fine-tuning epochs on all the labels (default 2)."
    )
    parser.add_argument(
        "--work_dir",
        type=Path,
        default=None,
        help="Keep (and reuse) the pretrained models and splits here (default: a temporary folder).",
    )
    add_report(parser, "Print the saved results as markdown tables and exit.")
    return parser.parse_args(argv)


def report(quick: bool) -> None:
    """The saved tables of the full (or --quick) run, per modality, with the settings they were measured with."""
    record = load_json(result_path("exp_adaptation", "quick" if quick else ""))
    for modality, rows in record["results"].items():
        print(
            f"\n{rows[0]['modality']} ({record.get('settings', {}).get(modality, 'settings not recorded')}; "
            f"complete: {record.get('complete', {}).get(modality, 'not recorded')})"
        )
        print(markdown_table(rows))


def modality_setup(modality: str, work: Path, quick: bool) -> tuple[str, list, dict, Path, Path]:
    """(table name, K values (None: all the labels), {init: model folder}, training file, held-out file)."""
    if modality == "text":
        name, ks = "SST-2 (text)", [8, 32] if quick else [8, 32, 128, None]
        models, train, held_out = text_setup(work, 1.0 if quick else 8.0, quick)
    else:
        name, ks = "CIFAR-10 (images)", [1, 10] if quick else [1, 10, 100]
        models, train, held_out = image_setup(work, 1.0 if quick else 10.0)
    return name, ks, models, train, held_out


def main():
    args = parse_args()
    if args.report:
        report(args.quick)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("hfssl.training", "accelerate", "datasets", "hfssl.adapt", "hfssl.data"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    epochs = (args.epochs or (3 if args.quick else 10), args.epochs_all or (3 if args.quick else 2))
    tag = "quick" if args.quick else ""
    out = result_path("exp_adaptation", tag)
    record = load_json(out) if out.is_file() else {}
    results, complete = record.get("results", {}), record.get("complete", {})
    settings = record.get("settings", {})

    def save(modality: str, rows: list[dict], done: bool) -> None:
        results[modality], complete[modality] = rows, done
        settings[modality] = {"seeds": seeds, "epochs_k_subset": epochs[0], "epochs_all_labels": epochs[1]}
        save_json(out, {"complete": complete, "settings": settings, "results": results})

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for modality in args.modalities:  # in the order given
            name, ks, models, train, held_out = modality_setup(modality, work, args.quick)
            rows = run_modality(
                name,
                models,
                train,
                held_out,
                ks,
                seeds,
                work,
                epochs,
                on_row=lambda rows, modality=modality: save(modality, rows, done=False),
            )
            save(modality, rows, done=True)
            print(f"\n{name}: accuracy (%), mean ± std over seeds\n{markdown_table(rows)}")
            plot(rows, ks, result_path("exp_adaptation", modality, tag, suffix=".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
