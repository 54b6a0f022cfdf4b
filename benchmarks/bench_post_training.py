"""Post-training speed: hfssl's run layer around TRL's trainers against TRL's own trainers, and DPO's memory.

Throughput, two arms interleaved round by round (each first in turn; the median round is reported), the same model
(SmolLM2-135M-Instruct by default), the same built-in instruction rows (`hfssl.data.instructions`, seed 0), batch,
sequence length, optimizer steps and seed:
- TRL: `SFTTrainer` / `DPOTrainer` built from a `SFTConfig` / `DPOConfig` with the settings hfssl passes
  (activation checkpointing off, fp32, no checkpoints, no tracker; DPO: the reference's log-probabilities cached);
- hfssl: the trainer `scripts/post_train.py` builds (`hfssl.posttrain`: the same TRL class with hfssl's atomic
  checkpoints mixed in, its run-layer callback, its config from `PostTrainArguments`).
SFT reports tokens/s (the tokens TRL counts, `num_tokens`), DPO preference pairs/s. Goal: hfssl / TRL >= 1.0 (the
layer adds nothing). Only `train()` is timed: tokenising and caching the reference are the same calls in both arms.

SFT packing (`--packing`), two arms of hfssl's own trainer interleaved the same way: one epoch over the same rows,
padded batches of 8 rows against batches of 8 packed rows of at most 256 tokens (`hfssl.posttrain.packing`); the
tokens of the rows over the seconds of `train()`. Two sets of rows: the built-in instruction tasks (with SST-2 and
TREC where ../shared/data has them) and WikiText-2 paragraphs as "continue the text" rows (a wider spread of
lengths). Printed beside it: the padded batches' size over their real tokens (the "ceiling": the speed-up if a token
cost the same in both arms). Goal: >= 1.5x.

DPO memory (each arm in a child process of its own, its peak resident memory from /proc/self/status; `--memory_only`
measures these arms again and keeps the saved throughput): LoRA with the reference
seen through the disabled adapter and its log-probabilities cached (what `post_train.py --method dpo --use_lora`
does) against LoRA with a second full copy of the model as the reference, run every step. Both start from the same
weights and take the same steps, so their losses must agree step by step (checked within 1e-5; step 1's is log 2 in
both, as the adapter starts at zero: the later steps test the cached reference against the live one).

    python benchmarks/bench_post_training.py [--quick]     # --quick: hfssl's tiny GPT-sized model, fewer steps

Writes benchmarks/results/bench_post_training.json. Needs `pip install -e ".[post]"` and, without --quick,
`python -m hfssl.reference fetch` (SmolLM2).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DATA, argument_parser, result_path, save_json
from real_models import reference

import hfssl  # noqa: F401
from hfssl.data.instructions import instruction_data
from hfssl.data.post_training import check_post_training_data
from hfssl.models.helpers import ensure_pad_token
from hfssl.posttrain.arguments import PostTrainArguments
from hfssl.posttrain.formatting import to_model_format
from hfssl.posttrain.run import TRAINED_COLUMNS, build_trainer
from hfssl.posttrain.trainers import RunLayerCallback, trainer_class, trl_config

SEQUENCE = 256  # --max_length of both arms


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="A tiny random GPT, 2 rounds of 3 steps.")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one DPO memory arm, in a process of its own
    parser.add_argument("--model", default=None, help="Default: the fetched SmolLM2 (a tiny GPT with --quick).")
    parser.add_argument("--memory_only", action="store_true", help="Measure the DPO memory arms again, keep the rest.")
    parser.add_argument("--packing_only", action="store_true", help="Measure the packing arms again, keep the rest.")
    return parser.parse_args(argv)


def model_folder(quick: bool, work: Path) -> str:
    """SmolLM2's folder, or (quick) a small random hfssl GPT with the built-in corpus's tokenizer saved in `work`."""
    if not quick:
        return str(reference("smollm2"))
    from hfssl import GPTConfig, GPTForCausalLM
    from hfssl.data.builtin import stdlib_docstrings
    from hfssl.data.text import train_bpe_tokenizer

    folder = work / "gpt"
    tokenizer = train_bpe_tokenizer(stdlib_docstrings()[:2000], vocab_size=1024)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=512, max_position_embeddings=SEQUENCE)  # fmt: skip
    GPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def rows(method: str, tokenizer):
    """The built-in instruction rows (seed 0) in the columns `method`'s trainer reads, formatted for the tokenizer."""
    train, _ = instruction_data(["addition", "lookup", "reversal", "sorting"], 100, seed=0, eval_fraction=0.2)
    table = check_post_training_data(train, method, "built-in instructions")
    table = table.select_columns([c for c in TRAINED_COLUMNS[method] if c in table.column_names])
    return to_model_format(table, tokenizer, "built-in instructions")


