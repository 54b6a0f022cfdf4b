"""Our option log-likelihoods equal lm-evaluation-harness' own, through its `hf` backend and a local task."""

import json

import pytest
import torch

from hfssl import GPTForCausalLM
from hfssl.adapt.prompt_classifier import PromptClassifier
from hfssl.adapt.prompts import get_template
from hfssl.models.loading import load_causal_lm
from tests.conftest import tiny_gpt_config

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a test-only extra: pip install -e '.[dev]'")

TEXTS = [
    "a fine good film",
    "bad and dull",
    "the king likes the song",
    "the king forgets the song 3",
    "good good good",
    "a dull bad film 5",
]
LABELS = [1, 0, 1, 0, 1, 0]


def write_task(folder, texts, labels, demos: list[str], template) -> str:
    """A multiple-choice task in lm-eval's YAML format over a local jsonl file (no Hub access): the prompt is the
    demonstrations, then the template's query; the choices are the template's words for "0" and "1"."""
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    prefix = "".join(d + template.demo_delimiter for d in demos)
    query = f"{prefix}{template.input_prefix}{{{{text}}}}{template.field_delimiter}{template.output_prefix}"
    choices = [template.verbalize("0"), template.verbalize("1")]
    # JSON strings are valid YAML scalars, which keeps the newlines of the prompt exact
    (folder / "task.yaml").write_text(
        "\n".join(
            [
                "task: hfssl_agreement",
                "dataset_path: json",
                "dataset_kwargs:",
                f"  data_files: {{test: {json.dumps(str(data))}}}",
                "test_split: test",
                "output_type: multiple_choice",
                f"doc_to_text: {json.dumps(query)}",
                f"doc_to_choice: {json.dumps(choices)}",
                "doc_to_target: label",
                f"target_delimiter: {json.dumps(template.target_delimiter)}",
                "metric_list:",
                "  - metric: acc",
                "  - metric: acc_norm",
            ]
        )
        + "\n"
    )
    return str(folder)


@pytest.fixture
def gpt_dir(tmp_path, tiny_tokenizer):
    """A saved tiny hfssl GPT with room for two demonstrations."""
    path = tmp_path / "gpt"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=256)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 2])
def test_loglikelihoods_match_lm_evaluation_harness(gpt_dir, tmp_path, k):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    template = get_template("sentiment")
    model, tokenizer = load_causal_lm(str(gpt_dir))
    classifier = PromptClassifier(model, tokenizer, template, ["0", "1"], batch_size=4)
    demos = classifier.demonstrations(["good and fine", "bad bad bad"], [1, 0])[:k]

    harness = HFLM(pretrained=str(gpt_dir), backend="causal", batch_size=4, device="cpu")
    out = simple_evaluate(
        model=harness,
        tasks=["hfssl_agreement"],
        task_manager=TaskManager(include_path=write_task(tmp_path, TEXTS, LABELS, demos, template)),
        log_samples=True,
        num_fewshot=0,
    )
    samples = sorted(out["samples"]["hfssl_agreement"], key=lambda s: s["doc_id"])
    theirs = torch.tensor([[resp[0][0] for resp in s["resps"]] for s in samples], dtype=torch.float64)

    scores = classifier.score(TEXTS, [demos] * len(TEXTS))
    assert scores.num_demonstrations == [k] * len(TEXTS)  # nothing dropped or truncated on either side
    ours = scores.loglik
    assert theirs.shape == ours.shape == (len(TEXTS), 2)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    accuracy = (ours.argmax(-1) == torch.tensor(LABELS)).double().mean().item()
    assert accuracy == pytest.approx(out["results"]["hfssl_agreement"]["acc,none"])
