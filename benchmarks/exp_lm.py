"""Does pretraining learn anything? GPT on Tiny Shakespeare for a fixed CPU budget vs n-gram baselines.

The corpus (../shared/data/tinyshakespeare/input.txt) is split by position: the first 90% of its
paragraphs train, the last 10% (later plays, never seen) are held out. The GPT is pretrained with
scripts/pretrain.py's own code path (`run_pretraining`), with the number of steps chosen so that training
fits the budget on this machine (measured, not assumed). Baselines use the same BPE tokenizer and are
scored on the same held-out blocks and target positions:
- unigram: p(x_t) from training-token counts (add-one smoothing);
- bigram: p(x_t | x_{t-1}) with add-k smoothing (k = 0.01), backing off to the unigram mass.

Prints a table (held-out loss in nats/token and perplexity) and a sample, and writes
benchmarks/results/exp_lm.json.

    python benchmarks/exp_lm.py --seeds 0 1 2 --budget_minutes 4 --results_name exp_lm_3seeds
    python benchmarks/exp_lm.py --budget_minutes 8                  # the first README table (seed 0)
    python benchmarks/exp_lm.py --budget_minutes 1                  # quick check
"""

import math
import os
import statistics
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import torch
from common import DATA, OUTPUTS, argument_parser, reset_accelerate, result_path, sample_std, save_json

import hfssl  # noqa: F401
from hfssl.data.text import load_text_dataset, load_tokenizer, pack_into_blocks
from hfssl.models.gpt import GPTConfig, GPTForCausalLM
from hfssl.training.causal_lm import CausalLMArguments
from hfssl.training.loop import run_pretraining

DEFAULT_CORPUS = DATA / "tinyshakespeare" / "input.txt"

# CausalLMArguments of the model and its training (recorded as "config" in the results JSON)
MODEL_FLAGS = dict(
    vocab_size=2048,
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=256,
    block_size=128,
    per_device_train_batch_size=16,
    learning_rate=2e-3,
    icl_warmup_steps=0,
)