def arguments(method: str, folder: str, out: Path, steps: int, batch: int, **extra) -> PostTrainArguments:
    return PostTrainArguments(method=method, model_name_or_path=folder, output_dir=str(out), max_steps=steps,
                              per_device_train_batch_size=batch, learning_rate=1e-5, logging_steps=1, seed=0,
                              **extra)  # fmt: skip


def build(arm: str, method: str, folder: str, out: Path, steps: int, batch: int, cache_reference=True, **extra):
    """The trainer of one arm: hfssl's (as post_train.py builds it) or TRL's own class on the same settings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(folder), model)
    args = arguments(method, folder, out, steps, batch, **{k: v for k, v in extra.items() if k == "use_lora"})
    config = trl_config(args, SEQUENCE)
    if method == "dpo":
        config.precompute_ref_log_probs = cache_reference
    peft_config = extra.get("peft_config")
    kwargs = dict(model=model, args=config, train_dataset=rows(method, tokenizer), processing_class=tokenizer,
                  peft_config=peft_config, **{k: v for k, v in extra.items() if k == "ref_model"})  # fmt: skip
    if arm == "TRL":
        import trl

        trl_class = {"sft": trl.SFTTrainer, "dpo": trl.DPOTrainer}[method]
        return trl_class(**kwargs)
    trainer = trainer_class(method)(**kwargs, callbacks=[RunLayerCallback(str(out))])
    trainer.hfssl_args, trainer.hfssl_run_args = args, args.to_dict()
    return trainer


def timed_round(arm: str, method: str, folder: str, steps: int, batch: int) -> float:
    """Items per second (SFT: tokens; DPO: pairs) of `steps` optimizer steps of one arm."""
    with tempfile.TemporaryDirectory() as out:
        trainer = build(arm, method, folder, Path(out), steps, batch)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        if method == "sft":
            return max(e.get("num_tokens", 0) for e in trainer.state.log_history) / seconds
        return steps * batch / seconds


def throughput(method: str, folder: str, rounds: int, steps: int, batch: int) -> dict:
    measured: dict[str, list[float]] = {"TRL": [], "hfssl": []}
    for r in range(rounds):
        order = ["TRL", "hfssl"] if r % 2 == 0 else ["hfssl", "TRL"]
        for arm in order:
            measured[arm].append(timed_round(arm, method, folder, steps, batch))
            print(f"{method} round {r} {arm}: {measured[arm][-1]:.1f}/s", flush=True)
    median = {arm: statistics.median(values) for arm, values in measured.items()}
    return {"per_round": measured, "median": median, "ratio": median["hfssl"] / median["TRL"]}


def packing_rows(kind: str, count: int):
    """SFT rows (prompt, response): the built-in instruction tasks (+ SST-2 and TREC from ../shared/data when there),
    or WikiText-2 paragraphs split after their first sentence ("continue the text")."""
    import datasets

    data = DATA if DATA.is_dir() else None
    if kind == "instructions":
        tasks = ["addition", "lookup", "reversal", "sorting"]
        tasks += [f"{t}={data / t / 'train.txt'}" for t in ("sst2", "trec") if data and (data / t).is_dir()]
        train, _ = instruction_data(tasks, count // len(tasks) + 1, seed=0, eval_fraction=0.2)
        return train.select(range(min(count, len(train)))), ", ".join(t.split("=")[0] for t in tasks)
    if data is None or not (data / "wikitext2" / "valid.txt").is_file():
        return None, "no ../shared/data/wikitext2"
    paragraphs = [p.strip() for p in (data / "wikitext2" / "valid.txt").read_text().splitlines()]
    first = [p.split(" . ", 1) for p in paragraphs if p and not p.startswith("=") and " . " in p]
    first = [(head, tail) for head, tail in first if len(head.split()) <= 40][:count]  # room left for a response
    prompts = [f"Continue the text: {head} ." for head, _ in first]
    return datasets.Dataset.from_dict({"prompt": prompts, "response": [tail for _, tail in first]}), "WikiText-2"


def sft_trainer(folder: str, out: str, rows, packing: bool):
    """hfssl's SFT trainer of one packing arm (one epoch over `rows`, batches of 8), as post_train.py builds it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(folder), model)
    args = PostTrainArguments(model_name_or_path=folder, output_dir=out, num_train_epochs=1, learning_rate=1e-5,
                              per_device_train_batch_size=8, logging_steps=1000, packing=packing)  # fmt: skip
    return build_trainer(args, model, tokenizer, check_post_training_data(rows, "sft", "rows"), "rows", SEQUENCE, None)


