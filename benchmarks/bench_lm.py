"""hfssl GPTForCausalLM vs transformers' GPT2LMHeadModel, side by side in one process.

Same size (default 6 layers, hidden 384, 6 heads, block 256, vocab 8192), same initialisation scheme,
same optimizer (torch AdamW), fp32, dropout 0 in both (GPT-2's default 0.1 would make the peer do
extra work we do not). Timings alternate between the two models round by round and the median round
is reported, so machine noise hits both alike.

Measures
- training throughput: tokens/s of forward + backward + AdamW step;
- greedy generation throughput: new tokens/s of `generate(max_new_tokens=256)` with the KV cache, batch 1;
- model FLOP utilisation: achieved FLOP/s (6 N + 12 L d T per token, nanoGPT's estimate) as a fraction of
  this machine's fp32 matmul throughput (1024 x 1024 x 1024, best of two measurements in the same run).

Prints a table and writes benchmarks/results/bench_lm.json: a list of {"name", "ratio", "target", ...}
rows, ratio = ours / peer.

    python benchmarks/bench_lm.py            # ~5 min on 2 CPU cores
    python benchmarks/bench_lm.py --quick    # ~1 min, noisier
"""

import statistics
import time
from pathlib import Path

import torch
from common import argument_parser, result_path, save_json
from transformers import GPT2Config, GPT2LMHeadModel

from hfssl import GPTConfig, GPTForCausalLM

RESULTS = result_path("bench_lm")


def build_models(args):
    ours_config = GPTConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        max_position_embeddings=args.block_size + args.new_tokens,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    peer_config = GPT2Config(
        vocab_size=args.vocab_size,
        n_embd=args.hidden_size,
        n_layer=args.layers,
        n_head=args.heads,
        n_positions=args.block_size + args.new_tokens,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    ours = GPTForCausalLM(ours_config)
    torch.manual_seed(0)
    peer = GPT2LMHeadModel(peer_config)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    assert n_ours == n_peer, (n_ours, n_peer)  # same size, or the comparison means nothing
    return ours, peer, n_ours


def matmul_flops_per_s(size=1024, repeats=20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times)


def make_train_step(model, batch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_generate(model, prompt, new_tokens):
    model.eval()
    mask = torch.ones_like(prompt)

    def generate():
        with torch.no_grad():
            out = model.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=1,
                use_cache=True,
            )
        assert out.shape[1] == prompt.shape[1] + new_tokens

    return generate


def alternate(fn_a, fn_b, rounds, calls_per_round):
    """Median seconds per call of two functions, timed in alternating rounds (after one warm-up call each)."""
    fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(rounds):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t = time.perf_counter()
            for _ in range(calls_per_round):
                fn()
            times.append((time.perf_counter() - t) / calls_per_round)
    return statistics.median(times_a), statistics.median(times_b)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="Fewer rounds (noisier).")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden_size", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def result_rows(train: tuple, gen: tuple, mfu: tuple, peak: float) -> list[dict]:
    """The rows of bench_lm.json from (ours, peer) pairs of training tokens/s, generation tokens/s and MFU."""
    (train_ours, train_peer), (gen_ours, gen_peer), (mfu_ours, mfu_peer) = train, gen, mfu
    return [
        {
            "name": "train_tokens_per_s",
            "ratio": train_ours / train_peer,
            "target": 1.2,
            "ours": train_ours,
            "peer": train_peer,
            "unit": "tokens/s",
        },
        {
            "name": "generate_tokens_per_s",
            "ratio": gen_ours / gen_peer,
            "target": 1.0,
            "ours": gen_ours,
            "peer": gen_peer,
            "unit": "new tokens/s (greedy, KV cache, batch 1)",
        },
        {
            "name": "train_mfu",
            "ratio": mfu_ours / mfu_peer,
            "target": None,
            "ours": mfu_ours,
            "peer": mfu_peer,
            "unit": f"fraction of fp32 matmul peak {peak / 1e9:.0f} GFLOP/s",
        },
    ]


def print_table(rows: list[dict], peak_before: float, peak: float) -> None:
    print(f"fp32 1024x1024 matmul: {peak_before / 1e9:.0f} GFLOP/s before training, best {peak / 1e9:.0f} GFLOP/s")
    print(f"{'metric':<24}{'hfssl':>12}{'GPT2LMHead':>12}{'ratio':>8}{'target':>8}  unit")
    for r in rows:
        target = f"{r['target']:.1f}" if r["target"] is not None else "-"
        fmt = "{:>12.3f}" if r["name"] == "train_mfu" else "{:>12.0f}"
        print(
            f"{r['name']:<24}"
            + fmt.format(r["ours"])
            + fmt.format(r["peer"])
            + f"{r['ratio']:>8.2f}{target:>8}  {r['unit']}"
        )


def main():
    args = parse_args()
    rounds, gen_rounds = (3, 2) if args.quick else (7, 5)
    train_calls = 2 if args.quick else 4

    ours, peer, n_params = build_models(args)
    print(
        f"models: {n_params / 1e6:.1f}M parameters each; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(2, args.vocab_size, (args.batch_size, args.block_size), generator=g)
    prompt = torch.randint(2, args.vocab_size, (1, 8), generator=g)

    peak_before = matmul_flops_per_s()
    t_ours, t_peer = alternate(make_train_step(ours, batch), make_train_step(peer, batch), rounds, train_calls)
    tokens = batch.numel()
    train_ours, train_peer = tokens / t_ours, tokens / t_peer
    flops_per_token = 6 * n_params + 12 * args.layers * args.hidden_size * args.block_size
    # the machine is shared and noisy: the best matmul rate seen in this run is the (conservative) peak
    peak = max(peak_before, matmul_flops_per_s())
    mfu_ours, mfu_peer = train_ours * flops_per_token / peak, train_peer * flops_per_token / peak

    g_ours, g_peer = alternate(
        make_generate(ours, prompt, args.new_tokens), make_generate(peer, prompt, args.new_tokens), gen_rounds, 1
    )
    gen_ours, gen_peer = args.new_tokens / g_ours, args.new_tokens / g_peer

    rows = result_rows((train_ours, train_peer), (gen_ours, gen_peer), (mfu_ours, mfu_peer), peak)
    print_table(rows, peak_before, peak)
    save_json(args.output, rows)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
