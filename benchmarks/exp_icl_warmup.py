"""What does the main command's in-context warm-up buy, and what does it cost?

Trains the README's main command (`scripts/pretrain.py` defaults: built-in docstrings, 2 x 128 GPT, BPE-1024,
--max_steps 5,000 = 2,500 in-context warm-up steps + 2,500 corpus steps with 10% key -> value documents mixed in;
until #27 it was 2,500 + 2,000, results/exp_icl_warmup_4500steps.json) for each seed,
optionally with flags changed (`--variant NAME=FLAGS`), and measures on every model:

- key -> value accuracy with k demonstrations on 100 held-out mappings (`exp_icl.evaluate_key_value`, 3
  demonstration seeds; chance 1/8): does the model learn from its prompt?
- bits per character on the docstrings the model's own run held out (its seed's 5% split, first 250 tokens of
  each document, scored after an end-of-text token): comparable across tokenizers, so across vocabulary sizes.

    python benchmarks/exp_icl_warmup.py                                   # the default, seeds 42 and 1
    python benchmarks/exp_icl_warmup.py --variant "no mix=--icl_mix_fraction 0" --seeds 42
    python benchmarks/exp_icl_warmup.py --baseline outputs/old-default   # also score an existing model

Prints the table and writes benchmarks/results/exp_icl_warmup.json.
"""

import dataclasses
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exp_icl
from common import (
    OUTPUTS,
    argument_parser,
    markdown_row,
    markdown_rule,
    plus_minus,
    reset_accelerate,
    result_path,
    save_json,
)

from hfssl.data.text import load_text_dataset
from hfssl.models.loading import load_causal_lm
from hfssl.training.arguments import parse_pretrain_args
from hfssl.training.causal_lm import CausalLMArguments
from hfssl.training.loop import run_pretraining
from hfssl.training.text_corpus import split_held_out

SHOTS = [0, 4, 8]


@torch.no_grad()
def heldout_bits_per_char(model_dir: Path, max_tokens: int = 250) -> float:
    """sum of -log2 p(token) over the docstrings the run held out / their characters (after decoding the kept
    tokens). The split is the run's own (`split_held_out` with its seed and fraction from run_args.json)."""
    run = json.loads((model_dir / "run_args.json").read_text())
    _, held_out = split_held_out(load_text_dataset("stdlib_docstrings"), run["eval_split_fraction"], run["seed"])
    docs = held_out["text"]
    model, tokenizer = load_causal_lm(str(model_dir))
    model.eval()
    nats = chars = 0.0
    for text in docs:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        x = torch.tensor([[tokenizer.eos_token_id, *ids]])
        nats += model(x, labels=x).loss.item() * len(ids)
        chars += len(tokenizer.decode(ids))
    return nats / chars / math.log(2)


def measure(model_dir: Path, num_mappings: int) -> dict:
    table = exp_icl.evaluate_key_value(model_dir, SHOTS, [0, 1, 2], num_mappings)
    return {
        "key_value": {str(k): row["mean"] for k, row in table.items()},
        "bits_per_char": heldout_bits_per_char(model_dir),
    }


def train(flags: list[str], seed: int, output_dir: Path) -> float:
    """Pretrain the main command (`CausalLMArguments`' defaults), changed by a variant's pretrain.py flags, with this
    seed into output_dir; returns the minutes it took. `--variant` takes command-line flags, so those are parsed."""
    args = parse_pretrain_args(flags) if flags else CausalLMArguments()
    args = dataclasses.replace(
        args, seed=seed, output_dir=str(output_dir), overwrite_output_dir=True, report_to="none", save_steps=0
    )
    reset_accelerate()
    start = time.perf_counter()
    run_pretraining(args)
    return (time.perf_counter() - start) / 60


def mean_std(values: list[float]) -> str:
    if len(values) > 1:
        return plus_minus(statistics.fmean(values), statistics.stdev(values), ".3f")
    return f"{values[0]:.3f}"


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1])
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=FLAGS: also train with these pretrain.py flags (repeatable).",
    )
    parser.add_argument("--baseline", type=Path, action="append", default=[], help="Also measure this saved model.")
    parser.add_argument("--num_mappings", type=int, default=100)
    parser.add_argument("--work_dir", type=Path, default=OUTPUTS / "exp_icl_warmup")
    return parser.parse_args(argv)


def measured_rows(args) -> list[dict]:
    """A row per variant (its runs, one per seed: trained, then measured) and per --baseline model."""
    variants = {"default": []} | {v.split("=", 1)[0]: shlex.split(v.split("=", 1)[1]) for v in args.variant}
    rows = []
    for name, flags in variants.items():
        runs = []
        for seed in args.seeds:
            out = args.work_dir / f"{name.replace(' ', '_')}-seed{seed}"
            minutes = train(flags, seed, out)
            runs.append({"seed": seed, "minutes": minutes, **measure(out, args.num_mappings)})
            print(f"{name} seed {seed}: {runs[-1]}", flush=True)
        rows.append({"model": name, "flags": flags, "runs": runs})
    for path in args.baseline:
        rows.append({"model": str(path), "flags": None, "runs": [measure(path, args.num_mappings)]})
    return rows


def print_table(rows: list[dict], args) -> None:
    print(
        f"\nKey -> value accuracy on {args.num_mappings} held-out mappings (chance 0.125) and held-out docstring "
        f"bits/char; mean ± std over seeds {args.seeds}"
    )
    print(markdown_row(["model", *(f"k={k}" for k in SHOTS), "bits/char", "minutes"]))
    print(markdown_rule(1, len(SHOTS) + 2))
    for row in rows:
        runs = row["runs"]
        cells = [mean_std([r["key_value"][str(k)] for r in runs]) for k in SHOTS]
        minutes = mean_std([r["minutes"] for r in runs]) if "minutes" in runs[0] else "—"
        print(markdown_row([row["model"], *cells, mean_std([r["bits_per_char"] for r in runs]), minutes]))


def main():
    args = parse_args()
    rows = measured_rows(args)
    print_table(rows, args)
    out = save_json(result_path("exp_icl_warmup"), {"seeds": args.seeds, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
