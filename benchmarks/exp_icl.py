"""Does in-context learning emerge in a model pretrained here? And what does k-shot SST-2 give?

Part 1 (key -> value, the induction pattern A B ... A -> B). Every training document draws a fresh random
mapping from 4 of 26 letter keys to 8 colour words and writes lines `key value` with keys drawn with
replacement, so a key's value can only be known from earlier lines of the same document. A small GPT
is pretrained on it with scripts/pretrain.py's code path (`run_pretraining`). Evaluation uses held-out
mappings (seeds never used in training) through `hfssl.adapt.prompt_classifier.PromptClassifier` (log-likelihood
of each of the 8 value words, shared-prefix cache): queries are the mapping's 4 keys, demonstrations are k
lines drawn from a pool of 32 lines of that mapping. Chance is 1/8. If the model learned to use its
context, accuracy rises with k (the query key appears among k random lines with probability about
1 - (3/4)^k) while zero-shot stays at chance. (With 8 keys per mapping, a 2-layer model had not formed
induction heads after 3,000 steps; with 4, the transition came at about 2,000 steps in a probe run.)

Part 2 (honest k-shot SST-2): the Tiny Shakespeare GPT of benchmarks/exp_lm.py (outputs/exp_lm/seed0),
`scripts/prompt_eval.py`'s sweep on ../shared/data/sst2/train.txt, raw and calibrated.

    python benchmarks/exp_icl.py                       # both parts, 3 seeds
    python benchmarks/exp_icl.py --quick               # a short run of part 1 only
    python benchmarks/exp_icl.py --evaluate outputs/gpt-stdlib   # part 1's evaluation of a saved model
                                                       # (the README's default model, in-context warm-up included)

Prints the tables, writes benchmarks/results/exp_icl.json and benchmarks/results/exp_icl.png.
"""

import json
import random
import statistics
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
    result_path,
    sample_std,
    save_figure,
    save_json,
)

import hfssl  # noqa: F401
from hfssl.adapt.prompt_classifier import PromptClassifier
from hfssl.adapt.prompt_eval import PromptEvalArguments, format_table, run_prompt_eval
from hfssl.adapt.prompts import get_template, select_demonstrations
from hfssl.data.synthetic import KEYS_PER_MAPPING, VALUES, draw_lines, draw_mapping, key_value_documents
from hfssl.models.loading import load_causal_lm
from hfssl.training.causal_lm import CausalLMArguments
from hfssl.training.loop import run_pretraining

POOL_LINES = 32

# CausalLMArguments of the model (the model learns from the key -> value corpus itself: no in-context warm-up on top)
MODEL_FLAGS = dict(
    vocab_size=320,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=256,
    block_size=128,
    per_device_train_batch_size=32,
    learning_rate=1e-3,
    warmup_ratio=0.02,
    weight_decay=0.0,
    icl_warmup_steps=0,
)


def write_corpus(path: Path, num_docs: int, seed: int) -> None:
    """jsonl documents of `key value` lines, one fresh mapping per document."""
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in key_value_documents(num_docs, seed)["text"]))


def held_out_mappings(num_mappings: int) -> tuple[list[dict], list[list]]:
    """(mappings, their pools of POOL_LINES lines): seeded apart from training (seed 0's stream), so they are new."""
    rng = random.Random(10_000)
    mappings = [draw_mapping(rng) for _ in range(num_mappings)]
    return mappings, [draw_lines(m, POOL_LINES, rng) for m in mappings]


def key_value_classifier(model, tokenizer, batch_size: int = 64) -> PromptClassifier:
    """Scores the 8 value words after `key` queries (the key_value template)."""
    template = get_template("key_value", verbalizer={v: v for v in VALUES})
    return PromptClassifier(model, tokenizer, template, VALUES, batch_size=batch_size)


