"""Multi-task fine-tuning of one causal LM, text to text (`finetune.py --tasks a=PATH,b=PATH --multitask_format
text_to_text`): no heads; each example is written as its task's prompt and the model learns to write the label word
after it (the T5 / FLAN framing), so the task is named by its instruction and one model serves every task.

    prompt_t(x) = instruction_t  "\\n\\n"  input_prefix_t x  "\\n"  output_prefix_t        (PromptTemplate.context)
    instruction_t = the task's preset instruction, else "Task: <t>. Answer with one of: <w_1>, ..., <w_C>."

The loss of a batch of task t is the mean token loss of the answers, the prompt's tokens carrying none:

    L_t(theta) = -1 / (sum_n |a_n|) sum_n sum_j log p_theta(a_{n,j} | prompt_t(x_n), a_{n,<j})

with a_n the tokens of " <w_{y_n}>" split from the prompt exactly as lm-evaluation-harness splits a context and its
continuation (`encode_pair`). Task sampling and loss weighting are `hfssl.adapt.multitask`'s. A task's prediction is
the label word of highest log-likelihood after its prompt (`PromptClassifier`, the definition prompt_eval scores
with), so it never fails to parse.

Label words come from `--task_presets name=preset,...` (a prompt preset's verbalizer, prefixes and instruction, e.g.
sst2=sentiment turns labels 0/1 into negative/positive), else the label names themselves. The run saves one causal
LM (LoRA merged) with its tokenizer in OUTPUT_DIR and each task's template in metrics.json (`tasks[name]["template"]`):
`load_text_to_text(OUTPUT_DIR)` returns the model, the tokenizer and the templates.
"""

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..models.helpers import context_window, ensure_pad_token
from ..models.loading import load_causal_lm
from ..run.errors import InputError
from .loglikelihood import encode_pair
from .prompt_classifier import PromptClassifier
from .prompts import PRESETS, PromptTemplate, get_template, label_options

if TYPE_CHECKING:
    from .task import TaskData

HEADS, TEXT_TO_TEXT = "heads", "text_to_text"
FORMATS = (HEADS, TEXT_TO_TEXT)


def parse_task_presets(spec: str | None, names: list[str]) -> dict[str, str]:
    """`"sst2=sentiment,trec=question_type"` -> a preset per named task; InputError for an unknown task or preset."""
    presets: dict[str, str] = {}
    for part in (p.strip() for p in (spec or "").split(",") if p.strip()):
        name, sep, preset = (s.strip() for s in part.partition("="))
        if not sep or name not in names:
            raise InputError(
                f"--task_presets entries look like task=preset with a task of --tasks {names}; got {part!r}."
            )
        if preset not in PRESETS:
            raise InputError(
                f"--task_presets: unknown preset {preset!r} for {name!r}; choose one of {sorted(PRESETS)}."
            )
        presets[name] = preset
    return presets


def task_template(name: str, label_names: list[str], preset: str | None = None) -> PromptTemplate:
    """The prompt of task `name`: its preset (with an instruction naming the label words when the preset has none), or
    input/answer prefixes with the label names as words. InputError when a label has no word or two share one."""
    if preset:
        base = get_template(preset)
    else:
        base = PromptTemplate(verbalizer={n: n for n in label_names}, input_prefix="Input: ", output_prefix="Answer:")
    words = label_options(base, label_names)
    instruction = base.instruction or f"Task: {name}. Answer with one of: {', '.join(words)}."
    return replace(base, instruction=instruction)


def answer_batch(tokenizer, template: PromptTemplate, texts: list[str], words: list[str], device) -> dict:
    """input_ids / attention_mask / labels (B, T) of prompt + answer, right-padded; labels are -100 except on the
    answer tokens. (The context-length check is the caller's: `TextToTextTask.loss`.)"""
    rows, targets = [], []
    for text, word in zip(texts, words, strict=True):
        context, answer = encode_pair(tokenizer, template.context([], text), template.continuation(word))
        rows.append(context + answer)
        targets.append([-100] * len(context) + answer)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device),
        "labels": torch.tensor([t + [-100] * (width - len(t)) for t in targets], device=device),
    }


class TextToTextTask:
    """One task of a text-to-text run: its data, its template and the label word of every label id; `loss(index)`
    is L_t over the training examples `index` (see the module docstring)."""

    def __init__(self, name: str, data: "TaskData", model: nn.Module, tokenizer, preset: str | None):
        self.name, self.data, self.model, self.tokenizer = name, data, model, tokenizer
        self.template = task_template(name, data.names, preset)
        self.words = label_options(self.template, data.names)
        self.window = context_window(model)

    def loss(self, index: torch.Tensor) -> torch.Tensor:
        texts = [str(self.data.train_x[i]) for i in index.tolist()]  # a text task's inputs are strings
        words = [self.words[int(y)] for y in self.data.train_y[index]]
        batch = answer_batch(self.tokenizer, self.template, texts, words, next(self.model.parameters()).device)
        if self.window is not None and batch["input_ids"].shape[1] > self.window:
            raise InputError(
                f"A prompt of task {self.name!r} is {batch['input_ids'].shape[1]} tokens, more than the model's "
                f"context of {self.window}: shorten its texts or its instruction."
            )
        return self.model(**batch, use_cache=False).loss

    @torch.no_grad()
    def predict(self, batch_size: int) -> torch.Tensor:
        """The label id of highest log-likelihood for every held-out example (N,)."""
        self.model.eval()
        classifier = PromptClassifier(self.model, self.tokenizer, self.template, self.data.names, batch_size=batch_size)
        texts = list(self.data.eval_x)
        return classifier.score(texts, [[] for _ in texts]).loglik.argmax(-1)

    def template_record(self) -> dict:
        return asdict(self.template)


def load_language_model(args) -> tuple[nn.Module, object]:
    """The causal LM of --model_name_or_path and its tokenizer (with a pad token); InputError for an encoder."""
    from ..models.kinds import is_text_encoder
    from ..models.loading import load_config

    if is_text_encoder(load_config(args.source)):
        raise InputError(
            f"{args.model_name_or_path} is an encoder: --multitask_format text_to_text writes answers with a causal LM "
            "(GPT-2, Llama, an hfssl GPT). Use --multitask_format heads for an encoder."
        )
    model, tokenizer = load_causal_lm(args.source, getattr(args, "trust_remote_code", False))
    return model, ensure_pad_token(tokenizer, model)


def load_text_to_text(output_dir: str | Path) -> tuple[nn.Module, object, dict[str, PromptTemplate]]:
    """(the causal LM, its tokenizer, each task's PromptTemplate by name) of a text-to-text multi-task run."""
    from ..run.results import MultitaskResult, load_result

    result = load_result(output_dir)
    if not isinstance(result, MultitaskResult) or result.args.get("multitask_format") != TEXT_TO_TEXT:
        raise InputError(f"{output_dir} holds no text-to-text multi-task run (its metrics.json is not one).")
    model, tokenizer = load_causal_lm(str(output_dir))
    templates = {name: PromptTemplate(**cast(dict, task["template"])) for name, task in result.tasks.items()}
    return model, tokenizer, templates


__all__ = [
    "FORMATS",
    "HEADS",
    "TEXT_TO_TEXT",
    "TextToTextTask",
    "answer_batch",
    "load_text_to_text",
    "parse_task_presets",
    "task_template",
]
