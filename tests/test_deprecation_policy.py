"""The suite's deprecation policy itself: our deprecated calls fail, third-party ones are dropped."""

import logging
import warnings

import pytest

from tests.deprecation_policy import DeprecatedUseError


def _module(name: str, source: str) -> dict:
    """Run `source` as the body of a module called `name`; returns its namespace."""
    namespace = {"__name__": name, "warnings": warnings, "logging": logging}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


LIBRARY = _module(
    "somelib.api",
    """
def old_api():
    warnings.warn("old_api is deprecated", FutureWarning, stacklevel=2)

def old_kwarg():
    logging.getLogger("transformers.fake").warning("`past_key_values` is deprecated. Use `cache` instead.")
""",
)


def test_our_call_of_a_deprecated_api_fails():
    ours = _module("hfssl.fake", "def use(lib):\n    lib['old_api']()\n")
    with pytest.raises(DeprecatedUseError, match=r"<hfssl\.fake>:2 uses a deprecated API: old_api is deprecated"):
        ours["use"](LIBRARY)


def test_a_deprecation_logged_by_transformers_for_our_call_fails():
    ours = _module("hfssl.fake_logging", "def use(lib):\n    lib['old_kwarg']()\n")
    with pytest.raises(DeprecatedUseError, match="past_key_values"):
        ours["use"](LIBRARY)


def test_a_deprecation_caused_by_third_party_code_is_dropped():
    other = _module("otherlib.core", "def use(lib):\n    lib['old_api']()\n    lib['old_kwarg']()\n")
    other["use"](LIBRARY)  # no error: otherlib, not hfssl, calls the deprecated API


def test_other_warnings_are_left_alone():
    ours = _module("hfssl.fake_user_warning", "def use():\n    warnings.warn('just so you know', UserWarning)\n")
    with pytest.warns(UserWarning, match="just so you know"):
        ours["use"]()
