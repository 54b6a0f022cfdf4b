"""Bad input to scripts/post_train.py: one `error:` line, exit code 2, no file changed, nothing left in the refused
run's output folder."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from hfssl import GPTForSequenceClassification
from hfssl.data.text import train_bpe_tokenizer
from tests.conftest import import_script, make_corpus, tiny_gpt_config
from tests.posttrain.conftest import PAIRS, save_lm, write_jsonl

pytest.importorskip("trl")

post_train = import_script("post_train")

CASES = {  # id: (argv, what the error line says); {name} is a workspace entry, {out} the run's output folder
    "preference file without rejected": (
        "--method dpo --dataset {no_rejected.jsonl}",
        "has no ['rejected'] column(s), which --method dpo needs",
    ),
    "chosen equals rejected everywhere": ("--method reward --dataset {same.jsonl}", "equals 'rejected' in every row"),
    "an empty response": ("--dataset {empty_response.jsonl}", "'response' is empty in row 2"),
    "a prompt longer than the context": (
        "--dataset {long_prompt.jsonl} --max_length 48",
        "1 of 3 prompts leave no room for a response within --max_length 48 tokens (rows 2;",
    ),
    "max_length above the context window": ("--max_length 4096", "exceeds the model's context window (256 tokens)"),
    "dpo on an encoder": ("--method dpo --model_name_or_path {bert}", "is not a causal LM (model_type 'bert')"),
    "grpo on an encoder": ("--method grpo --model_name_or_path {bert}", "is not a causal LM"),
    "a reference with another tokenizer": (
        "--method dpo --ref_model_name_or_path {other_tokenizer}",
        "has another tokenizer than",
    ),
    "a reward model of three outputs": (
        "--method grpo --reward_model_name_or_path {three_outputs}",
        "has a head of 3 outputs; a reward model has one",
    ),
    "a LoRA target the model lacks": (
        "--use_lora --lora_target_modules q_proj",
        "--lora_target_modules ['q_proj']: the model has no such module; its linear layers are",
    ),
    "packing outside sft": ("--method dpo --packing", "--packing packs SFT's examples: it needs --method sft"),
    "merge without LoRA": ("--merge_adapter", "--merge_adapter merges a LoRA adapter: it needs --use_lora"),
    "groups that do not fill a batch": (
        "--method grpo --per_device_train_batch_size 6 --num_generations 4",
        "must be a multiple of --num_generations",
    ),
    "chats without a chat template": ("--dataset {chats.jsonl}", "the tokenizer has no chat template"),
    "grpo rows without answers": ("--method grpo --dataset {prompts.jsonl}", "no ['task', 'answer'] column(s)"),
    "an unknown built-in task": ("--instruction_tasks addition division", "Unknown instruction task 'division'"),
    "a group of one": ("--method grpo --num_generations 1", "--num_generations must be at least 2"),
    "dpo at beta 0": ("--method dpo --beta 0", "--beta must be > 0 for DPO"),
    "grpo answers that are not text": (
        "--method grpo --dataset {int_answers.jsonl}",
        "'answer' must be non-empty text",
    ),
    "a single row": ("--dataset {one_row.jsonl}", "0 training and 1 held-out rows"),
    "a prompt too long to answer within the window": (
        "--method grpo --dataset {long_prompt.jsonl} --max_completion_length 200",
        "within the model's window of 256 tokens with --max_completion_length 200",
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer, tiny_encoder_tokenizer):
    root = tmp_path_factory.mktemp("bad_post_train")
    save_lm(root / "gpt", tiny_tokenizer)
    save_lm(root / "other_tokenizer", train_bpe_tokenizer(make_corpus(30, seed=5), vocab_size=280))
    torch.manual_seed(0)
    GPTForSequenceClassification(tiny_gpt_config(vocab_size=len(tiny_tokenizer), num_labels=3)).save_pretrained(
        root / "three_outputs"
    )
    tiny_tokenizer.save_pretrained(root / "three_outputs")
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=len(tiny_encoder_tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=4, intermediate_size=37)).save_pretrained(root / "bert")  # fmt: skip
    tiny_encoder_tokenizer.save_pretrained(root / "bert")
    write_jsonl(root / "no_rejected.jsonl", [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in PAIRS])
    write_jsonl(root / "same.jsonl", [{**r, "rejected": r["chosen"]} for r in PAIRS])
    write_jsonl(root / "empty_response.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": " "}])
    long = " ".join(["the cat sat on the mat"] * 20)
    write_jsonl(root / "long_prompt.jsonl", [{"prompt": p, "response": "yes"} for p in ["short", long, "short too"]])
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    write_jsonl(root / "chats.jsonl", [{"messages": chat}] * 3)
    write_jsonl(root / "prompts.jsonl", [{"prompt": r["prompt"]} for r in PAIRS])
    write_jsonl(root / "int_answers.jsonl", [{"prompt": "1 + 1?", "task": "addition", "answer": 2}] * 4)
    write_jsonl(root / "one_row.jsonl", [{"prompt": "a", "response": "b"}])
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(case, workspace, tmp_path, capsys):
    flags, message = CASES[case]
    names = {p.name: str(p) for p in workspace.iterdir()}
    argv = [names.get(a[1:-1], a) if a.startswith("{") else a for a in flags.split()]
    argv += [] if "--model_name_or_path" in argv else ["--model_name_or_path", names["gpt"]]
    argv += ["--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    before = _snapshot(workspace)
    try:
        code = post_train.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert _snapshot(workspace) == before
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_a_failed_run_leaves_a_finished_run_as_it_was(workspace, tmp_path, capsys):
    """A refused run into the folder of a finished one: its model and metrics stay byte for byte."""
    out = tmp_path / "done"
    gpt = str(workspace / "gpt")
    assert post_train.main(["--model_name_or_path", gpt, "--output_dir", str(out), "--max_steps", "1",
                            "--examples_per_task", "8"]) == 0  # fmt: skip
    before = _snapshot(out)
    assert post_train.main(["--model_name_or_path", gpt, "--output_dir", str(out), "--max_steps", "1"]) == 2
    assert "already" in capsys.readouterr().err and _snapshot(out) == before
    assert json.loads((out / "metrics.json").read_text())["kind"] == "post_training"
