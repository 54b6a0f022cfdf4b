"""Induction heads, measured (Olsson et al. 2022, "In-context learning and induction heads"), for any causal LM that
returns its attention probabilities: hfssl's GPT, llama-family models such as SmolLM2, GPT-2.

An induction head completes A B ... A -> B: at the second A it attends to the token after the first A (prefix
matching) and raises the logit of that token, B (copying). Both are measured on random tokens repeated twice, where
only induction can predict the second copy:

    x = [BOS] t_1 ... t_T t_1 ... t_T        (P = 1 with a BOS, else 0; length S = P + 2T)

The T tokens of a copy are drawn uniformly without replacement from the vocabulary minus the special tokens (seeded),
so every token of the second copy has exactly one earlier occurrence. Shapes: B sequences, L layers, nh heads.

*Prefix-matching score* of head (l, h): the mean attention from each token of the second copy to the token right
after its earlier occurrence, over the B sequences and the T positions i = 0 .. T-1 of the second copy:

    prefix[l, h] = 1/(B T) sum_b sum_i A[l, b, h, q_i, q_i - T + 1],     q_i = P + T + i

A perfect induction head scores 1; a head attending uniformly over its causal context scores
mean_i 1 / (q_i + 1) (`uniform_attention_score`), its chance level. TransformerLens's
`detect_head(model, tokens, "induction_head")` (error_measure "mul", one sequence) divides the same sum by all S rows
instead of the T of the second copy: its score is T / S times this one on the same tokens.

*Copying score* of head (l, h): how much the head raises the logit of the token it should copy. On the second copy
the correct next token at q_i (i < T-1) is y_i = t_{i+2}, the token after the earlier occurrence, i.e. exactly the
token a prefix-matching head attends to. Two definitions (`method`):

- "direct" (the default): the head's *direct* effect on that logit (direct logit attribution, as TransformerLens's
  `stack_head_results` + `apply_ln_to_stack` + unembedding). The head writes c = W_O[:, h] z_h into the residual
  stream (W_O: its layer's output projection, z_h: the head's slice of its input); the final norm, with its
  statistics frozen at the residual stream x of the same forward pass, maps c to
  N(c) = gamma * (c - mean(c)) / sigma(x) (LayerNorm; gamma * c / rms(x) for RMSNorm), and the unembedding W_U to
  logits:

      copying[l, h] = 1/(B (T-1)) sum_b sum_{i<T-1} (W_U[y_i] - mean_v W_U[v]) . N(c_{l,h}(q_i))

  in logit units, relative to the mean logit (shifting every logit changes no probability). One forward pass scores
  every head: the one that reads the attention. Only the direct path counts, so a previous-token head that an
  induction head relies on scores about 0. InputError when the final norm is of neither form (checked: the
  frozen-statistics formula must reproduce the norm's output); "ablation" works for any model.
- "ablation": the head's *total* effect on the log-probability of that token, measured by zeroing it
  (`ablate_heads`):

      copying[l, h] = 1/(B (T-1)) sum_b sum_{i<T-1} [log p(y_i | x_{<=q_i}) - log p_{-(l,h)}(y_i | x_{<=q_i})]

  in nats. Counts every path: a previous-token head that an induction head relies on scores high too, and heads that
  duplicate each other each score low. One forward pass per head (`max_batch_rows` rows at a time).

Both are behavioural (this model, on these tokens) rather than Olsson et al.'s weight-only OV-circuit score (the
share of positive eigenvalues of W_U W_O W_V W_E), which ignores the layer norms and is defined only for the heads of
the first layer, or through approximations beyond it.

*In-context learning score* (Olsson et al.'s sign): on held-out text, the loss at a late token minus the loss at an
early one, averaged over sequences; negative when later tokens are predicted better, i.e. the model uses its
context:

    icl = 1/N sum_n [ -log p(x_late | x_<late) + log p(x_early | x_<early) ]    (1-based token positions, 500 and 50)

with a percentile bootstrap interval over the N sequences (seeded).

Attention probabilities exist only with the *eager* attention implementation: SDPA (transformers' default) and flash
attention never form them, and `output_attentions=True` returns nothing there. The functions here switch the model to
eager for the one forward pass that reads them and restore its own implementation afterwards (`eager_attention`).
"""

