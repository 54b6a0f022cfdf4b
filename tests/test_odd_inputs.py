"""Odd but real data and command lines that used to give silently wrong results or a deep crash (issue #34, item 7).

Each case is either handled correctly (a number in a text column is its string, a byte-order mark is dropped, a 16-bit
image keeps its shades) or refused by the script with exit code 2, exactly one `error:` line naming the problem, and no
traceback (the contract of tests/test_bad_input.py).
"""

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from hfssl.data.labelled import few_shot_indices, load_labelled
from hfssl.data.text import load_text_dataset
from hfssl.data.vision import _decode, load_images
from hfssl.run.arguments import parse_cli
from hfssl.run.errors import InputError
from tests.conftest import TINY_LM_FLAGS, import_script, make_corpus

BOM = "\ufeff"


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def _refused(script: str, argv: list[str], capsys) -> str:
    """Run scripts/<script>.py in-process; assert exit code 2, one `error:` line and no traceback; return that line."""
    try:
        code = import_script(script).main([str(a) for a in argv])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert code == 2, err[-2000:]
    assert len(error_lines) == 1, err[-2000:]
    assert "Traceback" not in err
    return error_lines[0]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _labelled_rows(n: int = 12) -> list[dict]:
    return [{"text": f"the king {'likes' if i % 2 else 'forgets'} the song {i}", "label": i % 2} for i in range(n)]


# datasets 3 (the lower bound) reads a JSON column of mixed types as an error of its own (one line naming the file,
# "could not be read as json data"), before hfssl sees the values: these cases hold from datasets 4
MIXED_JSON = pytest.mark.skipif(
    int(datasets.__version__.split(".")[0]) < 4, reason="datasets < 4 refuses mixed-type JSON columns itself"
)


@MIXED_JSON
# ---- 1. values in a text column that are not strings ---------------------------------------------------------------
def test_numbers_in_a_labelled_text_column_are_their_strings(tmp_path):
    rows = _labelled_rows()
    rows[3]["text"] = 1984
    data = load_labelled(str(_jsonl(tmp_path / "numbers.jsonl", rows)))
    assert data.inputs[3] == "1984" and all(isinstance(t, str) for t in data.inputs)


@MIXED_JSON
@pytest.mark.parametrize("value", [None, ["two", "words"], {"a": 1}, True], ids=["null", "list", "object", "bool"])
def test_a_labelled_text_that_is_not_text_is_refused_by_file_column_and_row(tmp_path, value):
    rows = _labelled_rows()
    rows[4]["text"] = value
    path = _jsonl(tmp_path / "odd.jsonl", rows)
    with pytest.raises(InputError) as info:
        load_labelled(str(path))
    message = str(info.value)
    assert str(path) in message and "column 'text'" in message and "row 5" in message and repr(value) in message


def test_an_empty_csv_text_cell_is_refused_by_the_probe(tmp_path, gpt_dir, capsys):
    lines = ["text,label", *[f"the song {i},{i % 2}" for i in range(12)]]
    lines[3] = ",0"  # the third example has no text: csv reads it as null, which used to become the text 'None'
    path = tmp_path / "holes.csv"
    path.write_text("\n".join(lines) + "\n")
    line = _refused(
        "probe", ["--model_name_or_path", gpt_dir, "--dataset", path, "--output_dir", tmp_path / "o"], capsys
    )
    assert "holes.csv" in line and "column 'text'" in line and "row 3" in line and "None" in line


@MIXED_JSON
def test_numbers_in_a_corpus_text_column_are_their_strings(tmp_path):
    docs = [{"text": doc} for doc in make_corpus(6)]
    docs[2]["text"] = 42
    texts = load_text_dataset(str(_jsonl(tmp_path / "corpus.jsonl", docs)))["text"]
    assert "42" in texts and len(texts) == 6 and all(isinstance(t, str) for t in texts)


