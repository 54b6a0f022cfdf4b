"""`scripts/analyze.py induction`: the induction scores of every head of a causal LM (a saved folder, a Hub id or a
GGUF file), as a table of the top heads, a heat map (layers x heads) and a JSON file in --output_dir.

    python scripts/analyze.py induction --model_name_or_path outputs/gpt-stdlib --output_dir outputs/induction

Writes induction.json (every score, the settings, the timings) and induction.png (two heat maps: prefix matching and
copying) into --output_dir, whole or not at all (`hfssl.run.output.publish`). With --icl_dataset it also measures the
in-context learning score on that text. The scores are defined in `hfssl.analysis.induction`.
"""

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.loading import load_causal_lm
from ..run.arguments import ModelSourceArguments, require_positive
from ..run.errors import InputError, MissingDependencyError
from ..run.output import publish
from ..run.start import prepare_run
from .heads import Head
from .induction import COPYING_METHODS, ICLScore, InductionScores, in_context_learning_score, induction_scores

logger = logging.getLogger(__name__)

JSON_FILE = "induction.json"
COPYING_UNITS = {"direct": "direct, logit", "ablation": "ablation, nats"}
PNG_FILE = "induction.png"


@dataclass(kw_only=True)
class InductionArguments(ModelSourceArguments):
    model_name_or_path: str = field(metadata={"help": "A causal LM: saved folder, Hub id or .gguf file."})
    output_dir: str = field(
        default="outputs/induction", metadata={"help": f"Where {JSON_FILE} and {PNG_FILE} are written."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace what an earlier run left in --output_dir (it is set aside, not deleted)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the random tokens and of the bootstrap."})
    seq_len: int = field(
        default=50,
        metadata={"help": "Random tokens per copy (T): each sequence is [BOS] + T tokens + the same T tokens."},
    )
    num_sequences: int = field(default=4, metadata={"help": "Random sequences (B) the scores average over."})
    no_bos: bool = field(
        default=False,
        metadata={"help": "Do not start the sequences with the tokenizer's BOS (default: when it has one)."},
    )
    copying_method: str = field(
        default="direct",
        metadata={
            "help": "Copying score: 'direct' (the head's direct effect on the logit of the token to copy, through the "
            "frozen final norm and the unembedding; all heads in one forward pass) or 'ablation' (the drop in that "
            "token's log-probability when the head is zeroed; one forward pass per head)."
        },
    )
    copying_heads: str = field(
        default="all",
        metadata={
            "help": "Heads whose copying score is reported: 'all', 'none', or a number k for the k heads with the "
            "highest prefix-matching score (with --copying_method ablation: what keeps it short)."
        },
    )
    top_k: int = field(default=10, metadata={"help": "Heads listed in the table, best prefix-matching score first."})
    per_device_eval_batch_size: int = field(
        default=32, metadata={"help": "Rows per forward pass when measuring copying (several ablations at once)."}
    )
    icl_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Held-out text for the in-context learning score (a .txt/.jsonl/... file or folder, a built-in "
            "corpus or a Hub name), packed into blocks of --icl_late tokens. Default: not measured."
        },
    )
    icl_early: int = field(default=50, metadata={"help": "In-context score: the early token position (1-based)."})
    icl_late: int = field(default=500, metadata={"help": "In-context score: the late token position (1-based)."})
    icl_num_sequences: int = field(default=64, metadata={"help": "In-context score: blocks of text it averages over."})
    num_bootstrap: int = field(
        default=1000, metadata={"help": "In-context score: bootstrap resamples (95%% interval)."}
    )
    no_heatmap: bool = field(default=False, metadata={"help": f"Skip {PNG_FILE} (it needs matplotlib)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models with custom code."})

    def __post_init__(self):
        self.check_model_source()
        require_positive(
            self,
            "seq_len",
            "num_sequences",
            "top_k",
            "per_device_eval_batch_size",
            "icl_num_sequences",
            "num_bootstrap",
        )
        if self.seq_len < 2:
            raise InputError(
                f"--seq_len must be at least 2 (a copy needs a token after the first), got {self.seq_len}."
            )
        self.copying = parse_copying_heads(self.copying_heads)
        if self.copying_method not in COPYING_METHODS:
            raise InputError(
                f"--copying_method must be one of {', '.join(COPYING_METHODS)}, got {self.copying_method!r}."
            )
        if self.icl_dataset is not None and not 2 <= self.icl_early < self.icl_late:
            raise InputError(
                f"--icl_early and --icl_late must satisfy 2 <= early < late (1-based positions), got {self.icl_early} "
                f"and {self.icl_late}."
            )
        if not str(self.output_dir).strip():
            raise InputError("--output_dir must name a folder.")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def parse_copying_heads(spec: str) -> bool | int:
    """'all' -> True, 'none' -> False, 'k' -> k (the k best heads by prefix matching)."""
    value = spec.strip().lower()
    if value in ("all", "none"):
        return value == "all"
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise InputError(f"--copying_heads must be 'all', 'none' or a positive number of heads, got {spec!r}.")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            f"The heat map ({PNG_FILE}) needs matplotlib: pip install 'hfssl[analysis]', or pass --no_heatmap."
        ) from None
    return plt