import contextlib
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.helpers import context_window
from ..run.errors import InputError
from .heads import Head, HeadLayout, forward_with_attentions, head_layout, scaled_heads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepeatedTokens:
    """Random tokens repeated twice: input_ids (B, P + 2T), `seq_len` T, `prefix` P (1 with a BOS, else 0)."""

    input_ids: torch.Tensor
    seq_len: int
    prefix: int

    @property
    def queries(self) -> torch.Tensor:
        """Positions of the second copy's tokens: q_i = P + T + i, i = 0 .. T-1 (T,)."""
        return torch.arange(self.prefix + self.seq_len, self.prefix + 2 * self.seq_len)


def _vocabulary(model: nn.Module, tokenizer) -> tuple[int, set[int]]:
    """(ids to draw from: 0 .. V-1, special ids to leave out)."""
    candidates = [getattr(model.config, "vocab_size", None), len(tokenizer) if tokenizer is not None else None]
    sizes = [s for s in candidates if isinstance(s, int) and s > 0]
    if not sizes:
        raise InputError(f"{type(model).__name__}'s config names no vocab_size, and no tokenizer was given.")
    special: set[int] = set()
    if tokenizer is not None:
        special.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(model.config, name, None)
        special.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
    return min(sizes), special


def bos_token_id(model: nn.Module, tokenizer=None) -> int | None:
    """The BOS id a sequence would start with: the tokenizer's, else the model config's (None: it has none)."""
    found = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    if found is None:
        found = getattr(model.config, "bos_token_id", None)
    return found if isinstance(found, int) else None


def repeated_random_tokens(
    model: nn.Module,
    tokenizer=None,
    *,
    seq_len: int = 50,
    batch_size: int = 4,
    seed: int = 0,
    prepend_bos: bool | None = None,
) -> RepeatedTokens:
    """B = batch_size sequences [BOS] t_1..t_T t_1..t_T with T = seq_len tokens drawn uniformly without replacement
    from the vocabulary minus the special tokens (torch.Generator seeded with `seed`).

    prepend_bos: None prepends the tokenizer's (or config's) BOS when there is one, as TransformerLens does by
    default (models such as GPT-2 and SmolLM2 park attention on the first token); True requires one; False never.
    InputError when T < 2, the sequence (P + 2T tokens) is longer than the model's context window, or the vocabulary
    has fewer than T ordinary tokens.
    """
    if seq_len < 2 or batch_size < 1:
        raise InputError(f"Repeated sequences need seq_len >= 2 and batch_size >= 1, got {seq_len} and {batch_size}.")
    bos = bos_token_id(model, tokenizer)
    if prepend_bos and bos is None:
        raise InputError(f"prepend_bos=True, but neither the tokenizer nor {type(model).__name__}'s config has a BOS.")
    use_bos = bos is not None if prepend_bos is None else prepend_bos
    prefix = int(use_bos)
    length = prefix + 2 * seq_len
    window = context_window(model)
    if window is not None and length > window:
        raise InputError(
            f"A random sequence of {seq_len} tokens repeated twice{' after a BOS' if prefix else ''} is {length} "
            f"tokens, longer than the model's context window (max_position_embeddings = {window}): use a seq_len of "
            f"at most {(window - prefix) // 2}."
        )
    vocab_size, special = _vocabulary(model, tokenizer)
    allowed = torch.tensor([i for i in range(vocab_size) if i not in special], dtype=torch.long)
    if len(allowed) < seq_len:
        raise InputError(
            f"The vocabulary has {len(allowed)} ordinary tokens, fewer than seq_len = {seq_len}: a copy must not "
            "repeat a token. Use a shorter seq_len."
        )
    generator = torch.Generator().manual_seed(seed)
    copies = torch.stack(
        [allowed[torch.randperm(len(allowed), generator=generator)[:seq_len]] for _ in range(batch_size)]
    )
    parts = [torch.full((batch_size, 1), bos, dtype=torch.long)] if use_bos and bos is not None else []
    input_ids = torch.cat([*parts, copies, copies], dim=1)
    return RepeatedTokens(input_ids=input_ids, seq_len=seq_len, prefix=prefix)