def packing_arm(folder: str, rows, packing: bool) -> tuple[float, int]:
    """(seconds of one epoch's train(), the tokens of its rows) of hfssl's SFT trainer, packed or padded."""
    with tempfile.TemporaryDirectory() as out:
        trainer = sft_trainer(folder, out, rows, packing)
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start, tokens


def padding_ceiling(folder: str, rows) -> float:
    """The padded batches' size over their real tokens: the speed-up packing would reach if a token cost the same in
    both arms (not a bound: the packed arm also takes fewer optimizer steps, each with a fixed cost)."""
    with tempfile.TemporaryDirectory() as out:
        batches = list(sft_trainer(folder, out, rows, packing=False).get_train_dataloader())  # the arms' batches
    return sum(b["input_ids"].numel() for b in batches) / sum(int(b["attention_mask"].sum()) for b in batches)


def packing(folder: str, rounds: int, count: int) -> dict:
    results = {}
    for kind in ("instructions", "wikitext"):
        rows, source = packing_rows(kind, count)
        if rows is None:
            results[kind] = {"skipped": source}
            continue
        seconds: dict[str, list[float]] = {"padded": [], "packed": []}
        tokens = set()
        for r in range(rounds):
            for arm in ["padded", "packed"] if r % 2 == 0 else ["packed", "padded"]:
                elapsed, counted = packing_arm(folder, rows, packing=arm == "packed")
                seconds[arm].append(elapsed)
                tokens.add(counted)
                print(f"packing {kind} round {r} {arm}: {counted / elapsed:.0f} tokens/s", flush=True)
        if len(tokens) != 1:
            raise SystemExit(f"error: the packed and padded arms trained different tokens ({sorted(tokens)})")
        median = {arm: statistics.median(values) for arm, values in seconds.items()}
        results[kind] = {"source": source, "rows": len(rows), "tokens": tokens.pop(), "seconds": seconds,
                         "speedup": median["padded"] / median["packed"],
                         "ceiling": padding_ceiling(folder, rows)}  # fmt: skip
    return results


def child(arm: str, folder: str, steps: int, batch: int) -> dict:
    """One DPO memory arm (run in its own process): steps/s, peak resident memory, first-step loss."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    peft_config = LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM", target_modules="all-linear")
    extra = {"peft_config": peft_config, "use_lora": True}
    full_reference = arm == "second full model"  # a second model, run at every step
    if full_reference:
        extra["ref_model"] = AutoModelForCausalLM.from_pretrained(folder)
    with tempfile.TemporaryDirectory() as out:
        trainer = build("hfssl", "dpo", folder, Path(out), steps, batch, cache_reference=not full_reference, **extra)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"steps_per_second": steps / seconds, "peak_rss_mib": peak_resident_mib(), "losses": losses}


def peak_resident_mib() -> float:
    """This process's own peak resident memory (Linux's VmHWM). Not getrusage's ru_maxrss: a child started by
    subprocess inherits its parent's peak in that figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("error: /proc/self/status has no VmHWM line (the memory arms need Linux)")


