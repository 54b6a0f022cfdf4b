"""Sharing on the Hub, offline: the upload folder reloads without hfssl, adapters load onto their base, the
card parses, and the upload calls huggingface_hub with the right arguments (a recording stand-in replaces
only the network)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

from hfssl import hub
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from tests.conftest import import_script, why_failed

TOKEN = "hf_testtokenthatmustnotleak0123456789"
INPUT_IDS = [[5, 9, 14, 3, 22, 7], [2, 30, 11, 8, 40, 6]]

LOAD_WITHOUT_HFSSL = r"""
import json, sys
import torch
sys.modules["hfssl"] = None  # `import hfssl` now fails: everything must come from the folder
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits
assert not [m for m in sys.modules if m.startswith("hfssl") and sys.modules[m] is not None]
print(json.dumps({"logits": logits.tolist(), "class": type(model).__module__}))
"""


def _finetune(tmp_path, gpt_dir, sentiment_file, method, monkeypatch):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    args = FinetuneArguments(
        model_name_or_path=str(gpt_dir),
        dataset=str(sentiment_file),
        method=method,
        output_dir=str(tmp_path / f"ft-{method}"),
        num_labels_per_class=4,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
    )
    result = run_finetune(args)
    model = _reload(Path(args.output_dir), method)
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.tensor(INPUT_IDS)).logits
    return Path(args.output_dir), result, logits


def _reload(folder: Path, method: str):
    """The fine-tuned classifier as saved: a full model, or the base with its LoRA adapter."""
    from transformers import AutoModelForSequenceClassification

    if method != "lora":
        return AutoModelForSequenceClassification.from_pretrained(folder)
    from peft import AutoPeftModelForSequenceClassification

    return AutoPeftModelForSequenceClassification.from_pretrained(folder)


def _logits_in_fresh_process(folder: Path) -> tuple[torch.Tensor, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(folder.parent / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_HFSSL, str(folder), json.dumps(INPUT_IDS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=folder.parent,
    )
    assert result.returncode == 0, why_failed(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return torch.tensor(out["logits"]), out["class"]


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login either


@pytest.fixture
def token(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])  # lora: merged into a full model on the way out
def test_dry_run_folder_reloads_without_hfssl(tmp_path, gpt_dir, sentiment_file, monkeypatch, no_token, method):
    model_dir, result, expected = _finetune(tmp_path, gpt_dir, sentiment_file, method, monkeypatch)
    folder = tmp_path / "upload"
    code = import_script("push").main(
        ["--model_dir", str(model_dir), "--repo_id", "someone/tiny-gpt-sst", "--dry_run", "--dry_run_dir", str(folder)]
    )
    assert code == 0
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "modeling_gpt.py",
        "configuration_gpt.py",
        "tokenizer.json",
        "README.md",
        "metrics.json",
    } <= names
    assert not any(n.startswith("adapter_") for n in names)
    logits, module = _logits_in_fresh_process(folder)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert "transformers_modules" in module  # the uploaded code, not an installed package

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert "hfssl" in card.data.tags and method in card.data.tags
    accuracy = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert accuracy and accuracy[0].metric_value == round(result.accuracy, 4)
    assert card.data.base_model is None  # a local base path is not a Hub id; the text names it instead
    relative_base = os.path.relpath(gpt_dir, model_dir)
    assert f"Base model: `{relative_base}`" in card.text and "trust_remote_code=True" in card.text
    # published records name local files relative to the run, never by the author's absolute paths
    for path in folder.iterdir():
        if path.suffix in (".json", ".md", ".txt"):
            assert str(tmp_path) not in path.read_text(), path.name


@pytest.mark.slow
def test_adapter_only_folder_loads_onto_its_base(tmp_path, gpt_dir, sentiment_file, monkeypatch, no_token):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model_dir, _, expected = _finetune(tmp_path, gpt_dir, sentiment_file, "lora", monkeypatch)
    result = hub.push_to_hub(
        model_dir, "someone/tiny-gpt-lora", adapter_only=True, dry_run=True, dry_run_dir=tmp_path / "adapter-upload"
    )
    folder = Path(result["folder"])
    assert "adapter_config.json" in result["files"] and "adapter_model.safetensors" in result["files"]
    assert "model.safetensors" not in result["files"]
    base_path = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not os.path.isabs(base_path)  # relative to the run's folder: no local absolute path is published
    base = AutoModelForSequenceClassification.from_pretrained(model_dir / base_path, num_labels=2)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=torch.tensor(INPUT_IDS)).logits, expected)
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags


def test_card_metadata_round_trips(tmp_path, gpt_dir, no_token):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    (gpt_dir / "metrics.json").write_text(
        json.dumps(
            {
                "method": "linear_probe",
                "accuracy": 0.8125,
                "macro_f1": 0.8,
                "num_train": 16,
                "num_eval": 32,
                "args": {"model_name_or_path": "someone/base-gpt", "dataset": "stanfordnlp/sst2", "eval_dataset": None},
            }
        )
    )
    (gpt_dir / "prompt_eval.json").write_text(
        json.dumps(
            {
                "dataset": "stanfordnlp/sst2",
                "shots": {"4": {"accuracy": {"mean": 0.61}, "accuracy_calibrated": {"mean": 0.66}}},
            }
        )
    )
    files = hub.prepare_upload_folder(gpt_dir, tmp_path / "up", "someone/probe")
    card = ModelCard.load(tmp_path / "up" / "README.md")
    assert card.data.base_model == "someone/base-gpt" and card.data.datasets == ["stanfordnlp/sst2"]
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "text-generation"
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    values = {r.metric_name: r.metric_value for r in results}
    assert values == {
        "accuracy (linear_probe)": 0.8125,
        "macro_f1 (linear_probe)": 0.8,
        "accuracy 4-shot in context": 0.61,
        "accuracy_calibrated 4-shot in context": 0.66,
    }
    assert "README.md" in files and "checkpoints" not in files


@pytest.mark.parametrize(
    "record, expected",
    [
        (
            {"final": {"eval_loss": 4.2401, "eval_perplexity": 69.4}, "log_history": []},
            {"eval_loss (pretraining)": 4.2401, "eval_perplexity (pretraining)": 69.4},
        ),
        (
            {"meta_test": {"5-way 1-shot": {"accuracy": 0.9512, "ci95": 0.0123, "episodes": 600}}},
            {"5-way 1-shot accuracy (meta-test, +- 1.2 pts 95% CI, 600 episodes)": 0.9512},
        ),
    ],
)
def test_card_carries_pretraining_and_meta_learning_metrics(tmp_path, gpt_dir, no_token, record, expected):
    args = {"dataset": "someone/omniglot", "eval_split_fraction": 0.05}
    (gpt_dir / "metrics.json").write_text(json.dumps({**record, "args": args}))  # as files before typed results
    hub.prepare_upload_folder(gpt_dir, tmp_path / "up", "someone/model")
    results = {r.metric_name: r.metric_value for r in ModelCard.load(tmp_path / "up" / "README.md").data.eval_results}
    assert results == expected


class RecordingApi:
    """Stands in for the network side of HfApi only: records calls, can fail the first `failures` ones."""

    def __init__(self, failures=()):
        self.calls, self.failures = [], list(failures)

    def _maybe_fail(self):
        if self.failures:
            raise self.failures.pop(0)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        self._maybe_fail()
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert not [n for n, b in files.items() if TOKEN.encode() in b], "the token leaked into the upload"
        self.calls.append(("upload_folder", sorted(files), kwargs))
        return type("Commit", (), {"commit_url": "https://huggingface.co/someone/x/commit/abc"})()


def _http_error(status):
    """The error huggingface_hub raises for an HTTP status, built with its HTTP client (httpx2 from 2.0, else httpx)."""
    import importlib.util

    http = importlib.import_module("httpx2" if importlib.util.find_spec("httpx2") else "httpx")
    request = http.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"HTTP {status}", response=http.Response(status, request=request))


def test_upload_calls_create_repo_and_upload_folder(tmp_path, gpt_dir, token, monkeypatch, capsys):
    monkeypatch.setattr(hub.upload.time, "sleep", lambda s: None)
    api = RecordingApi(failures=[_http_error(503)])  # one transient failure, then success
    result = hub.push_to_hub(gpt_dir, "someone/tiny", private=True, revision="v1", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1:] == ("someone/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert api.calls[2][2] == {"branch": "v1", "exist_ok": True}
    _, files, kwargs = api.calls[3]
    assert kwargs["repo_id"] == "someone/tiny" and kwargs["revision"] == "v1" and kwargs["repo_type"] == "model"
    assert {"README.md", "config.json", "model.safetensors", "modeling_gpt.py"} <= set(files)
    assert result["repo_url"] == "https://huggingface.co/someone/tiny"
    assert TOKEN not in capsys.readouterr().out


@pytest.mark.parametrize(
    "failure, message",
    [
        (_http_error(403), "refused the token"),
        (_http_error(409), "name conflict"),
        (ConnectionError("no route"), "could not reach the Hub after 3 attempts"),
    ],
)
def test_push_failures_are_clear(tmp_path, gpt_dir, token, monkeypatch, failure, message):
    monkeypatch.setattr(hub.upload.time, "sleep", lambda s: None)
    with pytest.raises(hub.HubError, match=message) as info:
        hub.push_to_hub(gpt_dir, "someone/tiny", api=RecordingApi(failures=[failure] * 3))
    assert TOKEN not in str(info.value)


def test_bad_requests(tmp_path, gpt_dir, no_token, capsys):
    push = import_script("push").main
    assert push(["--model_dir", str(gpt_dir), "--repo_id", "someone/tiny"]) == 2
    assert "No Hugging Face token" in capsys.readouterr().err
    assert push(["--model_dir", str(gpt_dir), "--repo_id", "tiny", "--dry_run"]) == 2
    assert "user/name" in capsys.readouterr().err
    assert push(["--model_dir", str(gpt_dir), "--repo_id", "a/b", "--dry_run", "--adapter_only"]) == 2
    assert "not a LoRA adapter" in capsys.readouterr().err
    assert push(["--model_dir", str(tmp_path / "missing"), "--repo_id", "a/b", "--dry_run"]) == 2
    assert "not found" in capsys.readouterr().err


def test_an_adapter_with_no_base_model_is_refused_by_name(tmp_path, gpt_dir, no_token, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter_dir = tmp_path / "lora-no-base"
    config = LoraConfig(r=2, target_modules=["qkv_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(gpt_dir), config).save_pretrained(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": None}))
    push = import_script("push").main
    assert push(["--model_dir", str(adapter_dir), "--repo_id", "a/b", "--dry_run"]) == 2
    assert "names no base model" in capsys.readouterr().err
    assert not (tmp_path / "lora-no-base-hub-upload").exists()  # no half-written upload folder is left
    empty = tmp_path / "empty"  # a folder the user made: kept, and left as empty as it was found
    empty.mkdir()
    assert push(["--model_dir", str(adapter_dir), "--repo_id", "a/b", "--dry_run", "--dry_run_dir", str(empty)]) == 2
    assert empty.is_dir() and not any(empty.iterdir())


def test_scripts_push_at_the_end(tmp_path, gpt_dir, sentiment_file, token, monkeypatch):
    api = RecordingApi()
    monkeypatch.setattr(hub.upload, "HfApi", lambda token: api)
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    code = import_script("probe").main(
        [
            "--model_name_or_path",
            str(gpt_dir),
            "--dataset",
            str(sentiment_file),
            "--output_dir",
            str(tmp_path / "probe"),
            "--push_to_hub",
            "--hub_model_id",
            "someone/probe",
        ]
    )
    assert code == 0
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert "metrics.json" in api.calls[1][1]


def test_dry_run_never_removes_a_folder_it_did_not_write(tmp_path, gpt_dir, no_token, capsys):
    """--dry_run_dir used to be removed whatever it held, the model folder itself included."""
    push = import_script("push").main
    before = {p.name: p.read_bytes() for p in gpt_dir.iterdir()}
    assert push(["--model_dir", str(gpt_dir), "--repo_id", "a/b", "--dry_run", "--dry_run_dir", str(gpt_dir)]) == 2
    assert "is (or contains, or is inside) the model folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in gpt_dir.iterdir()} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert push(["--model_dir", str(gpt_dir), "--repo_id", "a/b", "--dry_run", "--dry_run_dir", str(mine)]) == 2
    assert "is not an earlier hfssl dry run" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "my notes"
    # an earlier dry run is replaced
    earlier = tmp_path / "earlier"
    assert push(["--model_dir", str(gpt_dir), "--repo_id", "a/b", "--dry_run", "--dry_run_dir", str(earlier)]) == 0
    assert push(["--model_dir", str(gpt_dir), "--repo_id", "a/b", "--dry_run", "--dry_run_dir", str(earlier)]) == 0
    assert "README.md" in {p.name for p in earlier.iterdir()}


def test_any_string_of_a_token_s_form_is_refused_without_printing_it(tmp_path, gpt_dir, no_token, capsys):
    """Only the current HF_TOKEN used to be found; any other token went up with the files."""
    leaked = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
    (gpt_dir / "notes.txt").write_text(f"line one\nmy other token {leaked}\n")
    push = import_script("push").main
    assert (
        push(["--model_dir", str(gpt_dir), "--repo_id", "a/b", "--dry_run", "--dry_run_dir", str(tmp_path / "u")]) == 2
    )
    captured = capsys.readouterr()
    assert "notes.txt, byte 24 (UTF-8), holds what looks like a Hugging Face access token" in captured.err
    assert leaked not in captured.err + captured.out and leaked[3:12] not in captured.err + captured.out
    assert not (tmp_path / "u").exists()  # nor is the refused copy left on disk in a half-written upload folder


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16-be", "utf-16"])
def test_a_token_is_found_in_any_text_encoding(tmp_path, gpt_dir, no_token, encoding):
    leaked = "hf_" + "Zy9" * 11 + "Q"
    (gpt_dir / "notes.txt").write_bytes(f"first line\nsee {leaked} here\n".encode(encoding))
    with pytest.raises(hub.HubError, match=r"notes.txt, byte \d+ \(UTF-") as refused:
        hub.prepare_upload_folder(gpt_dir, tmp_path / "up", "a/b")
    assert leaked not in str(refused.value)


def test_a_token_hidden_in_weights_or_split_across_chunks_is_found(tmp_path, gpt_dir, no_token, monkeypatch):
    """The scan used to read a safetensors file's header only; tensor bytes can carry text too."""
    from safetensors.torch import save_file

    leaked = "hf_" + "Xw7" * 11 + "P"
    data = torch.frombuffer(bytearray(b"\0" * 101 + leaked.encode() + b"\0" * 100), dtype=torch.uint8)
    save_file({"w": data}, gpt_dir / "extra.safetensors")
    monkeypatch.setattr("hfssl.hub.records._CHUNK", 64)  # the token straddles two chunks
    with pytest.raises(hub.HubError, match=r"extra.safetensors, byte \d+ \(UTF-8\)"):
        hub.prepare_upload_folder(gpt_dir, tmp_path / "up", "a/b")