def split_corpus(corpus: Path, workdir: Path) -> tuple[Path, Path]:
    paragraphs = [p for p in corpus.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    cut = int(0.9 * len(paragraphs))
    train, held_out = workdir / "train.txt", workdir / "held_out.txt"
    train.write_text("\n\n".join(paragraphs[:cut]) + "\n")
    held_out.write_text("\n\n".join(paragraphs[cut:]) + "\n")
    return train, held_out


def seconds_per_step(batch_size: int, block_size: int) -> float:
    """Time a few forward+backward+AdamW steps of the experiment's model on random tokens."""
    f = MODEL_FLAGS
    config = GPTConfig(
        vocab_size=f["vocab_size"],
        hidden_size=f["hidden_size"],
        num_hidden_layers=f["num_hidden_layers"],
        num_attention_heads=f["num_attention_heads"],
        max_position_embeddings=f["max_position_embeddings"],
    )
    model = GPTForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randint(2, f["vocab_size"], (batch_size, block_size))
    times = []
    for _ in range(6):
        t = time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def ngram_losses(train_blocks, eval_blocks, vocab_size: int, k: float = 0.01) -> dict[str, float]:
    """Held-out mean NLL (nats/token) of add-one unigram and add-k bigram models, on targets x_1..x_{T-1}."""
    unigram, bigram, context = Counter(), Counter(), Counter()
    for block in train_blocks:
        unigram.update(block)
        bigram.update(pairwise(block))
        context.update(block[:-1])
    total = sum(unigram.values())
    p_uni = {t: (unigram[t] + 1) / (total + vocab_size) for t in range(vocab_size)}
    nll_uni = nll_bi = 0.0
    count = 0
    for block in eval_blocks:
        for prev, cur in pairwise(block):
            nll_uni -= math.log(p_uni[cur])
            # add-k on the counts, with the k mass spread like the unigram (a proper distribution over the vocab)
            p = (bigram[(prev, cur)] + k * vocab_size * p_uni[cur]) / (context[prev] + k * vocab_size)
            nll_bi -= math.log(p)
            count += 1
    return {"unigram": nll_uni / count, "bigram": nll_bi / count}


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--budget_minutes", type=float, default=8.0, help="CPU training budget per seed (<= 10).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output_dir", type=Path, default=OUTPUTS / "exp_lm")
    parser.add_argument("--results_name", default="exp_lm", help="Name of the .json in benchmarks/results/.")
    return parser.parse_args(argv)


def pretrain_seed(seed: int, max_steps: int, train_file: Path, held_out_file: Path, output_dir: Path) -> dict:
    """One seed's GPT pretrained for max_steps: its held-out loss, minutes and sample."""
    reset_accelerate()
    out = output_dir / f"seed{seed}"
    run_args = CausalLMArguments(
        **MODEL_FLAGS,
        dataset=str(train_file),
        eval_dataset=str(held_out_file),
        output_dir=str(out),
        max_steps=max_steps,
        eval_steps=max(max_steps // 4, 1),
        save_steps=0,
        max_eval_samples=100000,
        seed=seed,
        overwrite_output_dir=True,
        sample_prompt="ROMEO:",
        sample_max_new_tokens=120,
        report_to="none",
        logging_steps=50,
    )
    start = time.perf_counter()
    result = run_pretraining(run_args)
    return {
        "seed": seed,
        "loss": result.final["eval_loss"],
        "minutes": (time.perf_counter() - start) / 60,
        "sample": result.report.removeprefix("Sample:\n"),
    }


def baseline_losses(tokenizer_dir: Path, train_file: Path, held_out_file: Path):
    """(n-gram losses, held-out blocks, tokenizer): the BPE tokenizer is a deterministic function of the training
    text, so the baselines are seed-free."""
    tokenizer = load_tokenizer(str(tokenizer_dir))
    train_blocks = pack_into_blocks(load_text_dataset(str(train_file)), tokenizer, MODEL_FLAGS["block_size"])
    eval_blocks = pack_into_blocks(load_text_dataset(str(held_out_file)), tokenizer, MODEL_FLAGS["block_size"])
    baselines = ngram_losses(list(train_blocks["input_ids"]), list(eval_blocks["input_ids"]), len(tokenizer))
    return baselines, eval_blocks, tokenizer


def result_rows(baselines: dict, runs: list[dict], max_steps: int) -> list[dict]:
    losses = [r["loss"] for r in runs]
    mean, std = statistics.mean(losses), sample_std(losses)
    rows = [
        {"model": "unigram (add-one)", "loss": baselines["unigram"], "std": 0.0},
        {"model": "bigram (add-0.01)", "loss": baselines["bigram"], "std": 0.0},
        {"model": f"hfssl GPT ({max_steps} steps)", "loss": mean, "std": std},
    ]
    for row in rows:
        row["perplexity"] = math.exp(row["loss"])
    return rows


def main():
    args = parse_args()
    results = result_path(args.results_name)
    if not args.corpus.is_file():
        raise SystemExit(f"Corpus not found: {args.corpus} (the shared data folder is needed for this experiment).")

    with tempfile.TemporaryDirectory() as tmp:
        train_file, held_out_file = split_corpus(args.corpus, Path(tmp))
        step_s = seconds_per_step(MODEL_FLAGS["per_device_train_batch_size"], MODEL_FLAGS["block_size"])
        max_steps = max(20, int(args.budget_minutes * 60 / step_s * 0.9))  # 10% for evaluation and saving
        print(f"measured {step_s:.3f} s/step -> {max_steps} steps for a {args.budget_minutes:g}-minute budget")
        runs = [pretrain_seed(seed, max_steps, train_file, held_out_file, args.output_dir) for seed in args.seeds]
        baselines, eval_blocks, tokenizer = baseline_losses(
            args.output_dir / f"seed{args.seeds[0]}", train_file, held_out_file
        )

    rows = result_rows(baselines, runs, max_steps)
    minutes = statistics.mean(r["minutes"] for r in runs)
    print(
        f"\nTiny Shakespeare, held-out last 10% ({len(eval_blocks)} blocks of {MODEL_FLAGS['block_size']} "
        f"BPE-{len(tokenizer)} tokens); {len(runs)} seed(s), {minutes:.1f} min of training each on "
        f"{os.cpu_count()} CPU cores"
    )
    print(f"{'model':<28}{'loss (nats/token)':>24}{'perplexity':>12}")
    for row in rows:
        print(f"{row['model']:<28}{row['loss']:>16.3f} +- {row['std']:.3f}{row['perplexity']:>12.1f}")
    print(f"\nSample (seed {runs[0]['seed']}, prompt 'ROMEO:'):\n{runs[0]['sample']}")
    save_json(results, {"rows": rows, "runs": runs, "max_steps": max_steps, "config": MODEL_FLAGS})
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
