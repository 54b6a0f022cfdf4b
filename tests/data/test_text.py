"""Corpus loading, tokenizer training and block packing."""

import json

import datasets
import pytest
from transformers import AutoTokenizer

from hfssl.data.builtin import stdlib_docstrings
from hfssl.data.text import EOS_TOKEN, PAD_TOKEN, load_text_dataset, pack_into_blocks, train_bpe_tokenizer


def test_tokenizer_special_tokens_and_reload(tmp_path, tiny_tokenizer):
    assert tiny_tokenizer.eos_token == tiny_tokenizer.bos_token == EOS_TOKEN and tiny_tokenizer.eos_token_id == 0
    assert tiny_tokenizer.pad_token == PAD_TOKEN and tiny_tokenizer.pad_token_id == 1
    assert len(tiny_tokenizer) == 300
    tiny_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "The cat finds the moon. Ünïcödé and emoji 🙂 never become <unk>."
    ids = reloaded(text, add_special_tokens=False)["input_ids"]
    assert ids == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert reloaded.decode(ids) == text  # byte-level: lossless on any text
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (0, 1)


def test_tokenizer_learns_merges_from_the_corpus(tiny_tokenizer):
    # frequent corpus words become single tokens
    assert len(tiny_tokenizer(" the", add_special_tokens=False)["input_ids"]) == 1
    assert len(tiny_tokenizer(" garden", add_special_tokens=False)["input_ids"]) == 1


def test_tokenizer_vocab_size_too_small():
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe_tokenizer(["abc"], vocab_size=100)


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "tsv", "parquet", "folder"])
def test_load_local_formats(tmp_path, corpus_docs, fmt):
    docs = corpus_docs[:10]
    if fmt == "txt":
        path = tmp_path / "c.txt"
        path.write_text("\n\n".join(docs))
    elif fmt == "jsonl":
        path = tmp_path / "c.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    elif fmt in ("csv", "tsv", "parquet"):
        path = tmp_path / f"c.{fmt}"
        ds = datasets.Dataset.from_dict({"text": docs, "other": list(range(10))})
        if fmt == "parquet":
            ds.to_parquet(path)
        else:
            ds.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
    else:
        path = tmp_path / "folder"
        path.mkdir()
        (path / "a.txt").write_text("\n\n".join(docs[:5]))
        (path / "b.txt").write_text("\n\n".join(docs[5:]))
    ds = load_text_dataset(str(path))
    assert ds.column_names == ["text"]
    assert list(ds["text"]) == docs


def test_txt_sample_by_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one line\ntwo line\n\nthird\n")
    assert len(load_text_dataset(str(path), sample_by="line")) == 3
    assert len(load_text_dataset(str(path), sample_by="paragraph")) == 2


def test_custom_text_column(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": "hello there"}) + "\n")
    assert list(load_text_dataset(str(path), text_column="body")["text"]) == ["hello there"]


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        load_text_dataset(str(missing))


def test_missing_text_column_lists_columns(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": "hello"}) + "\n")
    with pytest.raises(ValueError, match=r"no column 'text'.*\['body'\]"):
        load_text_dataset(str(path))


def test_empty_corpus(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no non-empty text"):
        load_text_dataset(str(path))


def test_unsupported_and_mixed_folders(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    (folder / "b.jsonl").write_text(json.dumps({"text": "y"}) + "\n")
    with pytest.raises(ValueError, match="mixes file types"):
        load_text_dataset(str(folder))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No data files"):
        load_text_dataset(str(empty))


def test_pack_into_blocks_separates_documents_with_eos(tiny_tokenizer):
    docs = ["The cat sees the moon.", "A dog finds a letter.", "The river calls the ship."] * 8
    ds = datasets.Dataset.from_dict({"text": docs})
    blocks = pack_into_blocks(ds, tiny_tokenizer, block_size=16)
    assert all(len(b) == 16 for b in blocks["input_ids"])
    flat = [t for b in blocks["input_ids"] for t in b]
    per_doc = [tiny_tokenizer(d, add_special_tokens=False)["input_ids"] + [0] for d in docs]
    expected = [t for d in per_doc for t in d]
    assert flat == expected[: len(flat)]  # concatenation in order, EOS after every document
    assert len(flat) == len(expected) // 16 * 16  # only the tail shorter than a block is dropped


def test_pack_too_short_corpus(tiny_tokenizer):
    ds = datasets.Dataset.from_dict({"text": ["tiny"]})
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_into_blocks(ds, tiny_tokenizer, block_size=64)


def test_builtin_corpus_is_real_prose():
    docs = stdlib_docstrings()
    assert len(docs) > 3000
    assert sum(map(len, docs)) > 1_000_000  # a few MB of text
    assert len(set(docs)) == len(docs)
    assert any("Return" in d for d in docs[:500])
