"""The built-in instruction and preference rows (hfssl.data.instructions) and the checks of post-training files
(hfssl.data.post_training)."""

import datasets
import pytest

from hfssl.data.instructions import (
    SYNTHETIC_TASKS,
    check_checkable,
    check_response,
    instruction_data,
    parse_task_specs,
)
from hfssl.data.post_training import check_post_training_data, load_post_training_data
from hfssl.run.errors import InputError
from tests.posttrain.conftest import write_jsonl


def test_rows_are_seeded_and_held_out_prompts_never_train():
    train, held_out = instruction_data(list(SYNTHETIC_TASKS), 30, seed=3, eval_fraction=0.2)
    again, _ = instruction_data(list(SYNTHETIC_TASKS), 30, seed=3, eval_fraction=0.2)
    other, _ = instruction_data(list(SYNTHETIC_TASKS), 30, seed=4, eval_fraction=0.2)
    assert train.to_list() == again.to_list() and train["prompt"] != other["prompt"]
    assert (len(train), len(held_out)) == (4 * 24, 4 * 6)
    assert not set(train["prompt"]) & set(held_out["prompt"])
    assert sorted(set(held_out["task"])) == sorted(SYNTHETIC_TASKS)


def test_chosen_is_right_and_formatted_and_rejected_is_wrong_one_way_or_the_other():
    train, _ = instruction_data(list(SYNTHETIC_TASKS), 40, seed=0, eval_fraction=0.2)
    kinds = set()
    for row in train:
        chosen = check_response(row["task"], row["chosen"], row["answer"])
        rejected = check_response(row["task"], row["rejected"], row["answer"])
        assert chosen.formatted and chosen.correct, row
        assert rejected.formatted != rejected.correct, row  # a wrong answer in format, or the right one out of it
        kinds.add(rejected.formatted)
    assert kinds == {True, False}  # both kinds of rejection occur


@pytest.mark.parametrize(
    ("task", "response", "answer", "formatted", "correct"),
    [
        ("addition", "933", "933", True, True),
        ("addition", " 933\n", "933", True, True),
        ("addition", "934", "933", True, False),
        ("addition", "The answer is 933.", "933", False, True),
        ("addition", "9330", "933", True, False),
        ("addition", "The answer is 9330.", "933", False, False),
        ("sorting", "3, 5, 9, 12", "3, 5, 9, 12", True, True),
        ("sorting", "3, 5, 9, 12, 14", "3, 5, 9, 12", True, False),
        ("sorting", "Sorted: 3, 5, 9, 12, 14", "3, 5, 9, 12", False, False),
        ("reversal", "edcba", "edcba", True, True),
        ("sst2", "positive", "positive", True, True),
        ("sst2", "It is positive.", "positive", False, True),
        ("trec", "location", "location", True, True),
        ("trec", "", "location", False, False),
        # an echo of the prompt's candidates is not an answer; nor is a number inside another
        ("sst2", "Classify the sentiment of this review as positive or negative.", "positive", False, False),
        ("trec", "abbreviation, description, entity, location, number, person", "location", False, False),
        ("lookup", "Here is a table: lamp=7, river=41. What is the value of lamp?", "7", False, False),
        ("addition", "It is 4.5", "4", False, False),
        ("addition", "It is -4", "4", False, False),
        ("addition", "347 + 586 = 933.", "933", False, True),
        ("reversal", "Reverse this string: abcde. Reply with the reversed string only.", "edcba", False, False),
        ("reversal", "edcba is the answer", "edcba", False, True),
        ("addition", "The sum is 1,245.", "1245", False, False),
        ("addition", "The sum is 1,245.", "245", False, False),
    ],
)
def test_check_response(task, response, answer, formatted, correct):
    check = check_response(task, response, answer)
    assert (check.formatted, check.correct) == (formatted, correct)


