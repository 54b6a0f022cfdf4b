"""What post-training changed, on held-out rows: answers generated greedily and checked (accuracy, share in the
required format), and a reward model's pairwise accuracy (reward(chosen) > reward(rejected))."""

from collections import defaultdict

import datasets
import torch

from ..data.instructions import check_response
from ..models.chat import generate_answers, has_chat_template, prompt_text


def answer_scores(model, tokenizer, rows: datasets.Dataset, max_new_tokens: int, batch_size: int) -> dict[str, float]:
    """Accuracy and format share of greedy answers to rows with `task` and `answer` columns (hfssl.data.instructions):
    over all rows (`answer_accuracy`, `format_share`) and per task (`accuracy/<task>`, `format/<task>`)."""
    answers = generate_answers(model, tokenizer, rows["prompt"], max_new_tokens, batch_size)
    by_task: dict[str, list] = defaultdict(list)
    for task, answer, response in zip(rows["task"], rows["answer"], answers, strict=True):
        by_task[task].append(check_response(task, response, answer))
    checks = [c for task_checks in by_task.values() for c in task_checks]
    scores = {
        "answer_accuracy": sum(c.correct for c in checks) / len(checks),
        "format_share": sum(c.formatted for c in checks) / len(checks),
    }
    for task, task_checks in sorted(by_task.items()):
        scores[f"accuracy/{task}"] = sum(c.correct for c in task_checks) / len(task_checks)
        scores[f"format/{task}"] = sum(c.formatted for c in task_checks) / len(task_checks)
    return scores


def _scored_text(tokenizer, prompt: str, response: str) -> str:
    """prompt + response as the reward trainer reads them (the chat template, or `prompt\\nresponse<eos>`)."""
    if has_chat_template(tokenizer):
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(chat, tokenize=False)
    return prompt_text(tokenizer, prompt) + response + (tokenizer.eos_token or "")


@torch.no_grad()
def rewards(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int) -> torch.Tensor:
    """(N,) the reward model's score of each (prompt, response)."""
    model.eval()
    scores = []
    for start in range(0, len(prompts), batch_size):
        texts = [
            _scored_text(tokenizer, p, r)
            for p, r in zip(prompts[start : start + batch_size], responses[start : start + batch_size], strict=True)
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        scores.append(model(**batch).logits[:, 0].float().cpu())
    return torch.cat(scores)


def pairwise_accuracy(model, tokenizer, rows: datasets.Dataset, batch_size: int) -> dict[str, float]:
    """Share of held-out pairs whose chosen response the reward model scores above the rejected one."""
    chosen = rewards(model, tokenizer, rows["prompt"], rows["chosen"], batch_size)
    rejected = rewards(model, tokenizer, rows["prompt"], rows["rejected"], batch_size)
    return {
        "pairwise_accuracy": (chosen > rejected).float().mean().item(),
        "mean_margin": (chosen - rejected).mean().item(),
    }
