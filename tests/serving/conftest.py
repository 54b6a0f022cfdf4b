"""Fixtures of the serving tests: an empty hfssl cache (no fetched reference models) and a models root."""

import pytest

from tests.serving.models_root import make_models_root


@pytest.fixture(autouse=True)
def _no_reference_models(tmp_path, monkeypatch):
    """A store lists fetched reference models too: these tests run against an empty hfssl cache."""
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "hfssl-cache"))


@pytest.fixture
def models_root(tmp_path, tiny_tokenizer):
    return make_models_root(tmp_path, tiny_tokenizer)
