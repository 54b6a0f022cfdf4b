"""Why does SetFit lead hfssl's contrastive method at K = 8 on SST-2? The encoder tuning is the same recipe, so this
tests the other half: the logistic-regression head on the (tuned) sentence embeddings.

The heads, 2 x 2, each fitted on the same K examples per class, on the same embeddings:
- features: the raw mean-pooled vector (what hfssl's head read before this experiment), or that vector scaled to
  unit length (what SetFit's head reads: all-MiniLM-L6-v2's sentence-transformers pipeline ends in a Normalize
  module);
- fit: hfssl's probe (each feature standardised with the K examples' mean and std, L2 1e-3), or SetFit's
  (scikit-learn's LogisticRegression with C = 1 on the features as they are: `fit_linear_probe` with
  standardize=False and l2 = `sklearn_l2(N, classes)`, the same objective).
Embeddings: MiniLM frozen, and MiniLM after `finetune.py --method contrastive` (the recipe and budget of
exp_sentence_encoders.py), per seed.

Scored on two sets: a validation set of 500 sentences drawn (per seed) from the training pool, never among the K
picked, on which a default is chosen; and the 500 held-out sentences of exp_sentence_encoders.py, reported
alongside, not chosen on.

    python benchmarks/exp_sentence_heads.py --quick    # SST-2, K = 8, seed 0
    python benchmarks/exp_sentence_heads.py            # SST-2, K = 8 and 16, seeds 0-4 (about 10 minutes)
    python benchmarks/exp_sentence_heads.py --report
"""

import statistics
import tempfile
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
    result_path,
    resume,
    sample_std,
    save_json,
)
from exp_adaptation_real import split_task
from exp_sentence_encoders import SEEDS, hfssl_accuracy, picked
from real_models import reference
from torch.nn import functional as F
from transformers import AutoModel, AutoModelForSequenceClassification

import hfssl  # noqa: F401
from hfssl.adapt.features import text_features
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe, sklearn_l2
from hfssl.models.loading import load_pretrained, load_tokenizer

VALIDATION = 500
HEADS = {
    "raw, hfssl fit": (False, "hfssl"),
    "unit length, hfssl fit": (True, "hfssl"),
    "raw, SetFit fit": (False, "setfit"),
    "unit length, SetFit fit": (True, "setfit"),
}


def validation_indices(num_pool: int, chosen: list[int], seed: int) -> list[int]:
    """VALIDATION indices of the training pool, none of them among the K picked, drawn with `seed`."""
    taken = set(chosen)
    order = torch.randperm(num_pool, generator=torch.Generator().manual_seed(1000 + seed)).tolist()
    return [i for i in order if i not in taken][:VALIDATION]


def head_accuracies(train_f, train_y, scored: dict, num_classes: int, seed: int) -> dict:
    """{head: {set: accuracy}} for every head of HEADS on the same embeddings."""
    out = {}
    for name, (unit, fit) in HEADS.items():
        prepare = (lambda f: F.normalize(f, dim=-1)) if unit else (lambda f: f)
        config = LinearProbeConfig(seed=seed)
        if fit == "setfit":
            config = LinearProbeConfig(seed=seed, standardize=False, l2=sklearn_l2(len(train_y), num_classes))
        head = fit_linear_probe(prepare(train_f), train_y, num_classes, config)
        out[name] = {part: (head(prepare(f)).argmax(-1) == y).double().mean().item() for part, (f, y) in scored.items()}
    return out


def seed_rows(task: dict, k: int, seed: int, work: Path) -> list[dict]:
    """The frozen and the tuned embeddings of one seed, every head on each."""
    train, held_out = task["train"], task["held_out"]
    idx = picked(train, k, seed)
    val = validation_indices(len(train.inputs), idx, seed)
    texts = {
        "train": [train.inputs[i] for i in idx],
        "validation": [train.inputs[i] for i in val],
        "held_out": held_out.inputs,
    }
    labels = {"train": train.labels[idx], "validation": train.labels[val], "held_out": held_out.labels}
    folder = str(reference("minilm"))
    frozen = load_pretrained(AutoModel, folder)
    hfssl_accuracy(task, "contrastive", k, seed, work)  # tunes and saves the encoder
    tuned = load_pretrained(AutoModelForSequenceClassification, str(work / "adapted")).encoder
    tokenizer = load_tokenizer(folder)
    rows = []
    for encoder_name, encoder in (("frozen", frozen), ("contrastive", tuned)):
        with torch.no_grad():
            feats = {p: text_features(encoder, tokenizer, t, pooling="mean", batch_size=32) for p, t in texts.items()}
        scored = {p: (feats[p], labels[p]) for p in ("validation", "held_out")}
        heads = head_accuracies(feats["train"], labels["train"], scored, len(train.names), seed)
        for head, accuracy in heads.items():
            rows.append({"k": k, "seed": seed, "encoder": encoder_name, "head": head, **accuracy})
    return rows


def tables(record: dict) -> str:
    rows = record["rows"]
    out = []
    for k in sorted({r["k"] for r in rows}):
        seeds = sorted({r["seed"] for r in rows if r["k"] == k})
        out += [f"\n### SST-2, K = {k}: accuracy (%), mean ± std over seeds {seeds}\n"]
        out += [markdown_row(["embeddings", "head", "validation", "held-out"]), markdown_rule(2, 2)]
        for encoder in ("frozen", "contrastive"):
            for head in HEADS:
                cells = [r for r in rows if (r["k"], r["encoder"], r["head"]) == (k, encoder, head)]
                if not cells:
                    continue
                text = [_spread([c[p] for c in cells if p in c]) for p in ("validation", "held_out")]
                out.append(markdown_row([encoder, head, *text]))
    return "\n".join(out)


def _spread(values: list[float]) -> str:
    return plus_minus(statistics.fmean(values), sample_std(values), scale=100) if values else ""


def main() -> None:
    parser = argument_parser(__doc__)
    add_quick(parser, "SST-2, K = 8, seed 0: checks the script.")
    add_fresh(parser)
    add_report(parser)
    parser.add_argument("--ks", nargs="+", type=int, default=[8, 16])
    args = parser.parse_args()
    seeds = [0] if args.quick else list(SEEDS)
    ks = [8] if args.quick else args.ks
    out = result_path("exp_sentence_heads", "quick" if args.quick else "")
    if not args.report:
        record = resume(out, {"settings": {"task": "sst2", "validation": VALIDATION}, "rows": []}, args.fresh)
        work = OUTPUTS / "exp_sentence_heads"
        work.mkdir(parents=True, exist_ok=True)
        train, held_out, *files = split_task("sst2", work)
        task = {"train": train, "held_out": held_out, "files": files}
        for k in ks:
            for seed in seeds:
                if any((r["k"], r["seed"]) == (k, seed) for r in record["rows"]):
                    continue
                with tempfile.TemporaryDirectory(dir=work) as cell:
                    record["rows"] += seed_rows(task, k, seed, Path(cell))
                save_json(out, record)
                print(f"K={k} seed {seed} done")
    print(tables(load_json(out)))


if __name__ == "__main__":
    main()