def test_sst2_and_trec_rows_come_from_label_text_files(tmp_path):
    sst2 = tmp_path / "sst2.txt"
    sst2.write_text("".join(f"{i % 2} review number {i} is here\n" for i in range(20)))
    trec = tmp_path / "trec.txt"
    trec.write_text("".join(f"{k}:x query {i} ?\n" for i, k in enumerate(["LOC", "NUM", "HUM", "DESC"] * 5)))
    train, held_out = instruction_data([f"sst2={sst2}", f"trec={trec}"], 10, seed=0, eval_fraction=0.2)
    rows = train.to_list() + held_out.to_list()
    assert len(rows) == 20 and {r["task"] for r in rows} == {"sst2", "trec"}
    for row in rows:
        number = int(row["prompt"].split("number " if row["task"] == "sst2" else "query ")[1].split()[0])
        if row["task"] == "sst2":
            assert row["answer"] == ("positive" if number % 2 else "negative")
        else:
            assert (
                row["answer"]
                == {"LOC": "location", "NUM": "number", "HUM": "person", "DESC": "description"}[
                    ["LOC", "NUM", "HUM", "DESC"][number % 4]
                ]
            )
        assert check_response(row["task"], row["chosen"], row["answer"]).correct


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["division"], "Unknown instruction task 'division'"),
        (["sst2"], "give sst2=PATH"),
        (["addition=x.txt"], "is generated, not read"),
        (["addition", "addition"], "named twice"),
        (["trec=/no/such/file.txt"], "file not found"),
    ],
)
def test_bad_task_specs(specs, message):
    with pytest.raises(InputError, match=message):
        parse_task_specs(specs)


def test_sft_rows_take_response_or_completion_or_messages(tmp_path):
    rows = load_post_training_data(write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "response": "r"}]), "sft")
    assert rows.column_names == ["prompt", "completion"]
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = load_post_training_data(write_jsonl(tmp_path / "b.jsonl", [{"messages": chat}]), "sft")
    assert rows["messages"] == [chat]


@pytest.mark.parametrize(
    ("method", "rows", "message"),
    [
        ("dpo", [{"prompt": "p", "chosen": "a"}], r"no \['rejected'\] column"),
        ("reward", [{"prompt": "p", "rejected": "a"}], r"no \['chosen'\] column"),
        ("dpo", [{"prompt": "p", "chosen": "a", "rejected": "a "}] * 3, "equals 'rejected' in every row"),
        ("sft", [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": "  "}], "'response' is empty in row 2"),
        ("sft", [{"text": "t"}], "no 'prompt' and 'response'"),
        ("grpo", [{"question": "q"}], r"no \['prompt'\] column"),
        ("dpo", [{"prompt": "p", "chosen": "", "rejected": "b"}], "'chosen' is empty in row 1"),
        ("sft", [{"messages": [{"role": "user", "content": "hi"}]}], "must end with a non-empty 'assistant' turn"),
        ("sft", [{"messages": [{"role": "assistant", "content": "hi"}]}], "needs a turn before the answer"),
    ],
)
def test_bad_rows_are_refused_naming_the_column_and_rows(method, rows, message):
    ds = datasets.Dataset.from_list(rows)
    with pytest.raises(InputError, match=message):
        check_post_training_data(ds, method, "my.jsonl")


def test_pairs_without_preference_are_dropped_when_some_rows_have_one(caplog):
    ds = datasets.Dataset.from_list(
        [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "c", "rejected": "c"}]
    )
    kept = check_post_training_data(ds, "dpo", "my.jsonl")
    assert kept["prompt"] == ["p"] and "dropped" in caplog.text


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "p", "task": "addition", "answer": 12}], "row 1: 'answer' must be non-empty text, got 12"),
        ([{"prompt": "p", "task": "addition", "answer": " "}], "'answer' must be non-empty text"),
        ([{"prompt": "p", "task": "division", "answer": "3"}], "task 'division' has no checker"),
        ([{"prompt": "p", "answer": "3"}], r"no \['task'\] column"),
    ],
)
def test_rows_for_the_checkable_reward_are_checked(rows, message):
    with pytest.raises(InputError, match=message):
        check_checkable(datasets.Dataset.from_list(rows), "my.jsonl")


def test_a_text_the_file_repeats_is_one_example(tmp_path):
    """SST-2's train file holds some sentences twice: a repeat must not sit on both sides of the split."""
    sst2 = tmp_path / "sst2.txt"
    sst2.write_text("".join(f"{i % 2} review {i % 6} again\n" for i in range(30)))  # 6 distinct texts, 5 times each
    train, held_out = instruction_data([f"sst2={sst2}"], 30, seed=0, eval_fraction=0.2)
    prompts = [*train["prompt"], *held_out["prompt"]]
    assert len(prompts) == len(set(prompts)) == 6
