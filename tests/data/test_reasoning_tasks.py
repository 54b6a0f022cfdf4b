"""The reasoning-task generators: correct answers, reproducible rows, rationales that parse, the JSONL writer."""

import json
import re

import pytest

from hfssl.adapt.chain_of_thought import parse_cot_answer
from hfssl.data.labelled import load_labelled
from hfssl.data.reasoning_tasks import (
    ITEMS,
    REASONING_TASKS,
    TEMPLATES,
    make_reasoning_dataset,
    reasoning_examples,
    write_reasoning_file,
)
from hfssl.run.errors import InputError

_STEP = re.compile(r"(\d+) ([x/+-]) (\d+) = (\d+)")
_OPS = {"x": lambda p, q: p * q, "/": lambda p, q: p / q, "+": lambda p, q: p + q, "-": lambda p, q: p - q}


@pytest.mark.parametrize("digits", [1, 3, 5])
def test_addition_answers_are_the_sums(digits):
    for row in reasoning_examples("multi_digit_addition", 50, seed=0, digits=digits):
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", row["text"]).groups())
        assert len(str(a)) == len(str(b)) == digits
        assert row["label"] == str(a + b)
        assert row["rationale"].endswith(f"So {a} + {b} = {a + b}.")


def test_addition_rationale_writes_each_column_and_carry():
    row = reasoning_examples("multi_digit_addition", 1, seed=0)[0]
    a, b = map(int, re.findall(r"\d+", row["text"]))
    columns = re.findall(r"= (\d+), write (\d)", row["rationale"])
    assert len(columns) == 3
    assert all(int(total) % 10 == int(digit) for total, digit in columns)
    written = "".join(d for _, d in columns)[::-1]
    carry = re.search(r"write the carry (\d)", row["rationale"])
    assert int((carry.group(1) if carry else "") + written) == a + b


def test_two_step_rationales_compute_the_label_from_the_question():
    rows = reasoning_examples("two_step_arithmetic", 200, seed=1)
    for row in rows:
        steps = _STEP.findall(row["rationale"])
        assert len(steps) == 2
        known = {int(v) for v in re.findall(r"\d+", row["text"])}
        for p, op, q, r in steps:
            assert {int(p), int(q)} <= known  # operands are the question's numbers or an earlier result
            assert _OPS[op](int(p), int(q)) == int(r)
            known.add(int(r))
        assert {int(v) for v in re.findall(r"\d+", row["text"])} <= {int(x) for s in steps for x in (s[0], s[2])}
        assert steps[-1][3] == row["label"] and int(row["label"]) >= 0
        assert row["rationale"].endswith(f"= {row['label']}.")
    assert len({t.__name__ for t in TEMPLATES}) >= 4
    questions = {re.sub(rf"\b(he|she|{'|'.join(ITEMS)})\b", "_", r["text"].rsplit(". ", 1)[-1]) for r in rows}
    assert len(questions) == len(TEMPLATES)  # every template is drawn


@pytest.mark.parametrize("words", [1, 2, 4])
def test_last_letters_are_the_words_last_letters(words):
    for row in reasoning_examples("last_letter_concatenation", 50, seed=2, words=words):
        phrase = re.search(r'"([^"]+)"', row["text"]).group(1)
        assert len(phrase.split()) == words
        assert row["label"] == "".join(w[-1] for w in phrase.split())
        assert row["rationale"].endswith(f"Concatenating them gives {row['label']}.")


def test_same_seed_same_rows_other_seed_other_rows():
    for task in REASONING_TASKS:
        first = make_reasoning_dataset(task, 20, seed=3)
        assert first.column_names == ["text", "label", "rationale"]
        assert first.to_list() == make_reasoning_dataset(task, 20, seed=3).to_list()
        assert first.to_list() != make_reasoning_dataset(task, 20, seed=4).to_list()


@pytest.mark.parametrize("task", sorted(REASONING_TASKS))
def test_every_rationale_parses_to_its_label(task):
    ds = make_reasoning_dataset(task, 100, seed=5)
    words = sorted(set(ds["label"]))
    for row in ds:
        demo = row["rationale"] + " The answer is " + row["label"] + "."
        label, rule, _ = parse_cot_answer(demo, words)
        assert (words[label], rule) == (row["label"], "answer_statement"), demo


def test_written_file_loads_with_rationales(tmp_path):
    path = write_reasoning_file("multi_digit_addition", tmp_path / "add.jsonl", n=30, seed=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == make_reasoning_dataset("multi_digit_addition", 30, seed=0).to_list()
    data = load_labelled(str(path), text_column="text", label_column="label", rationale_column="rationale")
    assert data.inputs == [r["text"] for r in rows]
    assert [data.names[i] for i in data.labels.tolist()] == [r["label"] for r in rows]
    assert data.rationales == [r["rationale"] for r in rows]
    for row, label in zip(rows, data.labels.tolist(), strict=True):
        assert parse_cot_answer(row["rationale"] + f" The answer is {row['label']}.", data.names)[0] == label


def test_existing_file_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "ll.jsonl"
    path.write_text("keep\n")
    with pytest.raises(InputError, match=re.escape(str(path))):
        write_reasoning_file("last_letter_concatenation", path, n=5, seed=0)
    assert path.read_text() == "keep\n"
    write_reasoning_file("last_letter_concatenation", path, n=5, seed=0, overwrite=True)
    assert len(path.read_text().splitlines()) == 5


def test_bad_inputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="multi_digit_addition"):
        make_reasoning_dataset("sorting", 5, seed=0)
    with pytest.raises(InputError, match="n must be"):
        make_reasoning_dataset("two_step_arithmetic", 0, seed=0)
    with pytest.raises(InputError, match="digits"):
        make_reasoning_dataset("multi_digit_addition", 5, seed=0, digits=0)
    with pytest.raises(InputError, match="words"):
        make_reasoning_dataset("last_letter_concatenation", 5, seed=0, digits=3)
    with pytest.raises(InputError):
        write_reasoning_file("sorting", tmp_path / "x.jsonl", n=5, seed=0)
    assert not (tmp_path / "x.jsonl").exists()
