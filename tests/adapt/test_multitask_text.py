"""Text-to-text multi-task fine-tuning (`finetune.py --tasks ... --multitask_format text_to_text`): the answer-only
loss against a hand computation, one causal LM saved with every task's template that reloads to the recorded
accuracy, LoRA merged, and bad input as one error line."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hfssl import GPTForCausalLM
from hfssl.adapt.finetune import FinetuneArguments
from hfssl.adapt.loglikelihood import encode_pair
from hfssl.adapt.multitask_text import (
    TextToTextTask,
    answer_batch,
    load_text_to_text,
    parse_task_presets,
    task_template,
)
from hfssl.adapt.prompt_classifier import PromptClassifier
from hfssl.adapt.task import load_task
from hfssl.models.loading import load_causal_lm, load_config
from hfssl.run.errors import InputError
from tests.adapt.test_multitask import topic_file  # noqa: F401  (a fixture)
from tests.conftest import import_script, tiny_gpt_config, with_flags

finetune = import_script("finetune")


@pytest.fixture
def lm_dir(tmp_path, tiny_tokenizer):
    """A tiny GPT with room for a task's prompt (the tiny tokenizer spends many tokens on English)."""
    path = tmp_path / "lm"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=256)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_templates_name_the_task_and_its_words():
    plain = task_template("topic", ["sea", "king", "pet"])
    assert plain.instruction == "Task: topic. Answer with one of: sea, king, pet."
    assert plain.context([], "a ship") == "Task: topic. Answer with one of: sea, king, pet.\n\nInput: a ship\nAnswer:"
    sentiment = task_template("sst2", ["0", "1"], "sentiment")
    assert sentiment.verbalize("1") == "positive" and "negative, positive" in sentiment.instruction
    with pytest.raises(InputError, match="missing from the verbalizer"):
        task_template("sst2", ["0", "maybe"], "sentiment")
    assert parse_task_presets("a=sentiment", ["a", "b"]) == {"a": "sentiment"}
    for bad, message in [("c=sentiment", "task=preset"), ("a=nope", "unknown preset"), ("a", "task=preset")]:
        with pytest.raises(InputError, match=message):
            parse_task_presets(bad, ["a", "b"])


def test_the_loss_is_the_answer_tokens_mean_loss(lm_dir, sentiment_file, tmp_path):
    """L_t = -(1 / sum |a_n|) sum_n sum_j log p(a_nj | prompt, a_n<j): the prompt carries no loss."""
    model, tokenizer = load_causal_lm(str(lm_dir))
    args = FinetuneArguments(model_name_or_path=str(lm_dir), dataset=str(sentiment_file), output_dir=str(tmp_path))
    data = load_task(args, load_config(args.source))
    task = TextToTextTask("sentiment", data, model.eval(), tokenizer, "sentiment")
    index = torch.tensor([0, 3, 5])
    batch = answer_batch(
        tokenizer, task.template, [data.train_x[i] for i in index], ["positive", "negative", "x"], "cpu"
    )
    answers = batch["labels"] != -100
    assert (batch["labels"][answers] == batch["input_ids"][answers]).all()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in index.tolist():
            word = task.words[int(data.train_y[i])]
            context, answer = encode_pair(tokenizer, task.template.context([], data.train_x[i]), f" {word}")
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([context + answer])).logits[0], dim=-1)
            total -= sum(logprobs[len(context) - 1 + j, token].item() for j, token in enumerate(answer))
            count += len(answer)
        assert task.loss(index).item() == pytest.approx(total / count, rel=1e-5)