def prefix_matching_from_attentions(
    attentions: torch.Tensor | Sequence[torch.Tensor], seq_len: int, prefix: int = 0
) -> torch.Tensor:
    """prefix[l, h] = mean over b and i of A[l, b, h, q_i, q_i - T + 1], q_i = P + T + i (see the module docstring).

    attentions: (L, B, nh, S, S) attention probabilities (rows: queries, columns: keys) on repeated tokens with
    S = P + 2T, or L tensors (B, nh, S, S) (what `output_attentions=True` returns); one (B, nh, S, S) tensor is one
    layer. Returns (L, nh) (or (nh,) for one layer).
    """
    if not isinstance(attentions, torch.Tensor):  # layer by layer: no second copy of every layer's attention
        return torch.stack([prefix_matching_from_attentions(a, seq_len, prefix) for a in attentions])
    one_layer = attentions.dim() == 4
    if one_layer:
        attentions = attentions.unsqueeze(0)
    expected = prefix + 2 * seq_len
    if attentions.dim() != 5 or attentions.shape[-1] != expected or attentions.shape[-2] != expected:
        raise InputError(
            f"Attention probabilities must be (L, B, nh, S, S) with S = P + 2T = {expected}; got "
            f"{tuple(attentions.shape)}."
        )
    queries = torch.arange(prefix + seq_len, prefix + 2 * seq_len, device=attentions.device)
    keys = queries - seq_len + 1
    scores = attentions[..., queries, keys].float().mean(dim=(1, 3))  # (L, B, nh, T) -> (L, nh)
    return scores[0] if one_layer else scores


def uniform_attention_score(seq_len: int, prefix: int = 0) -> float:
    """The prefix-matching score of a head that attends uniformly to its causal context: mean_i 1 / (q_i + 1)."""
    return sum(1.0 / (q + 1) for q in range(prefix + seq_len, prefix + 2 * seq_len)) / seq_len


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """eval mode and no gradients inside; the model's own training mode restored after."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _takes_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def prefix_matching_scores(model: nn.Module, tokens: RepeatedTokens, layout: HeadLayout | None = None) -> torch.Tensor:
    """Prefix-matching score of every head, (L, nh), from one eager forward pass over `tokens` (B sequences)."""
    layout = layout or head_layout(model)
    with _inference(model):
        _, attentions = forward_with_attentions(model, tokens.input_ids.to(_device(model)), layout)
    return prefix_matching_from_attentions(attentions, tokens.seq_len, tokens.prefix).cpu()


def _second_copy_logprobs(model: nn.Module, input_ids: torch.Tensor, tokens: RepeatedTokens) -> torch.Tensor:
    """log p(x_{q_i + 1} | x_{<= q_i}) for i = 0 .. T-2 of the second copy: (rows, T - 1)."""
    T = tokens.seq_len
    if _takes_logits_to_keep(model):  # the last T positions (the second copy) only: no (rows, S, V) logits
        logits = model(input_ids=input_ids, logits_to_keep=T).logits[:, :-1]
    else:
        logits = model(input_ids=input_ids).logits[:, tokens.prefix + T : -1]
    targets = input_ids[:, tokens.prefix + T + 1 :]  # (rows, T - 1)
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


COPYING_METHODS = ("direct", "ablation")
# the last part of the name of the norm before the unembedding: llama / hfssl GPT, GPT-2, Phi, GPT-NeoX / OPT, Mamba
_FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f")


def _final_norm(model: nn.Module) -> nn.Module:
    """The norm between the last layer and the unembedding (a module named `_FINAL_NORMS`, outside the layers)."""
    found = [
        module
        for name, module in model.named_modules()
        if name.split(".")[-1] in _FINAL_NORMS and not any(part.isdigit() for part in name.split("."))
    ]
    if len(found) != 1:
        raise InputError(
            f"Cannot find the final norm of {type(model).__name__} (a module named {', '.join(_FINAL_NORMS)} outside "
            f"its layers; found {len(found)}): use the ablation copying score (--copying_method ablation)."
        )
    return found[0]


def _output_matrix(projection: nn.Module) -> torch.Tensor:
    """W_O of an output projection as (d, nh * hs), so that its output is W_O z: a Linear's weight, a Conv1D's
    (GPT-2, y = z W) transposed."""
    weight = projection.weight
    assert isinstance(weight, torch.Tensor)  # head_layout found its input width
    return weight.t() if getattr(projection, "nf", None) is not None else weight


def _frozen_norm(norm: nn.Module, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(gamma (d,), 1 / sigma(x) (..., 1), centred) of a final norm h = gamma * (x - [mean x]) / sigma(x) + beta
    (LayerNorm: centred; RMSNorm: not), with sigma(x) = sqrt(mean((x - [mean x])^2) + eps) read from its input x.
    InputError unless this formula rebuilds the norm's own output h (any other norm cannot be frozen like this)."""
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    eps = next((e for e in (getattr(norm, "eps", None), getattr(norm, "variance_epsilon", None)) if e is not None), 0.0)
    centred = isinstance(norm, nn.LayerNorm) or isinstance(bias, torch.Tensor)
    gamma = weight.float() if isinstance(weight, torch.Tensor) else torch.ones(x.shape[-1], device=x.device)
    xc = x - x.mean(-1, keepdim=True) if centred else x
    inverse_sigma = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + float(eps))
    rebuilt = gamma * xc * inverse_sigma + (bias.float() if isinstance(bias, torch.Tensor) else 0.0)
    if rebuilt.shape != h.shape or not torch.allclose(rebuilt, h, rtol=1e-3, atol=1e-3 * (1 + h.abs().max().item())):
        raise InputError(
            f"The final norm of this model ({type(norm).__name__}) is neither a LayerNorm nor an RMSNorm of the "
            "usual form, so the direct copying score cannot freeze it: use --copying_method ablation."
        )
    return gamma, inverse_sigma, centred


