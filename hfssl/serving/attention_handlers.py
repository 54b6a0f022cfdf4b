"""The attention tab's handlers: one head's attention on a prompt as a token x token picture, and the heads ranked by
their induction scores (`hfssl.analysis`: prefix matching and direct copying on repeated random tokens)."""

import html

import pandas as pd
import torch

from ..analysis.heads import format_heads, forward_with_attentions, head_layout
from ..analysis.induction import induction_scores
from ..models.helpers import context_window
from ..run.errors import InputError
from .model_store import ModelStore

MAX_ATTENTION_TOKENS = 64  # a picture of more is unreadable
TOP_HEADS = 10
SCAN_SEQ_LEN = 25  # tokens of each random copy in the ranking (the demo's quick scan; the script defaults to 50)
SCAN_SEQUENCES = 2


def _scan_length(model) -> int:
    """T of the ranking's repeated random tokens: SCAN_SEQ_LEN, or what fits the context with a BOS."""
    window = context_window(model)
    return SCAN_SEQ_LEN if window is None else max(2, min(SCAN_SEQ_LEN, (window - 1) // 2))


def induction_ranking(store: ModelStore, name: str, top_k: int = TOP_HEADS) -> pd.DataFrame:
    """The `top_k` heads by prefix-matching score, with their direct copying scores (logit units; blank when the
    model's final norm is of a form the direct score cannot freeze) and the chance level of prefix matching."""
    model, tokenizer = store.causal_lm(name)
    seq_len = _scan_length(model)
    try:
        scores = induction_scores(
            model, tokenizer, seq_len=seq_len, batch_size=SCAN_SEQUENCES, copying=int(top_k), copying_method="direct"
        )
    except InputError as err:
        if "final norm" not in str(err):
            raise
        scores = induction_scores(model, tokenizer, seq_len=seq_len, batch_size=SCAN_SEQUENCES, copying=False)
    rows = []
    for rank, head in enumerate(scores.top_heads(int(top_k)), start=1):
        copying = None if scores.copying is None else float(scores.copying[head])
        rows.append(
            {
                "rank": rank,
                "head": format_heads([head]),
                "prefix matching": round(float(scores.prefix_matching[head]), 3),
                "copying (logit)": None if copying is None or copying != copying else round(copying, 3),
                "chance": round(scores.chance, 3),
            }
        )
    return pd.DataFrame(rows)


def _token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Each token as text, with spaces and newlines made visible."""
    return [tokenizer.decode([i]).replace(" ", "·").replace("\n", "⏎") or f"<{i}>" for i in ids]


def attention_pattern(
    store: ModelStore, name: str, prompt: str, layer: int, head: int
) -> tuple[torch.Tensor, list[str]]:
    """(A, tokens): head (layer, head)'s attention probabilities on the prompt, (T, T) with A[q, k] the weight query
    token q gives key token k (rows sum to 1, zero above the diagonal), and the T tokens as text. The tokenizer's
    BOS is not added: the picture shows the prompt's own tokens."""
    model, tokenizer = store.causal_lm(name)
    layout = head_layout(model)
    ((layer, head),) = layout.check([(int(layer), int(head))])
    ids = tokenizer(prompt or "", add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError("Write a prompt first.")
    if len(ids) > MAX_ATTENTION_TOKENS:
        raise InputError(
            f"The prompt is {len(ids)} tokens; the picture shows at most {MAX_ATTENTION_TOKENS}: shorten it."
        )
    device = next(model.parameters()).device
    with torch.no_grad():
        _, attentions = forward_with_attentions(model, torch.tensor([ids], device=device), layout)
    return attentions[layer][0, head].float().cpu(), _token_labels(tokenizer, ids)


def attention_html(pattern: torch.Tensor, tokens: list[str]) -> str:
    """The (T, T) pattern as an HTML table: a row per query token, a column per key token, each cell shaded by its
    weight (white 0 to dark blue 1) with the weight in its tooltip."""
    cell = "width:14px;height:14px;padding:0;border:1px solid #eee"
    head_cells = "".join(
        f'<th style="writing-mode:vertical-rl;font-weight:normal;font-size:11px">{html.escape(t)}</th>' for t in tokens
    )
    rows = []
    for q, token in enumerate(tokens):
        cells = "".join(
            f'<td title="{html.escape(tokens[q])} → {html.escape(tokens[k])}: {w:.3f}" '
            f'style="{cell};background:rgba(30,70,160,{w:.3f})"></td>'
            for k, w in enumerate(pattern[q].tolist())
        )
        rows.append(
            f'<tr><th style="text-align:right;font-weight:normal;font-size:11px">{html.escape(token)}</th>{cells}</tr>'
        )
    return (
        '<div style="overflow:auto"><table style="border-collapse:collapse">'
        f"<tr><th></th>{head_cells}</tr>{''.join(rows)}</table>"
        "<p style='font-size:12px'>rows: the token attending (query); columns: the token attended to (key)</p></div>"
    )


def show_attention(store: ModelStore, name: str, prompt: str, layer: int, head: int) -> tuple[str, str]:
    """(the picture as HTML, a caption naming the head and its strongest link for each query token)."""
    pattern, tokens = attention_pattern(store, name, prompt, layer, head)
    strongest = pattern.argmax(dim=1).tolist()
    previous = sum(1 for q, k in enumerate(strongest) if q > 0 and k == q - 1)
    caption = (
        f"**Head {int(layer)}.{int(head)}** on {len(tokens)} tokens: {previous} of {len(tokens) - 1} tokens attend "
        "most to the token just before them (a previous-token head does this for all); an induction head attends "
        "to the token after an earlier copy of the current one (try a prompt that repeats itself)."
    )
    return attention_html(pattern, tokens), caption


__all__ = ["MAX_ATTENTION_TOKENS", "attention_html", "attention_pattern", "induction_ranking", "show_attention"]