def save_heatmap(scores: InductionScores, path: Path, title: str) -> None:
    """Heat maps of the prefix-matching and (when measured) copying scores: layers (rows) x heads (columns)."""
    plt = _pyplot()
    panels = [("prefix matching", scores.prefix_matching, "viridis", 0.0, 1.0)]
    if scores.copying is not None:
        copying = scores.copying
        limit = float(copying.nan_to_num(0.0).abs().max()) or 1.0
        panels.append((f"copying ({COPYING_UNITS[scores.copying_method]})", copying, "RdBu_r", -limit, limit))
    L, nh = scores.prefix_matching.shape
    width = min(20.0, 2.0 + 0.45 * nh) * len(panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, min(16.0, 1.5 + 0.35 * L)), squeeze=False)
    for ax, (name, values, cmap, low, high) in zip(axes[0], panels, strict=True):
        image = ax.imshow(values.numpy(), cmap=cmap, vmin=low, vmax=high, aspect="auto", interpolation="nearest")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(name)
        fig.colorbar(image, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _icl_blocks(args: InductionArguments, tokenizer) -> torch.Tensor:
    """The first --icl_num_sequences blocks of --icl_late tokens of --icl_dataset: its documents tokenized in order,
    each followed by the end-of-text token, concatenated and cut (as pretraining packs them), read only as far as
    needed. (N, late); InputError when the text holds not even one block."""
    from ..data.text import load_text_dataset

    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError(f"The tokenizer of {args.model_name_or_path} has no end-of-text token to separate documents.")
    ds = load_text_dataset(args.icl_dataset)
    needed = args.icl_num_sequences * args.icl_late
    ids: list[int] = []
    for start in range(0, len(ds), 256):
        for document in tokenizer(ds[start : start + 256]["text"], add_special_tokens=False)["input_ids"]:
            ids += [*document, eos]
        if len(ids) >= needed:
            break
    blocks = min(len(ids) // args.icl_late, args.icl_num_sequences)
    if blocks == 0:
        raise InputError(
            f"--icl_dataset {args.icl_dataset} holds {len(ids)} tokens, fewer than one block of --icl_late "
            f"{args.icl_late}: give more text or a smaller --icl_late."
        )
    return torch.tensor(ids[: blocks * args.icl_late]).view(blocks, args.icl_late)


def run_induction(args: InductionArguments) -> dict:
    """Score every head (`induction_scores`), optionally the in-context learning score, write JSON_FILE and
    PNG_FILE into --output_dir; returns what JSON_FILE holds."""
    if not args.no_heatmap:
        _pyplot()  # before the model loads: a missing matplotlib is known now
    prepare_run(args, inputs=(args.source.input_path,))
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(args.source, args.trust_remote_code)
    load_seconds = time.perf_counter() - started
    icl_blocks = _icl_blocks(args, tokenizer) if args.icl_dataset else None  # bad text: known before any scoring
    scores = induction_scores(
        model,
        tokenizer,
        seq_len=args.seq_len,
        batch_size=args.num_sequences,
        seed=args.seed,
        prepend_bos=False if args.no_bos else None,
        copying=args.copying,
        copying_method=args.copying_method,
        max_batch_rows=args.per_device_eval_batch_size,
    )
    icl: ICLScore | None = None
    if icl_blocks is not None:
        started = time.perf_counter()
        icl = in_context_learning_score(
            model,
            icl_blocks,
            early=args.icl_early,
            late=args.icl_late,
            batch_size=max(1, args.per_device_eval_batch_size // 4),
            num_bootstrap=args.num_bootstrap,
            seed=args.seed,
        )
        scores.seconds["icl"] = time.perf_counter() - started
    scores.seconds["load"] = load_seconds
    top = scores.top_heads(args.top_k)
    record = {
        "kind": "induction",
        "model": str(args.source),
        "num_layers": scores.prefix_matching.shape[0],
        "num_heads": scores.prefix_matching.shape[1],
        **scores.to_dict(),
        "top_heads": [_head_row(scores, head) for head in top],
        "icl": None if icl is None else icl.to_dict(),
        "args": args.to_dict(),
    }

    def write(folder: Path) -> None:
        (folder / JSON_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if not args.no_heatmap:
            save_heatmap(scores, folder / PNG_FILE, f"Induction scores of {Path(str(args.source)).name}")

    publish(args.output_dir, write)
    return record


def _head_row(scores: InductionScores, head: Head) -> dict:
    copying = None if scores.copying is None else float(scores.copying[head])
    return {
        "layer": head[0],
        "head": head[1],
        "prefix_matching": float(scores.prefix_matching[head]),
        "copying": None if copying is None or math.isnan(copying) else copying,
    }


def format_table(record: dict) -> str:
    """Markdown table of the top heads, then one line of context (chance, losses on the two copies, ICL score)."""
    units = COPYING_UNITS[record["copying_method"]]
    lines = [f"| rank | head (layer.head) | prefix matching | copying ({units}) |", "|---|---|---|---|"]
    for rank, row in enumerate(record["top_heads"], 1):
        copying = "" if row["copying"] is None else f"{row['copying']:+.3f}"
        lines.append(f"| {rank} | {row['layer']}.{row['head']} | {row['prefix_matching']:.3f} | {copying} |")
    lines.append(
        f"\n{record['num_layers']} layers x {record['num_heads']} heads; {record['batch_size']} random sequences of "
        f"{record['seq_len']} tokens repeated twice; chance (uniform attention) {record['chance']:.3f}. Loss on the "
        f"first copy {record['loss_first_copy']:.3f}, on the second {record['loss_second_copy']:.3f} nats."
    )
    icl = record.get("icl")
    if icl:
        lines.append(
            f"In-context learning score (loss at token {icl['late']} - loss at token {icl['early']}, "
            f"{icl['num_sequences']} sequences): {icl['score']:+.3f} nats, {icl['confidence']:.0%} interval "
            f"[{icl['low']:+.3f}, {icl['high']:+.3f}]."
        )
    seconds = record["seconds"]
    lines.append("Seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in seconds.items()) + ".")
    return "\n".join(lines)


__all__ = ["InductionArguments", "format_table", "run_induction", "save_heatmap"]