def key_value_accuracy(classifier: PromptClassifier, mappings, pools, k: int, seed: int) -> float:
    """Accuracy over the mappings' keys with k demonstration lines drawn (seeded) from each mapping's pool."""
    correct = total = 0
    for mapping, pool in zip(mappings, pools):
        queries, labels = list(mapping), [VALUES.index(v) for v in mapping.values()]
        chosen = select_demonstrations(
            [VALUES.index(v) for _, v in pool], k, strategy="random", seed=seed * 7919 + k, num_queries=len(queries)
        )
        demos = [
            classifier.demonstrations([pool[i][0] for i in idx], [VALUES.index(pool[i][1]) for i in idx])
            for idx in chosen
        ]
        predicted = classifier.score(queries, demos).loglik.argmax(-1)
        correct += (predicted == torch.tensor(labels)).sum().item()
        total += len(queries)
    return correct / total


def evaluate_key_value(model_dir: Path, shots: list[int], seeds: list[int], num_mappings: int) -> dict:
    """Accuracy at every k over held-out mappings: mean +- std over demonstration seeds."""
    model, tokenizer = load_causal_lm(str(model_dir))
    classifier = key_value_classifier(model, tokenizer)
    mappings, pools = held_out_mappings(num_mappings)
    table = {}
    for k in shots:
        per_seed = [key_value_accuracy(classifier, mappings, pools, k, seed) for seed in (seeds if k else seeds[:1])]
        table[k] = {
            "mean": statistics.fmean(per_seed),
            "std": sample_std(per_seed),
            "runs": per_seed,
            "query_in_context_bound": 1 - (1 - 1 / KEYS_PER_MAPPING) ** k,
        }
    return table


