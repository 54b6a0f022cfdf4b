"""The serving tests run against an empty hfssl cache (`empty_hfssl_cache`, tests/conftest.py), with the models root
of tests/conftest.py's `models_root`."""

import pytest


@pytest.fixture(autouse=True)
def _no_reference_models(empty_hfssl_cache):
    """A store lists fetched reference models too: these tests see none."""
