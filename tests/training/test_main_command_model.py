"""The README's main command's model generates the same text with and without its KV cache: through
`pipeline("text-generation")` with hfssl imported, and through `trust_remote_code=True` in a process that cannot import
hfssl (what a user of a pushed model runs).

The run uses the main command's configuration (built-in corpus, tokenizer, model shape, in-context warm-up) and only
shortens it: a few optimizer steps instead of thousands.
"""

import json
import subprocess
import sys
import textwrap

import pytest
from transformers import pipeline

from hfssl.training.arguments import parse_pretrain_args
from hfssl.training.loop import run_pretraining
from tests.conftest import why_failed

PROMPTS = ["Return the number of", "The default is", "key"]
GREEDY = dict(max_new_tokens=40, do_sample=False)


@pytest.fixture(scope="module")
def main_command_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt-stdlib")
    argv = ["--output_dir", str(out), "--max_steps", "10", "--icl_warmup_steps", "4", "--eval_steps", "0"]
    argv += ["--save_steps", "0", "--report_to", "none", "--max_eval_samples", "8"]
    run_pretraining(parse_pretrain_args(argv))
    return out


def _greedy_texts(generator) -> dict[str, list[str]]:
    return {
        f"use_cache={use_cache}": [generator(p, use_cache=use_cache, **GREEDY)[0]["generated_text"] for p in PROMPTS]
        for use_cache in (True, False)
    }


@pytest.mark.slow
def test_pipeline_generates_the_same_with_and_without_the_cache(main_command_model):
    texts = _greedy_texts(pipeline("text-generation", model=str(main_command_model)))
    assert texts["use_cache=True"] == texts["use_cache=False"]
    assert all(len(t) > len(p) for t, p in zip(texts["use_cache=True"], PROMPTS))  # it did generate


# hfssl cannot be imported in this process: a finder refuses it before transformers is imported
_WITHOUT_HFSSL = """
import importlib.abc, json, sys

class RefuseHfssl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hfssl" or name.startswith("hfssl."):
            raise ImportError("hfssl must not be importable here")

sys.meta_path.insert(0, RefuseHfssl())
from transformers import pipeline

generator = pipeline("text-generation", model={model!r}, trust_remote_code=True)
assert type(generator.model).__module__.startswith("transformers_modules"), type(generator.model).__module__
texts = {{
    f"use_cache={{use_cache}}": [
        generator(p, use_cache=use_cache, **{greedy!r})[0]["generated_text"] for p in {prompts!r}
    ]
    for use_cache in (True, False)
}}
print(json.dumps(texts))
"""


@pytest.mark.slow
def test_trust_remote_code_generates_the_same_with_and_without_the_cache(main_command_model, tmp_path):
    script = textwrap.dedent(_WITHOUT_HFSSL).format(model=str(main_command_model), greedy=GREEDY, prompts=PROMPTS)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home")},
    )
    assert result.returncode == 0, why_failed(result, 3000)
    texts = json.loads(result.stdout.strip().splitlines()[-1])
    assert texts["use_cache=True"] == texts["use_cache=False"]
    # and the remote-code model generates what the installed hfssl model generates
    assert texts == _greedy_texts(pipeline("text-generation", model=str(main_command_model)))