def plot(table: dict, sst2: dict | None, path: Path) -> bool:
    """Key -> value accuracy against k (and, with part 2, SST-2 raw and calibrated); False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2 if sst2 else 1, figsize=(10 if sst2 else 5, 4), squeeze=False)
    ks = sorted(table)
    ax = axes[0][0]
    ax.errorbar(
        ks, [table[k]["mean"] for k in ks], yerr=[table[k]["std"] for k in ks], marker="o", label="GPT (key -> value)"
    )
    ax.axhline(1 / len(VALUES), color="gray", linestyle="--", label="chance")
    ax.set(xlabel="demonstrations k", ylabel="accuracy", title="held-out key -> value mappings", ylim=(0, 1))
    ax.legend()
    if sst2:
        ax = axes[0][1]
        ks2 = [int(k) for k in sst2["shots"]]
        for metric in ("accuracy", "accuracy_calibrated"):
            if metric in sst2["shots"][str(ks2[0])]:
                ax.errorbar(
                    ks2,
                    [sst2["shots"][str(k)][metric]["mean"] for k in ks2],
                    yerr=[sst2["shots"][str(k)][metric]["std"] for k in ks2],
                    marker="o",
                    label=metric,
                )
        ax.axhline(0.5, color="gray", linestyle="--", label="chance")
        ax.set(xlabel="demonstrations k", ylabel="accuracy", title="SST-2, Tiny Shakespeare GPT", ylim=(0, 1))
        ax.legend()
    save_figure(fig, path, announce=False)
    return True


def print_key_value_table(table: dict) -> None:
    print(markdown_row(["k", "accuracy", "P(query key among the k lines)"]) + "\n" + markdown_rule(3))
    for k, row in table.items():
        print(markdown_row([k, plus_minus(row["mean"], row["std"], ".3f"), f"{row['query_in_context_bound']:.3f}"]))


def evaluate_saved_model(model_dir: Path, shots: list[int], seeds: list[int], num_mappings: int) -> None:
    table = evaluate_key_value(model_dir, shots, seeds, num_mappings)
    print(
        f"Key -> value in context, {model_dir}: {num_mappings} held-out mappings x {KEYS_PER_MAPPING} queries, "
        f"{len(seeds)} demonstration seeds; chance {1 / len(VALUES):.3f}"
    )
    print_key_value_table(table)
    out = result_path("exp_icl", model_dir.resolve().name)  # a variant named after the model's folder
    save_json(out, {"model_dir": str(model_dir), "key_value": {str(k): v for k, v in table.items()}})
    print(f"wrote {out}")


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="Short training, fewer mappings, part 1 only.")
    parser.add_argument("--max_steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--num_mappings", type=int, default=100)
    parser.add_argument(
        "--sst2_model",
        type=Path,
        default=OUTPUTS / "exp_lm" / "seed0",
        help="The Tiny Shakespeare GPT of benchmarks/exp_lm.py.",
    )
    parser.add_argument("--sst2_queries", type=int, default=300)
    parser.add_argument("--output_dir", type=Path, default=OUTPUTS / "exp_icl")
    parser.add_argument(
        "--evaluate",
        type=Path,
        default=None,
        help="Skip training: evaluate part 1 on this saved model; writes results/exp_icl_<name>.json.",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.max_steps, args.num_mappings = min(args.max_steps, 300), min(args.num_mappings, 20)
    return args


def pretrain_key_value(max_steps: int, output_dir: Path):
    """Part 1's GPT, pretrained on a fresh key -> value corpus (seed 0); (the run's result, its minutes)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "key_value.jsonl"
        num_docs = max_steps * MODEL_FLAGS["per_device_train_batch_size"] // 2 + 1000  # > 1 epoch of blocks
        write_corpus(corpus, num_docs, seed=0)
        reset_accelerate()
        result = run_pretraining(
            CausalLMArguments(
                **MODEL_FLAGS,
                dataset=str(corpus),
                output_dir=str(output_dir),
                max_steps=max_steps,
                eval_steps=max(max_steps // 4, 1),
                save_steps=0,
                overwrite_output_dir=True,
                seed=0,
                report_to="none",
                logging_steps=100,
                sample_prompt="a red\nb blue\na",
                sample_max_new_tokens=12,
            )
        )
    return result, (time.perf_counter() - start) / 60


def sst2_k_shot(args) -> dict | None:
    """Part 2: scripts/prompt_eval.py's sweep with the Tiny Shakespeare GPT on SST-2 (None when skipped)."""
    sst2_file = DATA / "sst2" / "train.txt"
    if not args.quick and args.sst2_model.is_dir() and sst2_file.is_file():
        reset_accelerate(gradient_state=False)
        sst2_result = run_prompt_eval(
            PromptEvalArguments(
                model_name_or_path=str(args.sst2_model),
                dataset=str(sst2_file),
                shots="0,1,4,8",
                seed=0,  # demonstration seeds 0 .. n-1, as recorded
                num_seeds=len(args.seeds),
                calibrate=True,
                max_eval_examples=args.sst2_queries,
                strategy="balanced",
            )
        )
        print(f"\nPart 2: SST-2 k-shot with the Tiny Shakespeare GPT ({args.sst2_model}), balanced demonstrations")
        print(format_table(sst2_result))
        return sst2_result.to_dict()
    if not args.quick:
        print(f"\nPart 2 skipped: {args.sst2_model} or {sst2_file} is missing (run benchmarks/exp_lm.py first).")
    return None


def main():
    args = parse_args()
    if args.evaluate is not None:
        evaluate_saved_model(args.evaluate, args.shots, args.seeds, args.num_mappings)
        return

    result, train_minutes = pretrain_key_value(args.max_steps, args.output_dir)
    eval_loss = result.final["eval_loss"]
    table = evaluate_key_value(args.output_dir, args.shots, args.seeds, args.num_mappings)
    print(
        f"\nPart 1: key -> value in context. "
        f"GPT {MODEL_FLAGS['num_hidden_layers']} layers x {MODEL_FLAGS['hidden_size']}, "
        f"{args.max_steps} steps ({train_minutes:.1f} min), held-out loss {eval_loss:.3f}; "
        f"{args.num_mappings} held-out mappings x {KEYS_PER_MAPPING} queries; chance {1 / len(VALUES):.3f}"
    )
    print_key_value_table(table)
    sst2 = sst2_k_shot(args)

    name = "exp_icl_quick" if args.quick else "exp_icl"
    record = {
        "key_value": {str(k): v for k, v in table.items()},
        "train_steps": args.max_steps,
        "train_minutes": train_minutes,
        "eval_loss": eval_loss,
        "model": MODEL_FLAGS,
        "sst2": sst2,
    }
    save_json(RESULTS / f"{name}.json", record)
    if plot(table, sst2, RESULTS / f"{name}.png"):
        print(f"wrote {RESULTS / (name + '.json')} and {name}.png")
    else:
        print(f"wrote {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    main()
