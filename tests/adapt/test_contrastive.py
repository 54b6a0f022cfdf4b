"""--method contrastive (SetFit-style): pairs are balanced and seeded, the pair loss matches its formula computed
slowly, a run tunes the encoder, fits the head on the unit-length embeddings and saves one classifier that
reloads, and bad input is one error."""

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hfssl.adapt.contrastive_pairs import check_pairable, sample_pairs
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe
from hfssl.adapt.task import load_task
from hfssl.losses import cosine_similarity_loss
from hfssl.models.encoders import PooledModelForSequenceClassification, pool_hidden_states
from hfssl.run.errors import InputError
from tests.conftest import why_failed

LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])


def test_pairs_are_balanced_seeded_and_right():
    pairs = sample_pairs(LABELS, rounds=5, seed=3)
    assert pairs.shape == (2 * 5 * len(LABELS), 3)
    assert pairs[:, 2].sum().item() == len(pairs) // 2  # half positive
    for i, j, same in pairs.tolist():
        assert (LABELS[i] == LABELS[j]).item() == bool(same)
        assert i != j
    # every example anchors one positive and one negative pair per round
    assert torch.bincount(pairs[:, 0]).tolist() == [2 * 5] * len(LABELS)
    assert torch.equal(pairs, sample_pairs(LABELS, rounds=5, seed=3))
    assert not torch.equal(pairs, sample_pairs(LABELS, rounds=5, seed=4))


def test_positive_partners_are_drawn_uniformly():
    pairs = sample_pairs(torch.tensor([0, 0, 0, 0, 1, 1]), rounds=3000, seed=0)
    partners = pairs[(pairs[:, 0] == 0) & (pairs[:, 2] == 1), 1]
    counts = torch.bincount(partners, minlength=4).double()
    assert counts[0].item() == 0  # never itself
    counts = counts[1:]  # 1, 2 and 3: each a third of 3000 draws
    assert torch.all((counts - 1000).abs() < 3.5 * math.sqrt(3000 * (1 / 3) * (2 / 3)))


def test_cosine_similarity_loss_is_its_formula():
    torch.manual_seed(0)
    u, v = torch.randn(6, 5), torch.randn(6, 5)
    same = torch.tensor([1, 0, 1, 1, 0, 0])
    slow = 0.0
    for p in range(6):
        cos = sum(a * b for a, b in zip(u[p].tolist(), v[p].tolist())) / (u[p].norm().item() * v[p].norm().item())
        slow += (cos - same[p].item()) ** 2 / 6
    assert cosine_similarity_loss(u, v, same).item() == pytest.approx(slow, rel=1e-5)
    with pytest.raises(InputError, match="one \\(P, D\\) shape"):
        cosine_similarity_loss(u, v[:3], same)


def test_pairs_need_two_classes_and_two_examples_of_each():
    with pytest.raises(InputError, match="two classes or more"):
        check_pairable(torch.tensor([1, 1, 1]), ["a", "b"])
    with pytest.raises(InputError, match=r"two examples of every class .* 'b' has one"):
        check_pairable(torch.tensor([0, 0, 1]), ["a", "b"])


def test_a_contrastive_run_tunes_the_encoder_fits_the_head_and_reloads(tmp_path, bert_dir, sentiment_file, monkeypatch):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "contrastive"
    args = FinetuneArguments(
        model_name_or_path=str(bert_dir),
        dataset=str(sentiment_file),
        output_dir=str(out),
        method="contrastive",
        pooling="mean",
        num_labels_per_class=4,
        contrastive_rounds=4,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
    )
    result = run_finetune(args)
    assert result.method == "contrastive" and result.last_loss < result.first_loss
    changed = set(result.changed_parameters)
    assert {"classifier.weight", "classifier.bias"} <= changed  # the fitted head
    assert any(name.startswith("encoder.encoder.layer.") for name in changed)  # the tuned encoder
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert isinstance(model, PooledModelForSequenceClassification) and model.config.pooling == "mean"
    assert model.config.normalize
    task = load_task(args, model.config)
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = tokenizer(list(task.train_x), padding=True, return_tensors="pt")
    with torch.no_grad():
        embedded = model.pooled_output(**encoded)  # (N, d): the tuned mean, at unit length
        mean = pool_hidden_states(model.encoder(**encoded).last_hidden_state, encoded["attention_mask"], "mean")
        logits = model(**encoded).logits
    torch.testing.assert_close(embedded, torch.nn.functional.normalize(mean, dim=-1))
    # the head was fitted on those unit-length embeddings (a fit on the raw mean gives other logits)
    on_unit = fit_linear_probe(embedded, task.train_y, len(task.names), LinearProbeConfig(seed=args.seed))
    on_raw = fit_linear_probe(mean, task.train_y, len(task.names), LinearProbeConfig(seed=args.seed))
    torch.testing.assert_close(logits, on_unit(embedded), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits, on_raw(mean), atol=1e-2)
    served = pipeline("text-classification", model=str(out))(list(task.eval_x))
    predicted = [model.config.label2id[s["label"]] for s in served]
    assert sum(p == y for p, y in zip(predicted, task.eval_y.tolist())) / len(predicted) == pytest.approx(
        result.accuracy
    )


def test_contrastive_bad_input_is_one_clear_error(tmp_path, bert_dir, simclr_dir, sentiment_file):
    def run(**extra):
        base = dict(model_name_or_path=str(bert_dir), dataset=str(sentiment_file), output_dir=str(tmp_path / "o"))
        return run_finetune(FinetuneArguments(method="contrastive", **{**base, **extra}))

    with pytest.raises(InputError, match="K >= 2"):
        run(num_labels_per_class=1)
    with pytest.raises(InputError, match="holds images"):
        run(model_name_or_path=str(simclr_dir), dataset="digits", num_labels_per_class=2)
    with pytest.raises(InputError, match="not with --tasks"):
        FinetuneArguments(
            model_name_or_path=str(bert_dir), method="contrastive", tasks=f"a={sentiment_file},b={sentiment_file}"
        )
    with pytest.raises(InputError, match="--contrastive_rounds must be > 0"):
        FinetuneArguments(model_name_or_path=str(bert_dir), dataset=str(sentiment_file), contrastive_rounds=0)


@pytest.mark.slow
def test_a_killed_contrastive_run_resumes_exactly(tmp_path, bert_dir, sentiment_file):
    """Killed (os._exit) when step 3 begins, resumed from its last checkpoint: the same pairs, the same encoder,
    the same fitted head and accuracy as a run that was never stopped."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HFSSL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def run(out, *extra, crash_at=None):
        launcher = [str(repo / "tests" / "helpers" / "crash_at_step.py"), str(crash_at)] if crash_at else []
        flags = ["--model_name_or_path", str(bert_dir), "--dataset", str(sentiment_file), "--output_dir", str(out)]
        flags += ["--method", "contrastive", "--pooling", "mean", "--num_labels_per_class", "4"]
        flags += ["--contrastive_rounds", "2", "--num_train_epochs", "2", "--per_device_train_batch_size", "8"]
        flags += ["--save_steps", "1"]
        script = [sys.executable, *launcher, str(repo / "scripts" / "finetune.py")]
        return subprocess.run([*script, *flags, *extra], capture_output=True, text=True, env=env, timeout=300)

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, why_failed(straight)
    crashed = run(tmp_path / "resumed", crash_at=3)
    assert crashed.returncode != 0 and (tmp_path / "resumed" / "checkpoints" / "step-000002").is_dir()
    resumed = run(tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, why_failed(resumed)
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("straight", "resumed")]
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"] and metrics[0]["last_loss"] == metrics[1]["last_loss"]