@contextlib.contextmanager
def _recording(layout: HeadLayout, norm: nn.Module) -> Iterator[dict]:
    """Record, during the forward passes inside, each layer's head outputs z (B, S, nh * hs) at its output
    projection's input, and the final norm's input x and output h (B, S, d)."""
    record: dict = {"z": [None] * layout.num_layers}

    def z_hook(layer: int):
        def hook(_module, args):
            record["z"][layer] = args[0].detach()

        return hook

    def norm_hook(_module, args, output):
        record["x"], record["h"] = args[0].detach(), (output[0] if isinstance(output, tuple) else output).detach()

    handles = [projection.register_forward_pre_hook(z_hook(i)) for i, projection in enumerate(layout.out_projs)]
    handles.append(norm.register_forward_hook(norm_hook))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _direct_copying(
    model: nn.Module, record: dict, tokens: RepeatedTokens, layout: HeadLayout, norm: nn.Module
) -> torch.Tensor:
    """The direct copying score (L, nh) of every head from one recorded forward pass (see the module docstring)."""
    T, P = tokens.seq_len, tokens.prefix
    B, nh, hs = tokens.input_ids.shape[0], layout.num_heads, layout.head_dim
    where = slice(P + T, P + 2 * T - 1)  # q_0 .. q_{T-2}: the positions that predict a token of the second copy
    x, h = record["x"][:, where].float(), record["h"][:, where].float()  # (B, T-1, d)
    gamma, inverse_sigma, centred = _frozen_norm(norm, x, h)
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    unembedding = get_output_embeddings() if callable(get_output_embeddings) else None
    w_u = getattr(unembedding, "weight", None)
    if not isinstance(w_u, torch.Tensor) or w_u.dim() != 2 or w_u.shape[1] != x.shape[-1]:
        raise InputError(
            f"The unembedding of {type(model).__name__} is not a (V, d) matrix: use --copying_method ablation."
        )
    w_u = w_u.float()
    targets = tokens.input_ids[:, P + T + 1 :].to(w_u.device)  # y_i = t_{i+2}: (B, T-1)
    readout = gamma * (w_u[targets] - w_u.mean(dim=0)) * inverse_sigma  # (B, T-1, d): reads a logit off c
    if centred:  # LayerNorm subtracts mean(c) first: (r . (c - mean c)) = ((r - mean r) . c)
        readout = readout - readout.mean(-1, keepdim=True)
    scores = []
    for layer, projection in enumerate(layout.out_projs):
        w_o = _output_matrix(projection).float()  # (d, nh * hs)
        if w_o.shape[0] != readout.shape[-1]:
            raise InputError(
                f"{layout.names[layer]} does not write the residual stream: use --copying_method ablation."
            )
        z = record["z"][layer][:, where].float().reshape(B, T - 1, nh, hs)
        per_head = torch.einsum("btd,dnk->btnk", readout, w_o.view(-1, nh, hs))  # what a unit of z_h adds to the logit
        scores.append((per_head * z).sum(-1).mean(dim=(0, 1)))  # (nh,)
    return torch.stack(scores).cpu()


