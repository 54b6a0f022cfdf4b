"""Multi-task fine-tuning (`finetune.py --tasks`): parsing, sampling proportions, uncertainty weights, a shared
encoder saved as one standard folder per task that reloads (and serves in a pipeline) with its own head."""

import json
import math
from collections import Counter
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, pipeline

from hfssl.adapt.classifier import Batcher, predict
from hfssl.adapt.finetune import FinetuneArguments
from hfssl.adapt.multitask import (
    UncertaintyWeights,
    load_multitask,
    parse_task_weights,
    parse_tasks,
    sampling_probabilities,
    task_schedule,
)
from hfssl.adapt.task import load_task
from hfssl.models.loading import load_config
from hfssl.run.errors import InputError
from tests.conftest import import_script

finetune = import_script("finetune")


@pytest.fixture
def topic_file(tmp_path):
    """A second task: three topics, `label text` lines."""
    rows = {
        "0": ["the river flows", "a ship on the sea"],
        "1": ["the king rules", "a letter to the king"],
        "2": ["the cat sleeps", "a dog barks"],
    }
    lines = [f"{label} {text} {i}" for i in range(5) for label, texts in rows.items() for text in texts]
    path = tmp_path / "topic.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_task_lists_are_parsed_and_checked():
    assert [(t.name, t.dataset) for t in parse_tasks("a=x.txt, b=y.csv")] == [("a", "x.txt"), ("b", "y.csv")]
    for bad, message in [
        ("a=x.txt,a=y.txt", "used twice"),
        ("a=x.txt", "at least two"),
        ("a=x.txt,b", "name=dataset"),
        ("a/b=x.txt,c=y.txt", "names a folder"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_tasks(bad)
    assert parse_task_weights("b=0.5", ["a", "b"]) == {"a": 1.0, "b": 0.5}
    with pytest.raises(InputError, match="not one of"):
        parse_task_weights("c=1", ["a", "b"])
    with pytest.raises(InputError, match="> 0"):
        parse_task_weights("a=0", ["a", "b"])


def test_sampling_probabilities_follow_their_formulas():
    sizes = [100, 400]
    assert sampling_probabilities(sizes, "proportional") == [0.2, 0.8]
    assert sampling_probabilities(sizes, "uniform") == [0.5, 0.5]
    t2 = sampling_probabilities(sizes, "temperature", 2.0)  # p ~ sqrt(n): 10 : 20
    assert t2 == pytest.approx([1 / 3, 2 / 3])
    assert sampling_probabilities(sizes, "temperature", 1.0) == pytest.approx([0.2, 0.8])
    assert sampling_probabilities(sizes, "temperature", 1e6) == pytest.approx([0.5, 0.5], abs=1e-5)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(InputError, match="> 0"):
            sampling_probabilities(sizes, "temperature", bad)


def test_drawn_tasks_match_the_probabilities_and_the_seed():
    probabilities = [0.2, 0.5, 0.3]
    draws = task_schedule(probabilities, 20_000, seed=3)
    counts = Counter(draws)
    for task, p in enumerate(probabilities):  # 3.5 standard deviations of a binomial count
        assert abs(counts[task] / 20_000 - p) < 3.5 * math.sqrt(p * (1 - p) / 20_000)
    assert draws == task_schedule(probabilities, 20_000, seed=3) and draws != task_schedule(probabilities, 20_000, 4)


def test_uncertainty_weights_are_kendalls_formula_and_learn_the_loss_scale():
    weights = UncertaintyWeights(2)
    loss = torch.tensor(3.0)
    assert weights(0, loss).item() == pytest.approx(3.0)  # s = 0: weight 1
    with torch.no_grad():
        weights.log_variance[1] = math.log(2.0)
    assert weights(1, loss).item() == pytest.approx(3.0 / 2 + math.log(2.0) / 2)
    optimizer = torch.optim.SGD(weights.parameters(), lr=0.1)
    for _ in range(2000):  # minimum of exp(-s) L + s / 2 at s = log(2 L)
        optimizer.zero_grad()
        weights(0, loss).backward()
        optimizer.step()
    assert weights.log_variance[0].item() == pytest.approx(math.log(6.0), abs=1e-3)


def _argv(gpt_dir, out, sentiment_file, topic_file, *extra):
    return [
        "--model_name_or_path",
        str(gpt_dir),
        "--output_dir",
        str(out),
        "--tasks",
        f"sentiment={sentiment_file},topic={topic_file}",
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        *extra,
    ]


@pytest.mark.parametrize("extra", [[], ["--task_sampling", "uniform", "--loss_weighting", "uncertainty"]])
def test_a_shared_encoder_saves_one_folder_per_task(tmp_path, gpt_dir, sentiment_file, topic_file, extra):
    out = tmp_path / "mt"
    assert finetune.main(_argv(gpt_dir, out, sentiment_file, topic_file, *extra)) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["kind"] == "multitask" and list(record["tasks"]) == ["sentiment", "topic"]
    assert sum(t["steps"] for t in record["tasks"].values()) == len(record["log_history"])
    weights = {name: load_file(out / name / "model.safetensors") for name in record["tasks"]}
    encoder = [k for k in weights["sentiment"] if not k.startswith("score.")]
    assert all(torch.equal(weights["sentiment"][k], weights["topic"][k]) for k in encoder)  # one encoder
    assert weights["sentiment"]["score.weight"].shape[0] == 2 and weights["topic"]["score.weight"].shape[0] == 3
    models = load_multitask(out)
    assert list(models) == ["sentiment", "topic"]
    # each folder is a standard classifier: the pipeline picks a head by folder, and the reloaded model gives the
    # accuracy the run recorded on the same held-out examples
    classify = pipeline("text-classification", model=str(out / "topic"))
    assert classify("the king rules")[0]["label"] in {"0", "1", "2"}
    args = FinetuneArguments(model_name_or_path=str(gpt_dir), dataset=str(topic_file), output_dir=str(tmp_path / "x"))
    task = load_task(args, load_config(args.source))
    model = AutoModelForSequenceClassification.from_pretrained(out / "topic").eval()
    predicted = predict(
        model, Batcher(replace(args, model_name_or_path=str(out / "topic")), task, model), task.eval_x, 8
    )
    accuracy = (predicted == task.eval_y).float().mean().item()
    assert accuracy == pytest.approx(record["tasks"]["topic"]["accuracy"])


def test_lora_trains_one_adapter_for_the_shared_encoder(tmp_path, gpt_dir, sentiment_file, topic_file):
    out = tmp_path / "mt-lora"
    assert finetune.main(_argv(gpt_dir, out, sentiment_file, topic_file, "--method", "lora")) == 0
    base = load_file(gpt_dir / "model.safetensors")
    saved = {name: load_file(out / name / "model.safetensors") for name in ("sentiment", "topic")}
    assert not any("lora" in key for key in saved["sentiment"])  # merged: a plain classifier folder
    encoder = [k for k in saved["sentiment"] if not k.startswith("score.")]
    assert all(torch.equal(saved["sentiment"][k], saved["topic"][k]) for k in encoder)
    assert any(not torch.equal(saved["sentiment"][k], base[k]) for k in encoder if k in base)  # the adapters trained


@pytest.mark.parametrize(
    ("tasks", "extra", "message"),
    [
        ("a={s},a={t}", [], "used twice"),
        ("a={s},b={one}", [], "single class"),
        ("a={s},b={t}", ["--task_sampling", "temperature", "--sampling_temperature", "0"], "> 0"),
        ("a={s},b={t}", ["--dataset", "{s}"], "not both"),
        ("a={s},b={t}", ["--task_weights", "c=1"], "not one of"),
        ("a={s},b={t}", ["--eval_dataset", "{s}"], "one task's data"),
    ],
)
def test_bad_multitask_input_is_one_line(tmp_path, gpt_dir, sentiment_file, topic_file, capsys, tasks, extra, message):
    one = tmp_path / "one.txt"
    one.write_text("".join(f"1 only one class here {i}\n" for i in range(20)))
    fill = {"s": sentiment_file, "t": topic_file, "one": one}
    argv = [
        "--model_name_or_path",
        str(gpt_dir),
        "--output_dir",
        str(tmp_path / "out"),
        "--tasks",
        tasks.format(**fill),
        *[e.format(**fill) for e in extra],
    ]
    assert finetune.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