def memory(folder: str, steps: int, batch: int, quick: bool) -> dict:
    arms = {}
    for arm in ("cached reference, disabled adapter", "second full model"):
        command = [sys.executable, __file__, "--child", arm, "--model", folder, *(["--quick"] if quick else [])]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"error: the {arm!r} arm failed:\n{done.stderr[-3000:]}")
        arms[arm] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"dpo memory {arm}: {arms[arm]}", flush=True)
    cached, full = arms["cached reference, disabled adapter"], arms["second full model"]
    # step 1's loss is log 2 in both (the adapter starts at zero); the later steps compare the cached reference's
    # log-probabilities with the live second model's
    difference = max(abs(a - b) for a, b in zip(cached["losses"], full["losses"], strict=True))
    if difference > 1e-5:
        raise SystemExit(f"error: the two references give different DPO losses (max difference {difference:.2e})")
    speedup = cached["steps_per_second"] / full["steps_per_second"]
    memory_ratio = cached["peak_rss_mib"] / full["peak_rss_mib"]
    return {"arms": arms, "speedup": speedup, "memory_ratio": memory_ratio, "max_loss_difference": difference}


def main() -> None:
    args = parse_args()
    steps, batch, rounds = (3, 4, 2) if args.quick else (8, 8, 5)
    if args.child:
        print(json.dumps(child(args.child, args.model, steps, batch)))
        return
    packing_rounds, packing_count = (2, 48) if args.quick else (3, 96)
    if args.memory_only or args.packing_only:  # the saved measurements stay; these arms are measured again
        out = result_path("bench_post_training", "quick" if args.quick else "")
        record = json.loads(out.read_text())
        with tempfile.TemporaryDirectory() as work:
            folder = args.model or model_folder(args.quick, Path(work))
            if args.memory_only:
                record["dpo_memory"] = memory(folder, steps, batch, args.quick)
            if args.packing_only:
                record["packing"] = packing(folder, packing_rounds, packing_count)
        save_json(out, record)
        print_summary(record)
        print(f"wrote {out}")
        return
    with tempfile.TemporaryDirectory() as work:
        folder = args.model or model_folder(args.quick, Path(work))
        record = {"model": folder if args.model or not args.quick else "tiny GPT (128 wide, 4 layers)",
                  "steps": steps, "batch": batch, "rounds": rounds, "max_length": SEQUENCE,
                  "sft": throughput("sft", folder, rounds, steps, batch),
                  "dpo": throughput("dpo", folder, rounds, steps, batch),
                  "dpo_memory": memory(folder, steps, batch, args.quick),
                  "packing": packing(folder, packing_rounds, packing_count)}  # fmt: skip
    out = save_json(result_path("bench_post_training", "quick" if args.quick else ""), record)
    print_summary(record)
    print(f"wrote {out}")


def print_summary(record: dict) -> None:
    memory_arms = record["dpo_memory"]
    print(f"SFT tokens/s hfssl / TRL: {record['sft']['ratio']:.3f}; DPO pairs/s: {record['dpo']['ratio']:.3f}")
    if "max_loss_difference" in memory_arms:  # absent from records of an earlier version of this script
        print(f"DPO, cached reference via the disabled adapter vs a second full model: {memory_arms['speedup']:.2f}x "
              f"steps/s, {memory_arms['memory_ratio']:.2f}x peak memory, largest loss difference over the steps "
              f"{memory_arms['max_loss_difference']:.2e}")  # fmt: skip
    for arms in record.get("packing", {}).values():
        if "speedup" in arms:
            print(f"SFT packed vs padded, {arms['source']}: {arms['speedup']:.2f}x tokens/s "
                  f"(ceiling {arms['ceiling']:.2f}x: padded batches over their real tokens)")  # fmt: skip


if __name__ == "__main__":
    main()