def copying_scores(
    model: nn.Module,
    tokens: RepeatedTokens,
    heads: Sequence[Head] | None = None,
    *,
    method: str = "direct",
    max_batch_rows: int = 32,
    layout: HeadLayout | None = None,
) -> torch.Tensor:
    """Copying score (see the module docstring) of `heads` (default: all), (L, nh); heads not measured are NaN.

    method "direct": logit units, every head from one forward pass. "ablation": nats, one forward pass per head,
    several sharing a batch: each copy of the B sequences in a batch of at most `max_batch_rows` rows has a different
    head zeroed (`scaled_heads` with per-row factors).
    """
    if method not in COPYING_METHODS:
        raise InputError(f"The copying score's method must be one of {', '.join(COPYING_METHODS)}, got {method!r}.")
    layout = layout or head_layout(model)
    heads = layout.check(
        heads if heads is not None else [(i, h) for i in range(layout.num_layers) for h in range(layout.num_heads)]
    )
    scores = torch.full((layout.num_layers, layout.num_heads), float("nan"))
    input_ids = tokens.input_ids.to(_device(model))
    if method == "direct":
        norm = _final_norm(model)
        with _inference(model), _recording(layout, norm) as record:
            model(input_ids=input_ids)
        direct = _direct_copying(model, record, tokens, layout, norm)
        for measured in heads:
            scores[measured] = direct[measured]
        return scores
    B = tokens.input_ids.shape[0]
    per_pass = max(1, max_batch_rows // B)
    with _inference(model):
        clean = _second_copy_logprobs(model, input_ids, tokens).mean().item()
        for start in range(0, len(heads), per_pass):
            chunk = heads[start : start + per_pass]
            scale = torch.ones(layout.num_layers, len(chunk) * B, layout.num_heads)
            for k, (layer, head) in enumerate(chunk):
                scale[layer, k * B : (k + 1) * B, head] = 0.0
            with scaled_heads(model, scale, layout):
                ablated = _second_copy_logprobs(model, input_ids.repeat(len(chunk), 1), tokens)
            for k, mean in enumerate(ablated.view(len(chunk), -1).mean(dim=1).tolist()):
                scores[chunk[k]] = clean - mean
    return scores


@dataclass
class InductionScores:
    """Per-head scores on repeated random tokens: prefix_matching and copying (L, nh) (copying NaN where not
    measured, None when not asked for), with what they were measured on and how long it took."""

    prefix_matching: torch.Tensor
    copying: torch.Tensor | None
    copying_method: str  # "direct" (logit units) or "ablation" (nats)
    chance: float  # prefix-matching score of uniform attention
    seq_len: int
    batch_size: int
    prefix: int
    seed: int
    loss_first_copy: float  # mean loss on the first copy (random tokens: no way to predict them)
    loss_second_copy: float  # ... and on the second (low when the model copies from context)
    seconds: dict[str, float] = field(default_factory=dict)

    def top_heads(self, k: int = 10) -> list[Head]:
        """The k heads with the highest prefix-matching score, best first (ties by layer, then head)."""
        flat = self.prefix_matching.flatten()
        order = sorted(range(len(flat)), key=lambda i: (-float(flat[i]), i))[:k]
        nh = self.prefix_matching.shape[1]
        return [(i // nh, i % nh) for i in order]

    def to_dict(self) -> dict:
        return {
            "prefix_matching": self.prefix_matching.tolist(),
            "copying": None if self.copying is None else _nan_to_none(self.copying.tolist()),
            "copying_method": self.copying_method,
            "chance": self.chance,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "prefix": self.prefix,
            "seed": self.seed,
            "loss_first_copy": self.loss_first_copy,
            "loss_second_copy": self.loss_second_copy,
            "seconds": self.seconds,
        }


def _nan_to_none(rows: list[list[float]]) -> list[list[float | None]]:
    return [[None if v != v else v for v in row] for row in rows]  # JSON has no NaN


def induction_scores(
    model: nn.Module,
    tokenizer=None,
    *,
    seq_len: int = 50,
    batch_size: int = 4,
    seed: int = 0,
    prepend_bos: bool | None = None,
    copying: bool | int = True,
    copying_method: str = "direct",
    max_batch_rows: int = 32,
) -> InductionScores:
    """Prefix-matching and copying scores of every head on `batch_size` random sequences of `seq_len` tokens
    repeated twice (`repeated_random_tokens`).

    copying: True scores every head, an int k only the k best heads by prefix matching (the rest NaN), False none.
    copying_method: "direct" (read from the same forward pass as the attention) or "ablation" (one pass per head).
    """
    if copying_method not in COPYING_METHODS:
        raise InputError(f"copying_method must be one of {', '.join(COPYING_METHODS)}, got {copying_method!r}.")
    layout = head_layout(model)
    tokens = repeated_random_tokens(
        model, tokenizer, seq_len=seq_len, batch_size=batch_size, seed=seed, prepend_bos=prepend_bos
    )
    direct = copying is not False and copying_method == "direct"
    norm = _final_norm(model) if direct else None
    started = time.perf_counter()
    with _inference(model), contextlib.ExitStack() as stack:
        record = stack.enter_context(_recording(layout, norm)) if norm is not None else {}
        output, attentions = forward_with_attentions(model, tokens.input_ids.to(_device(model)), layout)
    prefix = prefix_matching_from_attentions(attentions, seq_len, tokens.prefix).cpu()
    losses = _token_losses(output.logits, tokens.input_ids.to(output.logits.device))  # (B, S - 1)
    first = losses[:, tokens.prefix : tokens.prefix + seq_len - 1].mean().item()  # predicting t_2 .. t_T
    second = losses[:, tokens.prefix + seq_len :].mean().item()  # predicting the second copy's t_2 .. t_T
    seconds = {"prefix_matching": time.perf_counter() - started}
    scores = InductionScores(
        prefix_matching=prefix,
        copying=None,
        copying_method=copying_method,
        chance=uniform_attention_score(seq_len, tokens.prefix),
        seq_len=seq_len,
        batch_size=batch_size,
        prefix=tokens.prefix,
        seed=seed,
        loss_first_copy=first,
        loss_second_copy=second,
        seconds=seconds,
    )
    if copying is not False:
        started = time.perf_counter()
        heads = None if copying is True else scores.top_heads(int(copying))
        if norm is not None:  # direct: from the pass above
            scores.copying = _direct_copying(model, record, tokens, layout, norm)
            if heads is not None:  # the top heads only, as asked
                kept = torch.zeros_like(scores.copying, dtype=torch.bool)
                for head in heads:
                    kept[head] = True
                scores.copying[~kept] = float("nan")
        else:
            scores.copying = copying_scores(
                model, tokens, heads, method="ablation", max_batch_rows=max_batch_rows, layout=layout
            )
        seconds["copying"] = time.perf_counter() - started
    return scores


def _token_losses(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """-log p(x_{t+1} | x_{<=t}) for t = 0 .. S-2: (B, S - 1)."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logprobs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class ICLScore:
    """In-context learning score (loss at token `late` minus loss at token `early`, mean over sequences; negative
    when the model learns in context) with its bootstrap interval [low, high] at `confidence`."""

    score: float
    low: float
    high: float
    early_loss: float
    late_loss: float
    early: int
    late: int
    num_sequences: int
    confidence: float
    num_bootstrap: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _as_rows(sequences, late: int) -> torch.Tensor:
    """The first `late` tokens of each sequence: (N, late) long. InputError for a shorter one."""
    rows = list(sequences) if not isinstance(sequences, torch.Tensor) or sequences.dim() == 2 else [sequences]
    if not rows:
        raise InputError("The in-context learning score needs at least one sequence of tokens.")
    short = [(n, len(r)) for n, r in enumerate(rows) if len(r) < late]
    if short:
        n, length = short[0]
        raise InputError(
            f"{len(short)} of {len(rows)} sequences are shorter than the late position {late} (sequence {n} has "
            f"{length} tokens): use longer texts or a smaller late position."
        )
    return torch.stack([torch.as_tensor(r[:late], dtype=torch.long) for r in rows])


def in_context_learning_score(
    model: nn.Module,
    sequences: torch.Tensor | Sequence[Sequence[int] | torch.Tensor],
    *,
    early: int = 50,
    late: int = 500,
    batch_size: int = 8,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ICLScore:
    """Olsson et al.'s in-context learning score on held-out token sequences (N, >= late), 1-based positions:

        icl = 1/N sum_n [ loss_n(late) - loss_n(early) ],   loss_n(p) = -log p(x_p | x_1 .. x_{p-1})

    and the percentile bootstrap interval of that mean: `num_bootstrap` resamples of the N sequences with
    replacement (torch.Generator seeded with `seed`), cut at (1 - confidence) / 2 on each side. Each sequence is read
    up to its `late`-th token only. InputError unless 2 <= early < late <= the model's context window and every
    sequence has at least `late` tokens.
    """
    if not 2 <= early < late:
        raise InputError(
            f"The in-context learning score needs 2 <= early < late (1-based token positions; the first token has "
            f"no prediction), got early = {early}, late = {late}."
        )
    window = context_window(model)
    if window is not None and late > window:
        raise InputError(
            f"The late position {late} is beyond the model's context window (max_position_embeddings = {window}): "
            f"use a late position of at most {window}."
        )
    if not 0 < confidence < 1 or num_bootstrap < 1 or batch_size < 1:
        raise InputError(
            f"Need 0 < confidence < 1, num_bootstrap >= 1 and batch_size >= 1; got {confidence}, {num_bootstrap}, "
            f"{batch_size}."
        )
    rows = _as_rows(sequences, late)
    # logits at 0-based positions early-2 and late-2 predict the tokens at early-1 and late-1
    positions = torch.tensor([early - 2, late - 2])
    losses = []
    with _inference(model):
        device = _device(model)
        keep = _takes_logits_to_keep(model)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size, : late - 1].to(device)
            if keep:
                logits = model(input_ids=batch, logits_to_keep=positions.to(device)).logits
            else:
                logits = model(input_ids=batch).logits[:, positions.to(device)]
            targets = rows[start : start + batch_size, positions + 1].to(device)
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            losses.append(-logprobs.cpu())  # (b, 2): early, late
    loss = torch.cat(losses).double()
    diffs = loss[:, 1] - loss[:, 0]
    generator = torch.Generator().manual_seed(seed)
    resampled = diffs[torch.randint(len(diffs), (num_bootstrap, len(diffs)), generator=generator)].mean(dim=1)
    tail = (1 - confidence) / 2
    low, high = torch.quantile(resampled, torch.tensor([tail, 1 - tail], dtype=torch.double)).tolist()
    return ICLScore(
        score=diffs.mean().item(),
        low=low,
        high=high,
        early_loss=loss[:, 0].mean().item(),
        late_loss=loss[:, 1].mean().item(),
        early=early,
        late=late,
        num_sequences=len(diffs),
        confidence=confidence,
        num_bootstrap=num_bootstrap,
    )


__all__ = [
    "ICLScore",
    "InductionScores",
    "RepeatedTokens",
    "bos_token_id",
    "copying_scores",
    "in_context_learning_score",
    "induction_scores",
    "prefix_matching_from_attentions",
    "prefix_matching_scores",
    "repeated_random_tokens",
    "uniform_attention_score",
]