def _argv(lm_dir, out, sentiment_file, topic_file, *extra):  # noqa: F811
    tasks = f"sentiment={sentiment_file},topic={topic_file}"
    return [
        *("--model_name_or_path", str(lm_dir), "--output_dir", str(out), "--tasks", tasks),
        *("--multitask_format", "text_to_text", "--task_presets", "sentiment=sentiment"),
        *("--num_train_epochs", "8", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--seed", "0"),
        *extra,
    ]


def test_one_causal_lm_learns_every_task_and_reloads(tmp_path, lm_dir, sentiment_file, topic_file):  # noqa: F811
    out = tmp_path / "t2t"
    assert finetune.main(_argv(lm_dir, out, sentiment_file, topic_file)) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["kind"] == "multitask" and record["task"] == "text-generation"
    losses = [entry["loss"] for entry in record["log_history"]]
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5])  # the answer words are learnt (a 2 x 32 GPT: not the task itself)
    assert (out / "model.safetensors").is_file() and not (out / "sentiment").exists()  # one model, no heads
    model, tokenizer, templates = load_text_to_text(out)
    assert templates["topic"].instruction == "Task: topic. Answer with one of: 0, 1, 2."
    assert templates["sentiment"].verbalize("1") == "positive"
    # the reloaded model scores each task's held-out examples by its template to the accuracy the run recorded
    args = FinetuneArguments(
        model_name_or_path=str(lm_dir), dataset=str(topic_file), output_dir=str(tmp_path / "x"), seed=0
    )  # the run's seed: the same held-out examples
    data = load_task(args, load_config(args.source))
    classifier = PromptClassifier(model.eval(), tokenizer, templates["topic"], data.names)
    predicted = classifier.score(list(data.eval_x), [[] for _ in data.eval_x]).loglik.argmax(-1)
    assert (predicted == data.eval_y).float().mean().item() == pytest.approx(record["tasks"]["topic"]["accuracy"])


def test_one_task_text_to_text_is_the_single_task_baseline(tmp_path, lm_dir, sentiment_file, topic_file, capsys):  # noqa: F811
    """The same prompt, loss and scoring on one task: what a multi-task run is compared with. Heads need two tasks
    (one is finetune.py --dataset)."""
    out = tmp_path / "t2t-one"
    argv = _argv(lm_dir, out, sentiment_file, topic_file)
    argv[argv.index("--tasks") + 1] = f"sentiment={sentiment_file}"
    assert finetune.main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert list(record["tasks"]) == ["sentiment"] and record["tasks"]["sentiment"]["sampling_probability"] == 1.0
    assert {entry["task"] for entry in record["log_history"]} == {"sentiment"}
    heads = [
        a for a in argv if a not in ("--multitask_format", "text_to_text", "--task_presets", "sentiment=sentiment")
    ]
    assert finetune.main(heads) == 2
    assert "error: --tasks needs at least two tasks" in capsys.readouterr().err


def test_lora_is_saved_merged(tmp_path, lm_dir, sentiment_file, topic_file):  # noqa: F811
    out = tmp_path / "t2t-lora"
    assert finetune.main(_argv(lm_dir, out, sentiment_file, topic_file, "--method", "lora")) == 0
    saved, base = load_file(out / "model.safetensors"), load_file(lm_dir / "model.safetensors")
    assert not any("lora" in key for key in saved)
    assert any(not torch.equal(saved[k], base[k]) for k in saved if k in base)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "surgical"], "trains --method full or lora"),
        (["--task_presets", "sentiment=nope"], "unknown preset"),
        (["--task_presets", "other=sentiment"], "task=preset"),
    ],
)
def test_bad_text_to_text_input_is_one_line(tmp_path, lm_dir, sentiment_file, topic_file, capsys, extra, message):  # noqa: F811
    out = tmp_path / "out"
    argv = with_flags(_argv(lm_dir, out, sentiment_file, topic_file), *extra)
    assert finetune.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_an_encoder_or_a_missing_task_list_is_refused(tmp_path, bert_dir, sentiment_file, topic_file, capsys):  # noqa: F811
    out = tmp_path / "out"
    assert finetune.main(_argv(bert_dir, out, sentiment_file, topic_file)) == 2
    assert "is an encoder" in capsys.readouterr().err
    argv = ["--model_name_or_path", str(bert_dir), "--dataset", str(sentiment_file), "--output_dir", str(out)]
    assert finetune.main([*argv, "--multitask_format", "text_to_text"]) == 2
    assert "need --tasks" in capsys.readouterr().err