@MIXED_JSON
def test_a_corpus_text_that_is_a_list_is_refused_by_pretrain(tmp_path, capsys):
    docs = [{"text": doc} for doc in make_corpus(30)]
    docs[7]["text"] = ["a", "list"]
    path = _jsonl(tmp_path / "corpus.jsonl", docs)
    argv = ["--dataset", path, "--output_dir", tmp_path / "o", *TINY_LM_FLAGS, "--max_steps", "1"]
    line = _refused("pretrain", argv, capsys)
    assert "corpus.jsonl" in line and "column 'text'" in line and "row 8" in line and "['a', 'list']" in line


# ---- 2. a flag given twice -------------------------------------------------------------------------------------------
@dataclass
class _Flags:
    max_steps: int = field(default=0, metadata={"help": "steps"})
    learning_rate: float = field(default=0.1, metadata={"help": "rate"})
    widths: list[int] = field(default_factory=lambda: [1], metadata={"help": "widths"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle"})


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--learning_rate", "1e-3", "--learning_rate", "1e-4"], "--learning_rate"),
        (["--max-steps", "3", "--max_steps", "4"], "--max_steps"),
        (["--max_steps=3", "--max-steps", "4"], "--max_steps"),
        (["--widths", "3", "--widths", "4"], "--widths"),
        (["--shuffle", "--no_shuffle"], "--shuffle"),
    ],
    ids=["same-flag", "both-spellings", "equals-form", "nargs-flag-twice", "flag-and-its-negation"],
)
def test_a_flag_given_twice_is_refused_by_name(argv, flag):
    with pytest.raises(InputError, match=flag):
        parse_cli(_Flags, argv)


def test_one_nargs_flag_and_a_recipe_overridden_by_a_flag_are_no_repeat(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 0.5\nmax_steps: 7\n")
    args = parse_cli(_Flags, ["--config", str(recipe), "--widths", "32", "64", "--learning_rate", "0.25"])
    assert args.widths == [32, 64] and args.learning_rate == 0.25 and args.max_steps == 7


def test_a_repeated_learning_rate_is_refused_by_finetune(tmp_path, gpt_dir, sentiment_file, capsys):
    argv = ["--model_name_or_path", gpt_dir, "--dataset", sentiment_file, "--output_dir", tmp_path / "o"]
    line = _refused("finetune", [*argv, "--learning_rate", "1e-3", "--learning_rate", "1e-4"], capsys)
    assert "--learning_rate" in line and "twice" in line


# ---- 3. 16-bit images ------------------------------------------------------------------------------------------------
def _gradient16() -> np.ndarray:
    return np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)


