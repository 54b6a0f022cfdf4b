"""Adaptation building blocks: labelled text loading, few-shot subsets, cached features, linear probe, metrics."""

import json

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hfssl.adapt.features import cached_features, data_key, model_fingerprint, text_features
from hfssl.adapt.linear_probe import LinearProbeConfig, fit_linear_probe, sklearn_l2
from hfssl.adapt.metrics import classification_scores
from hfssl.data.labelled import few_shot_indices, load_labelled
from tests.conftest import tiny_gpt_config


def test_label_space_text_and_table_formats(tmp_path):
    txt = tmp_path / "sst.txt"
    txt.write_text("1 a good film\n0 a dull , long film\n1 fine\n")
    data = load_labelled(str(txt))
    assert data.names == ["0", "1"] and data.labels.tolist() == [1, 0, 1] and data.inputs[1] == "a dull , long film"
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence": s, "y": y}) + "\n" for s, y in [("x", "neg"), ("z", "pos")]))
    data = load_labelled(str(jsonl), text_column="sentence", label_column="y")
    assert data.names == ["neg", "pos"] and data.labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    "content, message",
    [
        ("1 only one class\n1 again\n", "single class"),
        ("1\n", "expected 'label<space>text'"),
    ],
)
def test_bad_text_sets(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_labelled(str(path))


def test_missing_label_column_and_missing_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match="no column 'label'"):
        load_labelled(str(path))
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_labelled(str(tmp_path / "nope.csv"))


def test_few_shot_indices_are_balanced_seeded_and_checked():
    labels = [0] * 10 + [1] * 5 + [2] * 7
    picked = few_shot_indices(labels, 4, seed=0)
    assert sorted(labels[i] for i in picked) == [0] * 4 + [1] * 4 + [2] * 4
    assert picked == few_shot_indices(labels, 4, seed=0) and picked != few_shot_indices(labels, 4, seed=1)
    with pytest.raises(ValueError, match="larger than class 1, which has 5"):
        few_shot_indices(labels, 6, seed=0)


def test_feature_cache_is_reused_and_keyed_by_weights(tmp_path, tiny_tokenizer):
    from hfssl import GPTModel

    torch.manual_seed(0)
    model = GPTModel(tiny_gpt_config(vocab_size=len(tiny_tokenizer)))
    texts = ["The cat sees the moon.", "A dog.", "The river calls the ship and the king."]
    calls = {"n": 0}

    def compute():
        calls["n"] += 1
        return text_features(model, tiny_tokenizer, texts)

    key = data_key(texts, "last")
    first, hit1 = cached_features(model, key, compute, cache_dir=tmp_path)
    second, hit2 = cached_features(model, key, compute, cache_dir=tmp_path)
    assert (hit1, hit2, calls["n"]) == (False, True, 1) and torch.equal(first, second)
    before = model_fingerprint(model)
    with torch.no_grad():
        model.norm.weight[0] += 1e-3
    assert model_fingerprint(model) != before
    _, hit3 = cached_features(model, key, compute, cache_dir=tmp_path)
    assert not hit3 and calls["n"] == 2


def test_text_features_last_token_ignores_padding_and_rejects_long_texts(tiny_tokenizer):
    from hfssl import GPTModel

    torch.manual_seed(0)
    model = GPTModel(tiny_gpt_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=32))
    short, longer = "The cat.", "The old man remembers a song."
    together = text_features(model, tiny_tokenizer, [short, longer])
    alone = text_features(model, tiny_tokenizer, [short])
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"Text 1 has .* tokens, more than the model's context window"):
        text_features(model, tiny_tokenizer, [short, "the cat " * 40])


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("classes", [3, 2])
def test_lbfgs_probe_matches_sklearn_logistic_regression(standardize, classes):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0]) + 2
    w = torch.randn(5, classes, generator=g)
    y = ((x - 2) @ w + 0.5 * torch.randn(300, classes, generator=g)).argmax(dim=1)
    l2 = 1e-2
    head = fit_linear_probe(x, y, classes, LinearProbeConfig(l2=l2, standardize=standardize))
    # sklearn on the same features, with the C whose objective is ours (sklearn_l2(N, classes, C) == l2)
    xs = (x - x.mean(0)) / x.std(0) if standardize else x
    c = sklearn_l2(len(x), classes) / l2
    reference = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(xs.numpy(), y.numpy())
    ours = head(x).softmax(dim=1)
    theirs = torch.from_numpy(reference.predict_proba(xs.numpy())).float()
    torch.testing.assert_close(ours, theirs, atol=5e-4, rtol=0)  # a wrong C moves them by > 0.05


def test_sgd_probe_and_ridge_regression():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    head = fit_linear_probe(x, y, 2, LinearProbeConfig(solver="sgd", epochs=30, learning_rate=0.05))
    assert (head(x).argmax(1) == y).float().mean() > 0.95
    target = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 3.0
    ridge = fit_linear_probe(x, target, 1, LinearProbeConfig(task="regression", l2=0.0))
    torch.testing.assert_close(ridge(x).squeeze(1), target, atol=1e-4, rtol=0)


def test_offline_metrics():
    scores = classification_scores([0, 1, 1, 2], [0, 1, 2, 2])
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
