"""Post-training (hfssl.posttrain) on tiny GPTs: the SFT mask, the DPO and Bradley-Terry losses against their formulas,
the frozen reference, exact resume, LoRA, and the script's outputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import REPO, import_script, why_failed
from tests.posttrain.conftest import PAIRS, save_lm, write_jsonl

pytest.importorskip("trl")

from hfssl.posttrain.arguments import PostTrainArguments
from hfssl.posttrain.formatting import to_model_format
from hfssl.posttrain.run import run_post_training
from hfssl.posttrain.trainers import trainer_class, trl_config

post_train = import_script("post_train")
CRASH_AT_STEP = REPO / "tests" / "helpers" / "crash_at_step.py"
QUICK = ["--examples_per_task", "12", "--max_eval_examples", "4", "--logging_steps", "1"]


def test_sft_loss_sees_response_tokens_and_the_end_of_text_only(lm_dir, tmp_path):
    """The labels of a padded SFT batch, worked out by hand: -100 on the prompt ('prompt\\n') and on padding; the
    response's tokens and one end-of-text token after it are learned."""
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    rows = {"prompt": ["the cat sat", "a dog"], "completion": ["on mats.", "ran far away from the cat."]}
    args = PostTrainArguments(model_name_or_path=str(lm_dir), output_dir=str(tmp_path / "o"), max_steps=1)
    args.per_device_train_batch_size = 2
    trainer = trainer_class("sft")(
        model=AutoModelForCausalLM.from_pretrained(lm_dir),
        args=trl_config(args, 64),
        train_dataset=to_model_format(datasets.Dataset.from_dict(rows), tokenizer, "rows"),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    expected = {}
    for prompt, response in zip(rows["prompt"], rows["completion"], strict=True):
        prompt_ids = tokenizer(prompt + "\n")["input_ids"]
        ids = tokenizer(prompt + "\n" + response)["input_ids"] + [tokenizer.eos_token_id]
        assert ids[: len(prompt_ids)] == prompt_ids
        expected[tuple(ids)] = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
    assert len(batch["input_ids"]) == 2
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        assert labels[:n].tolist() == expected[tuple(ids[:n].tolist())]
        assert (labels[n:] == -100).all()


CHAT_TEMPLATE = (  # each turn "role:\ncontent\n": the prompt ends on a token boundary
    "{% for m in messages %}{{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
)


def test_sft_on_chats_learns_the_last_assistant_turn_only(tmp_path, tiny_tokenizer):
    """A `messages` row is written with the chat template; everything before the last assistant turn is masked."""
    folder = save_lm(tmp_path / "chat", tiny_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    chat = [
        {"role": "user", "content": "the cat sat"},
        {"role": "assistant", "content": "on mats."},
        {"role": "user", "content": "and the dog"},
        {"role": "assistant", "content": "ran far."},
    ]
    rows = to_model_format(datasets.Dataset.from_dict({"messages": [chat]}), tokenizer, "chats")
    assert rows.column_names == ["prompt", "completion"] and rows[0]["completion"] == chat[-1:]
    args = PostTrainArguments(model_name_or_path=str(folder), output_dir=str(tmp_path / "o"), max_steps=1)
    trainer = trainer_class("sft")(
        model=AutoModelForCausalLM.from_pretrained(folder),
        args=trl_config(args, 64),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    prompt = tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
    learned = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(ids[: len(ids) - len(learned)]) == prompt  # the earlier turns and the header: masked
    assert tokenizer.decode(learned).startswith("ran far.")  # the last answer (and what the template closes it with)


def _response_logp(model, tokenizer, prompt: str, response: str) -> torch.Tensor:
    """log p(response + end-of-text | prompt), summed over the response's tokens."""
    prompt_ids = tokenizer(prompt + "\n")["input_ids"]
    ids = prompt_ids + tokenizer(response)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer(prompt + "\n" + response)["input_ids"] == ids[:-1]  # the same tokens, however they are split
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    token_logp = logp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return token_logp[len(prompt_ids) - 1 :].sum()


def test_dpo_first_loss_is_the_formula_on_hand_computed_log_probabilities(lm_dir, tmp_path, tiny_tokenizer):
    """L = -mean log sigmoid(beta [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]), with the
    reference another model (so the loss is not log 2), and the reference's weights untouched."""
    reference = save_lm(tmp_path / "ref", tiny_tokenizer, seed=7)
    reference_weights = (reference / "model.safetensors").read_bytes()
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    beta = 0.3
    args = PostTrainArguments(
        method="dpo",
        model_name_or_path=str(lm_dir),
        ref_model_name_or_path=str(reference),
        dataset=data,
        eval_dataset=data,
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        logging_steps=1,
        per_device_train_batch_size=4,
        beta=beta,
        learning_rate=1e-3,
    )
    result = run_post_training(args)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    policy, ref = AutoModelForCausalLM.from_pretrained(lm_dir), AutoModelForCausalLM.from_pretrained(reference)
    margins = torch.stack(
        [
            (
                _response_logp(policy, tokenizer, r["prompt"], r["chosen"])
                - _response_logp(ref, tokenizer, r["prompt"], r["chosen"])
            )
            - (
                _response_logp(policy, tokenizer, r["prompt"], r["rejected"])
                - _response_logp(ref, tokenizer, r["prompt"], r["rejected"])
            )
            for r in PAIRS
        ]
    )
    expected = -F.logsigmoid(beta * margins).mean()
    assert abs(expected.item() - torch.log(torch.tensor(2.0)).item()) > 1e-3  # the test can tell models apart
    assert result.first_loss == pytest.approx(expected.item(), abs=1e-5)
    assert (reference / "model.safetensors").read_bytes() == reference_weights
    trained = load_file(str(tmp_path / "dpo" / "model.safetensors"))
    start = load_file(str(lm_dir / "model.safetensors"))
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the policy moved


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_leaves_its_reference_untouched_in_memory(lm_dir, tmp_path, tiny_tokenizer, lora):
    """After DPO steps, the reference model object (full) or the base under the adapter (LoRA: the reference is the
    disabled adapter) holds exactly its starting weights, while the policy moved."""
    from peft import LoraConfig

    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    policy = AutoModelForCausalLM.from_pretrained(lm_dir)
    reference = (
        None if lora else AutoModelForCausalLM.from_pretrained(save_lm(tmp_path / "ref", tiny_tokenizer, seed=7))
    )
    watched = policy if lora else reference
    start = {n: p.detach().clone() for n, p in watched.named_parameters()}
    args = PostTrainArguments(method="dpo", model_name_or_path=str(lm_dir), output_dir=str(tmp_path / "o"),
                              max_steps=2, learning_rate=1e-2, use_lora=lora)  # fmt: skip
    args.per_device_train_batch_size = 4
    rows = to_model_format(datasets.Dataset.from_list(PAIRS), tokenizer, "pairs")
    trainer = trainer_class("dpo")(
        model=policy, ref_model=reference, args=trl_config(args, 64), train_dataset=rows, processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj"]) if lora else None,
    )  # fmt: skip
    trainer.hfssl_args, trainer.hfssl_run_args = args, args.to_dict()
    trainer.train()
    model = trainer.model
    if lora:
        base = dict(model.get_base_model().named_parameters())

        def in_base(name: str) -> str:  # peft moves an adapted layer's own weight to <layer>.base_layer.<weight>
            module, _, leaf = name.rpartition(".")
            return name if name in base else f"{module}.base_layer.{leaf}"

        untouched = {n: base[in_base(n)] for n in start}
        moved = [n for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
        assert moved and any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    else:
        untouched = dict(reference.named_parameters())
        initial = AutoModelForCausalLM.from_pretrained(lm_dir).state_dict()
        assert any(not torch.equal(p.detach(), initial[n]) for n, p in policy.named_parameters())  # the policy moved
    for name, parameter in untouched.items():
        assert torch.equal(parameter.detach(), start[name]), name


def test_a_nan_loss_stops_the_run_before_the_weights_change(tmp_path, tiny_tokenizer, capsys):
    folder = save_lm(tmp_path / "nan", tiny_tokenizer)
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if "lm_head" in k or "embed_tokens" in k)
    weights[name][0, 0] = float("nan")
    from safetensors.torch import save_file

    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(folder), "--output_dir", str(out), "--max_steps", "3", *QUICK]
    assert post_train.main(argv) == 2
    err = capsys.readouterr().err
    assert "error: Loss became nan at step 1; training stopped. No checkpoint was written yet." in err
    assert "Traceback" not in err and not (out / "model.safetensors").exists()


def test_reward_model_first_loss_is_bradley_terry(tmp_path, tiny_tokenizer):
    """L = -mean log sigmoid(r(x, y_w) - r(x, y_l)), r read from a one-output head on the last token."""
    model_dir = save_lm(tmp_path / "rm", tiny_tokenizer, seed=3, head="reward")
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    args = PostTrainArguments(
        method="reward",
        model_name_or_path=str(model_dir),
        dataset=data,
        eval_dataset=data,
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        logging_steps=1,
        per_device_train_batch_size=4,
    )
    result = run_post_training(args)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)

    def reward(prompt, response):
        ids = tokenizer(prompt + "\n" + response + tokenizer.eos_token, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).logits[0, 0]

    margins = torch.stack([reward(r["prompt"], r["chosen"]) - reward(r["prompt"], r["rejected"]) for r in PAIRS])
    assert result.first_loss == pytest.approx(-F.logsigmoid(margins).mean().item(), abs=1e-5)
    assert result.before["pairwise_accuracy"] == pytest.approx((margins > 0).float().mean().item())
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert saved.config.num_labels == 1


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _script(out, *extra, crash_at=None, model=None):
    launcher = [str(CRASH_AT_STEP), str(crash_at)] if crash_at else []
    argv = ["--model_name_or_path", str(model), "--output_dir", str(out), *QUICK, *extra]
    return subprocess.run(
        [sys.executable, *launcher, str(REPO / "scripts" / "post_train.py"), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=600,
    )


@pytest.mark.slow
def test_sft_resumed_after_a_kill_equals_the_uninterrupted_run(lm_dir, tmp_path):
    common = ["--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "4"]
    straight = _script(tmp_path / "a", *common, model=lm_dir)
    assert straight.returncode == 0, why_failed(straight)
    crashed = _script(tmp_path / "b", *common, crash_at=3, model=lm_dir)
    assert crashed.returncode == 17, why_failed(crashed)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-000002"]
    changed = _script(
        tmp_path / "b", *common, "--resume_from_checkpoint", "latest", "--learning_rate", "1e-2", model=lm_dir
    )
    assert changed.returncode == 2 and "--learning_rate was None, now 0.01" in changed.stderr
    resumed = _script(tmp_path / "b", *common, "--resume_from_checkpoint", "latest", model=lm_dir)
    assert resumed.returncode == 0, why_failed(resumed)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)

    def losses(out):
        history = json.loads((out / "metrics.json").read_text())["log_history"]
        return [(e["step"], round(e["loss"], 5)) for e in history if "loss" in e]

    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 4


@pytest.mark.slow
def test_two_processes_match_one_process_for_sft(lm_dir, tmp_path):
    """2 gloo processes x 2 rows give the losses and weights of 1 process x 4 rows (TRL normalises the loss over
    the tokens of the whole global batch)."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    runs = {}
    for name, launcher, batch in [
        ("one", ["--num_processes", "1", "--cpu"], "4"),
        ("two", ["--multi_gpu", "--num_processes", "2"], "2"),
    ]:
        out = tmp_path / name
        argv = ["--model_name_or_path", str(lm_dir), "--output_dir", str(out), "--max_steps", "3", *QUICK]
        result = subprocess.run(
            [accelerate, "launch", *launcher, str(REPO / "scripts" / "post_train.py"), *argv,
             "--per_device_train_batch_size", batch],
            capture_output=True, text=True, cwd=REPO, env=_env(), timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, why_failed(result, 3000)
        assert result.stdout.count("saved to") == 1  # one process reports
        runs[name] = out
    losses = [
        [e["loss"] for e in json.loads((runs[n] / "metrics.json").read_text())["log_history"] if "loss" in e]
        for n in runs
    ]
    assert len(losses[0]) == 3
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-5, atol=1e-5)
    one, two = (load_file(str(runs[n] / "model.safetensors")) for n in runs)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6, msg=k)


def test_lora_sft_saves_an_adapter_and_leaves_the_base_alone(lm_dir, tmp_path, capsys):
    base = (lm_dir / "model.safetensors").read_bytes()
    out = tmp_path / "lora"
    assert (
        post_train.main(
            ["--model_name_or_path", str(lm_dir), "--output_dir", str(out), "--use_lora", "--max_steps", "2", *QUICK]
        )
        == 0
    )
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    result = json.loads((out / "metrics.json").read_text())
    assert result["saved"] == "adapter" and result["trainable_parameters"] < result["total_parameters"] / 4
    assert set(result["before"]) == set(result["after"]) >= {"answer_accuracy", "format_share"}
    assert (lm_dir / "model.safetensors").read_bytes() == base
    merged = tmp_path / "merged"
    argv = ["--model_name_or_path", str(lm_dir), "--output_dir", str(merged), "--use_lora", "--merge_adapter"]
    assert post_train.main([*argv, "--max_steps", "2", *QUICK]) == 0
    assert AutoModelForCausalLM.from_pretrained(merged).config.model_type == "hfssl_gpt"
    assert "held-out" in capsys.readouterr().out


@pytest.mark.slow
def test_the_chain_sft_reward_dpo_grpo_runs_end_to_end(lm_dir, tmp_path):
    """RLHF's three steps on the built-in tasks: SFT, a reward model from the SFT model, DPO from the SFT model, and a
    GRPO step scored by that reward model (and one by the checkable reward)."""
    steps = ["--max_steps", "2", "--per_device_train_batch_size", "4"]
    assert (
        post_train.main(["--model_name_or_path", str(lm_dir), "--output_dir", str(tmp_path / "sft"), *steps, *QUICK])
        == 0
    )
    sft = str(tmp_path / "sft")
    for name, method, extra in [
        ("reward", "reward", []),
        ("dpo", "dpo", []),
        ("grpo-reward-model", "grpo", ["--reward_model_name_or_path", str(tmp_path / "reward")]),
        ("grpo-checked", "grpo", ["--num_generations", "2"]),
    ]:
        out = tmp_path / name
        argv = ["--method", method, "--model_name_or_path", sft, "--output_dir", str(out), *steps, *QUICK, *extra]
        assert post_train.main(argv) == 0, method
        result = json.loads((out / "metrics.json").read_text())
        assert result["kind"] == "post_training" and result["global_step"] == 2
        assert result["after"], method
        if name == "grpo-checked":  # a random model's answers mostly score alike in a group: little or nothing moves
            assert any("rewards/checked_reward/mean" in entry for entry in result["log_history"])
            continue
        start = load_file(str(tmp_path / "sft" / "model.safetensors"))
        trained = load_file(str(out / "model.safetensors"))
        assert any(not torch.equal(trained[k], start[k]) for k in start if k in trained), f"{name} changed nothing"


def test_the_model_card_carries_the_before_and_after_scores(lm_dir, tmp_path):
    out, card_dir = tmp_path / "sft", tmp_path / "card"
    assert (
        post_train.main(["--model_name_or_path", str(lm_dir), "--output_dir", str(out), "--max_steps", "1", *QUICK])
        == 0
    )
    push = import_script("push").main
    assert push(["--model_dir", str(out), "--repo_id", "me/sft", "--dry_run", "--dry_run_dir", str(card_dir)]) == 0
    card = (card_dir / "README.md").read_text()
    result = json.loads((out / "metrics.json").read_text())
    assert "post-training with TRL, instruction tuning (SFT)" in card
    before, after = result["before"]["format_share"], result["after"]["format_share"]
    assert f"| format_share (sft; before: {before:.4f}) |" in card and f"| {after} |" in card
    assert f"Trained on {result['num_train']} rows, evaluated on {result['num_eval']}." in card