def test_a_16_bit_gray_png_keeps_its_shades_in_order(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        Image.fromarray(_gradient16()).save(tmp_path / "images" / label / "ramp.png")
    assert Image.open(tmp_path / "images" / "a" / "ramp.png").mode.startswith("I")  # a true 16-bit PNG
    pixels = load_images(str(tmp_path / "images"), image_size=8, cache_dir=tmp_path / "c").pixels[0, 0].flatten()
    assert pixels.min() == 0 and pixels.max() == 255 and len(set(pixels.tolist())) > 32
    assert (pixels[1:] >= pixels[:-1]).all()  # the ramp's order is kept
    assert abs(int(pixels[32]) - round(_gradient16().flatten()[32] / 257)) <= 1


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_image_modes_scale_to_8_bits(mode):
    """'I;16' as a PIL image and as PNG bytes; 'I' (how older Pillow opens a 16-bit PNG) as a PIL image."""
    image = Image.fromarray(_gradient16()) if mode == "I;16" else Image.fromarray(_gradient16().astype(np.int32))
    assert image.mode == mode
    values: list = [image]
    if mode == "I;16":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        values.append({"bytes": buffer.getvalue()})
    for value in values:
        pixels = _decode(value, 8, "test").astype(int)
        assert pixels.shape == (8, 8, 3) and (pixels[..., 0] == pixels[..., 2]).all()
        flat = pixels[..., 0].flatten()
        assert flat[0] == 0 and flat[-1] == 255 and (np.diff(flat) >= 0).all() and len(set(flat)) > 32


# ---- 4. a UTF-8 byte-order mark --------------------------------------------------------------------------------------
def test_a_bom_csv_has_its_column_name_and_first_text_without_the_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text(BOM + "text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(6)), encoding="utf-8")
    data = load_labelled(str(path))
    assert data.inputs[0] == "review 0" and data.names == ["0", "1"]


def test_a_bom_label_space_text_file_has_no_extra_class(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_text(BOM + "".join(f"{i % 2} review {i}\n" for i in range(6)), encoding="utf-8")
    data = load_labelled(str(path))
    assert data.names == ["0", "1"] and data.inputs[0] == "review 0"


@pytest.mark.parametrize("sample_by", ["paragraph", "line", "document"])
def test_a_bom_text_corpus_has_no_mark_in_its_first_document(tmp_path, sample_by):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text(BOM + "First line.\n\nSecond paragraph.\n", encoding="utf-8")
    texts = load_text_dataset(str(folder), sample_by=sample_by)["text"]
    assert not any(BOM in t for t in texts) and texts[0].startswith("First line.")


# ---- 5. impossible Hub repository ids --------------------------------------------------------------------------------
@pytest.mark.parametrize("repo_id", ["a/b/c", "some one/model", "someone/my..model", "someone/model.git"])
def test_an_impossible_repo_id_is_refused_by_a_dry_run(tmp_path, gpt_dir, repo_id, capsys):
    argv = ["--model_dir", gpt_dir, "--repo_id", repo_id, "--dry_run", "--dry_run_dir", tmp_path / "up"]
    line = _refused("push", argv, capsys)
    assert "--repo_id" in line and repr(repo_id) in line and "Use `repo_type`" not in line
    assert not (tmp_path / "up").exists()


def test_an_impossible_hub_model_id_is_refused_before_training(tmp_path, gpt_dir, sentiment_file, capsys):
    argv = ["--model_name_or_path", gpt_dir, "--dataset", sentiment_file, "--output_dir", tmp_path / "o"]
    line = _refused("probe", [*argv, "--push_to_hub", "--hub_model_id", "someone/my model"], capsys)
    assert "--hub_model_id" in line and "'someone/my model'" in line
    assert not (tmp_path / "o").exists()


# ---- 6. K larger than a class ----------------------------------------------------------------------------------------
def test_k_larger_than_a_class_names_the_label_as_the_data_does(tmp_path, gpt_dir, capsys):
    rows = [{"text": f"a fine film {i}", "label": "positive"} for i in range(9)]
    rows += [{"text": f"a dull film {i}", "label": "negative"} for i in range(3)]
    path = _jsonl(tmp_path / "reviews.jsonl", rows)
    argv = ["--model_name_or_path", gpt_dir, "--dataset", path, "--eval_dataset", path, "--output_dir", tmp_path / "o"]
    line = _refused("probe", [*argv, "--num_labels_per_class", "5"], capsys)
    assert "class 'negative', which has 3 examples" in line


def test_few_shot_indices_names_the_label():
    with pytest.raises(InputError, match="larger than class 'dog', which has 1 example"):
        few_shot_indices([0, 0, 1, 0], 2, seed=0, names=["cat", "dog"])


def test_a_null_label_is_refused_not_a_class_called_none(tmp_path, capsys):
    from hfssl.data.labelled import load_labelled

    data = tmp_path / "null_label.jsonl"
    data.write_text(
        "".join(f'{{"text": "fine {i}", "label": {i % 2}}}\n' for i in range(6)) + '{"text": "x", "label": null}\n'
    )
    with pytest.raises(InputError, match="row 7: the label is null"):
        load_labelled(str(data))
