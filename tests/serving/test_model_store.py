"""hfssl.serving.model_store: listing, name -> path confinement to the models root, Hub ids only when allowed and
online, the bounded cache, load errors without server paths. No gradio needed."""

import shutil
import subprocess
import sys

import pytest

from hfssl.run.errors import InputError
from hfssl.serving import ModelStore, describe, model_files
from hfssl.serving.lru_cache import LRUCache
from tests.conftest import REPO


def test_store_lists_resolves_caches_and_refuses_outside_paths(models_root):
    store = ModelStore(models_root)
    assert store.local_models() == store.local_models("causal_lm") == ["gpt"]
    assert store.resolve("gpt") == str(models_root / "gpt")
    assert store.causal_lm("gpt") is store.causal_lm("gpt")  # cached
    for bad in ["../secret", "/etc", "gpt/../../secret", "~/x"]:
        with pytest.raises(ValueError, match="not a model under the models root"):
            store.resolve(bad)
    with pytest.raises(ValueError, match="Hub models are off"):
        store.resolve("someone/model")
    assert "parameters, context 256 tokens" in describe(store, "gpt")


def test_hub_ids_only_when_allowed_online_and_naming_no_local_path(models_root, monkeypatch):
    store = ModelStore(models_root, allow_hub_models=True)
    with pytest.raises(ValueError, match="offline"):  # the suite runs with HF_HUB_OFFLINE=1
        store.resolve("someone/model")
    monkeypatch.setattr(model_files, "hub_offline", lambda: False)
    assert store.resolve("someone/model") == "someone/model"
    with pytest.raises(ValueError, match="not a model under the models root"):
        store.resolve("../secret")


def test_names_never_resolve_outside_the_root(models_root, tmp_path, monkeypatch):
    """`models/ok` used to load a model from the server's working directory, and a symlink out of the root was
    followed (with --models_root .)."""
    elsewhere = tmp_path / "cwd"
    shutil.copytree(models_root / "gpt", elsewhere / "models" / "ok")
    (models_root / "link").symlink_to(elsewhere / "models" / "ok", target_is_directory=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(model_files, "hub_offline", lambda: False)
    for store in (ModelStore(models_root), ModelStore(models_root, allow_hub_models=True)):
        for name in ("models/ok", "link", "link/"):
            with pytest.raises(ValueError, match="not a model under the models root"):
                store.resolve(name)


def test_names_that_are_no_model_names_are_refused_as_bad_input(models_root):
    store = ModelStore(models_root)
    for bad, message in [("", "Choose a model"), ("  ", "Choose a model"), ("a\\b", "not a model name")]:
        with pytest.raises(InputError, match=message):
            store.resolve(bad)


def test_reference_data_resolves_only_under_the_root(models_root, tmp_path):
    (models_root / "images").mkdir()
    (models_root / "escape").symlink_to(tmp_path / "secret", target_is_directory=True)
    store = ModelStore(models_root)
    assert store.data_path("images") == str(models_root / "images")
    for bad in ["../secret", str(tmp_path / "secret"), "escape", "missing"]:
        with pytest.raises(InputError, match="must be an existing path under the models root"):
            store.data_path(bad)


def test_load_errors_do_not_show_server_paths(models_root):
    broken = models_root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "hfssl_gpt", "vocab_size": ')
    with pytest.raises(OSError) as info:
        ModelStore(models_root).causal_lm("broken")
    assert "'broken'" in str(info.value) and str(models_root) not in str(info.value)


def test_model_cache_is_bounded(models_root, tiny_tokenizer):
    for name in ("gpt2", "gpt3"):
        shutil.copytree(models_root / "gpt", models_root / name)
    store = ModelStore(models_root, max_cached=2)
    first = store.causal_lm("gpt")
    store.causal_lm("gpt2")
    assert store.causal_lm("gpt") is first  # still cached, now the most recent
    store.causal_lm("gpt3")  # evicts gpt2, the least recently used
    assert len(store._cache) == 2 and ("lm", str(models_root / "gpt2")) not in store._cache


def test_lru_cache_loads_once_and_drops_the_least_recently_used():
    loads = []
    cache = LRUCache(2)

    def load(key):
        return lambda: loads.append(key) or key.upper()

    assert cache.get("a", load("a")) == "A" and cache.get("a", load("a")) == "A"
    cache.get("b", load("b"))
    cache.get("a", load("a"))  # a is now the most recent
    cache.get("c", load("c"))  # so b goes
    assert loads == ["a", "b", "c"] and "a" in cache and "b" not in cache and len(cache) == 2
    with pytest.raises(ValueError, match="at least 1"):
        LRUCache(0)


def test_serving_imports_neither_gradio_nor_datasets_nor_the_training_package():
    """The library half of the demo loads without the UI toolkit and without the training stack."""
    code = (
        "import sys, hfssl.serving; "
        "print(sorted(m for m in ('gradio', 'datasets', 'hfssl.training') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
