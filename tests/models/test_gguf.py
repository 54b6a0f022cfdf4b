"""llama.cpp GGUF checkpoints through the one loading helper, the converter and every entry point, on a tiny llama
GGUF written with the gguf package (tests/helpers/tiny_gguf.py); the real SmolLM2 GGUF is in test_reference_models."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfssl.models.loading import load_causal_lm, load_tokenizer
from hfssl.run.model_source import model_source
from tests.conftest import import_script


def _logits(model, tokenizer, text="The cat sees the dog."):
    with torch.no_grad():
        return model(**tokenizer([text], return_tensors="pt")).logits


def test_a_gguf_loads_as_an_ordinary_model_that_can_be_saved(tiny_gguf, tmp_path):
    model, tokenizer = load_causal_lm(str(tiny_gguf))
    reference = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    torch.testing.assert_close(_logits(model, tokenizer), _logits(reference, tokenizer), rtol=0, atol=0)
    assert getattr(model, "hf_quantizer", None) is None and "quantization_config" not in model.config.to_dict()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    model.save_pretrained(tmp_path / "saved")  # a GGUF-loaded transformers model refuses this
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(_logits(reloaded, tokenizer), _logits(reference, tokenizer), rtol=0, atol=0)
    # the same checkpoint named as a folder plus --gguf_file
    assert model_source(str(tiny_gguf.parent), tiny_gguf.name) == model_source(str(tiny_gguf))


def test_a_gguf_tokenizer_is_the_one_it_was_written_from(tiny_gguf, tiny_tokenizer):
    # transformers 5.4's AutoTokenizer made a llama GGUF's tokenizer a CodeLlamaTokenizer (a BOS token prepended,
    # five FIM tokens added) without its padding token; load_tokenizer gives the file's own on every version
    loaded = load_tokenizer(str(tiny_gguf))
    text = "The cat sees the dog. <|endoftext|>"
    assert loaded(text).input_ids == tiny_tokenizer(text).input_ids
    assert len(loaded) == len(tiny_tokenizer)
    for name in ("bos_token", "eos_token", "pad_token"):
        assert getattr(loaded, name) == getattr(tiny_tokenizer, name), name
    assert loaded.unk_token == tiny_tokenizer.eos_token  # the file's unknown-token id


def test_a_gguf_tokenizer_takes_its_special_tokens_from_the_file(tiny_tokenizer, tmp_path):
    from tests.helpers.tiny_gguf import write_tiny_llama_gguf

    ids = {"bos": 40, "eos": 41, "unk": 42, "pad": 43}
    path = write_tiny_llama_gguf(tmp_path / "own-specials.gguf", tiny_tokenizer, special_token_ids=ids)
    loaded = load_tokenizer(str(path))
    for name, token_id in ids.items():
        assert getattr(loaded, f"{name}_token_id") == token_id, name
    outside = write_tiny_llama_gguf(tmp_path / "outside.gguf", tiny_tokenizer, special_token_ids={"pad": 100000})
    with pytest.raises(ValueError, match=r"outside\.gguf: tokenizer\.ggml\.padding_token_id is 100000, outside"):
        load_tokenizer(str(outside))


def test_convert_gguf_writes_a_folder_with_tokenizer_and_chat_template(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "converted"
    assert import_script("convert_gguf").main(["--model_name_or_path", str(tiny_gguf), "--output_dir", str(out)]) == 0
    assert f"converted to {out}" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()
    }
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    gguf_model, _ = load_causal_lm(str(tiny_gguf))
    converted = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(_logits(converted, tokenizer), _logits(gguf_model, tokenizer), rtol=0, atol=0)


def _six_classes(folder):
    """Labelled text of six classes (episodes need classes to spare for meta-train and meta-test)."""
    path = folder / "six.txt"
    words = ["cat", "dog", "bird", "song", "house", "river"]
    path.write_text("".join(f"{w} the {w} sees a {w} {i}\n" for w in words for i in range(6)))
    return path


def _entry_point_argv(name, tiny_gguf, sentiment_file, out):
    folder_and_file = ["--model_name_or_path", str(tiny_gguf.parent), "--gguf_file", tiny_gguf.name]
    return {
        "prompt_eval": [
            "--model_name_or_path",
            str(tiny_gguf),
            "--dataset",
            str(sentiment_file),
            "--shots",
            "0,2",
            "--num_seeds",
            "1",
        ],
        "probe": [*folder_and_file, "--dataset", str(sentiment_file), "--output_dir", str(out)],
        "finetune": [
            "--model_name_or_path",
            str(tiny_gguf),
            "--dataset",
            str(sentiment_file),
            "--method",
            "lora",
            "--num_train_epochs",
            "1",
            "--num_labels_per_class",
            "4",
            "--output_dir",
            str(out),
        ],
        "meta_train": [
            *folder_and_file,
            "--dataset",
            str(_six_classes(out.parent)),
            "--algorithm",
            "protonet",
            "--ways",
            "2",
            "--shots",
            "1",
            "--queries",
            "2",
            "--max_steps",
            "2",
            "--eval_steps",
            "0",
            "--test_shots",
            "1",
            "--test_episodes",
            "2",
            "--class_split",
            "0.5",
            "0.0",
            "0.5",
            "--output_dir",
            str(out),
        ],
        "pretrain": [
            *folder_and_file,
            "--dataset",
            str(sentiment_file),
            "--block_size",
            "16",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--report_to",
            "none",
            "--output_dir",
            str(out),
        ],
        "push": [
            "--model_dir",
            str(tiny_gguf),
            "--repo_id",
            "someone/tiny-llama",
            "--dry_run",
            "--dry_run_dir",
            str(out),
        ],
    }[name]


@pytest.mark.parametrize("name", ["prompt_eval", "probe", "finetune", "meta_train", "pretrain", "push"])
def test_every_entry_point_takes_a_gguf(name, tiny_gguf, sentiment_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    out = tmp_path / "out"
    assert import_script(name).main(_entry_point_argv(name, tiny_gguf, sentiment_file, out)) == 0, (
        capsys.readouterr().err[-2000:]
    )
    if name == "prompt_eval":
        assert "| 2 |" in capsys.readouterr().out
        return
    saved = {"config.json", "adapter_config.json", "probe.json"}  # a model, a LoRA adapter, a probe head on its base
    assert saved & {p.name for p in out.iterdir()}
    if name == "push":  # uploaded converted: loads without the gguf package
        assert not any(p.suffix == ".gguf" for p in out.iterdir())
        assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"
    if name in ("probe", "finetune", "meta_train"):
        assert json.loads((out / "metrics.json").read_text())["args"]["model_name_or_path"]


def test_the_demo_lists_and_loads_gguf_files(tiny_gguf, tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="the demo needs the [demo] extra")
    import importlib.util

    from tests.conftest import REPO

    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("hfssl_demo_app_gguf", REPO / "demo" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    root = tmp_path / "models"
    shutil.copytree(tiny_gguf.parent, root / "llama")
    store = app.ModelStore(root)
    assert store.local_models("causal_lm") == ["llama/tiny-llama.F32.gguf"]
    model, _ = store.causal_lm("llama/tiny-llama.F32.gguf")
    assert type(model).__name__ == "LlamaForCausalLM"


def test_gguf_bad_input(tiny_gguf, tmp_path, monkeypatch):
    from tests.helpers.tiny_gguf import write_tiny_llama_gguf

    with pytest.raises(FileNotFoundError, match=r"--gguf_file other\.gguf: no such file in .* \(it holds tiny"):
        load_causal_lm(str(tiny_gguf.parent), gguf_file="other.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.gguf is truncated"):
        load_causal_lm(str(truncated))
    foreign = tmp_path / "foreign.gguf"
    foreign.write_bytes(b"not a gguf at all")
    with pytest.raises(ValueError, match="is truncated or not a GGUF file"):
        load_causal_lm(str(foreign))
    tokenizer = load_tokenizer(str(tiny_gguf))
    unknown = write_tiny_llama_gguf(tmp_path / "unknown.gguf", tokenizer, architecture="notanarch")
    with pytest.raises(ValueError, match="transformers cannot load this GGUF"):
        load_causal_lm(str(unknown))
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'hfssl\[gguf\]'"):
        load_causal_lm(str(tiny_gguf))
