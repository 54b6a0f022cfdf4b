"""Attention heads of any causal LM, found generically: their number, their output projections, their attention
probabilities (eager mode) and their ablation.

Shapes: B = batch, T = tokens, L = layers, nh = heads per layer, hs = head size, V = vocabulary.

Every attention layer of a transformers decoder ends in an output projection whose input is the concatenation of the
heads' outputs, z = [z_0, ..., z_{nh-1}] of shape (B, T, nh * hs), head h being the slice [h * hs, (h + 1) * hs):
hfssl's GPT calls it `attn.out_proj`, llama-family models (SmolLM2, Mistral, Qwen) `self_attn.o_proj`, GPT-2
`attn.c_proj` (a Conv1D), GPT-NeoX `attention.dense`. Zeroing a head's slice there removes exactly that head's
contribution W_O[:, h] z_h from the residual stream (a bias of the projection stays: it belongs to no head).
"""

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..run.errors import InputError

# the last two parts of the name of an attention layer's output projection, by architecture family
OUTPUT_PROJECTIONS = (
    "attn.out_proj",  # hfssl GPT, GPT-J, GPT-Neo (attention.out_proj below)
    "self_attn.o_proj",  # llama, SmolLM2, Mistral, Qwen, Gemma
    "attn.c_proj",  # GPT-2 (a Conv1D; the MLP's `mlp.c_proj` is not matched)
    "self_attn.out_proj",  # OPT, BART-style decoders
    "attention.out_proj",  # GPT-Neo
    "attention.dense",  # GPT-NeoX / Pythia
    "self_attention.dense",  # Falcon, BLOOM
    "self_attn.dense",  # Phi
    "attn.o_proj",
)

Head = tuple[int, int]  # (layer, head), both from 0


@dataclass(frozen=True)
class HeadLayout:
    """Where the heads of a model are: L layers of nh heads of hs dimensions, and each layer's output projection
    (`out_projs[l]`, whose input is the (B, T, nh * hs) concatenation of layer l's head outputs)."""

    num_layers: int
    num_heads: int
    head_dim: int
    out_projs: tuple[nn.Module, ...]
    names: tuple[str, ...]  # the projections' module paths, e.g. "model.layers.0.self_attn.o_proj"

    @property
    def num_heads_total(self) -> int:
        return self.num_layers * self.num_heads

    def check(self, heads: Sequence[Head], what: str = "head") -> list[Head]:
        """`heads` as a list of (layer, head) pairs, after an InputError for the first one out of range or repeated."""
        seen: set[Head] = set()
        for layer, head in heads:
            if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
                raise InputError(
                    f"{what} {layer}.{head} does not exist: the model has layers 0-{self.num_layers - 1} with heads "
                    f"0-{self.num_heads - 1} each (written layer.head, counted from 0)."
                )
            if (layer, head) in seen:
                raise InputError(f"{what} {layer}.{head} is listed twice: name each head once.")
            seen.add((layer, head))
        return [(int(layer), int(head)) for layer, head in heads]


def _in_features(module: nn.Module) -> int | None:
    """The input width of a Linear (weight (out, in)) or of GPT-2's Conv1D (weight (in, out), `nx`)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    nx = getattr(module, "nx", None)
    if isinstance(nx, int):
        return nx
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def head_layout(model: nn.Module) -> HeadLayout:
    """The heads of `model`: its config's number of layers and heads, and each layer's output projection, found by
    name (`OUTPUT_PROJECTIONS`). InputError when the model's attention layers cannot be found or disagree with its
    config (an architecture hfssl does not know: name its projections in OUTPUT_PROJECTIONS)."""
    config = getattr(model, "config", None)
    num_layers = getattr(config, "num_hidden_layers", None)
    num_heads = getattr(config, "num_attention_heads", None)
    if not isinstance(num_layers, int) or not isinstance(num_heads, int) or num_heads < 1:
        raise InputError(
            f"{type(model).__name__} has no config with num_hidden_layers and num_attention_heads: cannot tell its "
            "attention heads apart."
        )
    found = [
        (name, module)
        for name, module in model.named_modules()
        if ".".join(name.split(".")[-2:]) in OUTPUT_PROJECTIONS and _in_features(module) is not None
    ]
    if len(found) != num_layers:
        raise InputError(
            f"Found {len(found)} attention output projections in {type(model).__name__} (modules named "
            f"{', '.join(OUTPUT_PROJECTIONS[:3])}, ...) for its {num_layers} layers: cannot locate its heads."
        )
    widths = {_in_features(module) for _, module in found}
    width = widths.pop() if len(widths) == 1 else None
    if width is None or width % num_heads:
        raise InputError(
            f"The attention output projections of {type(model).__name__} take {sorted(map(str, widths))} inputs, "
            f"not a multiple of its {num_heads} heads: cannot split them into heads."
        )
    return HeadLayout(
        num_layers=num_layers,
        num_heads=num_heads,
        head_dim=width // num_heads,
        out_projs=tuple(module for _, module in found),
        names=tuple(name for name, _ in found),
    )


_HEAD_SPEC = re.compile(r"^\s*(\d+)\s*\.\s*(\d+)\s*$")


def parse_heads(spec: str, flag: str = "--ablate_heads") -> list[Head]:
    """'L.H,L.H' (layers and heads counted from 0) -> [(L, H), ...]; InputError for a malformed or repeated entry.
    An empty string is no heads. Ranges are checked against a model by `HeadLayout.check`."""
    heads: list[Head] = []
    for part in spec.split(","):
        if not part.strip():
            continue
        match = _HEAD_SPEC.match(part)
        if match is None:
            raise InputError(f"{flag} takes layer.head pairs counted from 0, e.g. '0.3,1.0'; got {part.strip()!r}.")
        head = (int(match.group(1)), int(match.group(2)))
        if head in heads:
            raise InputError(f"{flag} lists head {head[0]}.{head[1]} twice: name each head once.")
        heads.append(head)
    return heads


def format_heads(heads: Sequence[Head]) -> str:
    """[(L, H), ...] -> 'L.H,L.H' (what `parse_heads` reads)."""
    return ",".join(f"{layer}.{head}" for layer, head in heads)


@contextlib.contextmanager
def scaled_heads(model: nn.Module, scale: torch.Tensor, layout: HeadLayout | None = None) -> Iterator[HeadLayout]:
    """Multiply each head's output by a factor while the block runs: z_h <- scale[l, h] * z_h at the input of layer
    l's output projection (forward pre-hooks, removed on exit, also after an error).

    scale: (L, nh), one factor per head for the whole batch, or (L, B, nh), one per head and batch row (so that
    several ablations run as one batch). 0 ablates a head (zero ablation), 1 keeps it. Layers whose factors are all
    1 get no hook at all, so an all-ones scale leaves every output bit for bit unchanged.
    """
    layout = layout or head_layout(model)
    if scale.dim() not in (2, 3) or scale.shape[0] != layout.num_layers or scale.shape[-1] != layout.num_heads:
        raise InputError(
            f"Head scales must have shape (L, nh) or (L, B, nh) with L = {layout.num_layers} and nh = "
            f"{layout.num_heads}; got {tuple(scale.shape)}."
        )

    def hook_for(layer_scale: torch.Tensor):
        # (nh,) -> (nh * hs,) or (B, nh) -> (B, 1, nh * hs): each head's factor repeated over its hs dimensions
        factors = layer_scale.repeat_interleave(layout.head_dim, dim=-1)
        if factors.dim() == 2:
            factors = factors.unsqueeze(1)

        def pre_hook(_module, args):
            z = args[0]  # (B, T, nh * hs)
            if factors.dim() == 3 and factors.shape[0] != z.shape[0]:
                raise InputError(f"Head scales are for a batch of {factors.shape[0]} rows; the model got {z.shape[0]}.")
            return (z * factors.to(device=z.device, dtype=z.dtype), *args[1:])

        return pre_hook

    handles = [
        projection.register_forward_pre_hook(hook_for(scale[layer]))
        for layer, projection in enumerate(layout.out_projs)
        if not bool((scale[layer] == 1).all())
    ]
    try:
        yield layout
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def ablate_heads(model: nn.Module, heads: Sequence[Head]) -> Iterator[None]:
    """Zero the outputs of `heads` ([(layer, head), ...], from 0) while the block runs:

        with ablate_heads(model, [(1, 3), (4, 0)]):
            logits = model(input_ids).logits

    Head h of layer l contributes W_O[:, h * hs:(h + 1) * hs] z_h to the residual stream; its slice z_h of the output
    projection's input is set to 0 (a forward pre-hook on `attn.out_proj` / `self_attn.o_proj` / `attn.c_proj`, see
    `head_layout`). No heads: nothing changes, and the model's heads are not even looked for (any model works).
    InputError for a head out of range or listed twice.
    """
    if not heads:
        yield
        return
    layout = head_layout(model)
    heads = layout.check(heads)
    scale = torch.ones(layout.num_layers, layout.num_heads)
    for layer, head in heads:
        scale[layer, head] = 0.0
    with scaled_heads(model, scale, layout):
        yield


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run `model` with the eager attention implementation inside the block, and restore its own afterwards.

    SDPA (transformers' default) and flash attention never form the attention probabilities, so
    `output_attentions=True` returns none with them; eager attention computes softmax(q k^T / sqrt(hs) + mask)
    explicitly and returns it. The numbers are the same up to float rounding.
    """
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    if before == "eager":
        yield
        return
    if setter is None:
        raise InputError(
            f"{type(model).__name__} cannot switch to eager attention (no set_attn_implementation): it cannot "
            "return its attention probabilities."
        )
    try:
        setter("eager")
    except (ValueError, ImportError) as err:
        raise InputError(
            f"{type(model).__name__} cannot run with eager attention, so it cannot return its attention "
            f"probabilities: {err}"
        ) from None
    try:
        yield
    finally:
        if before is not None:
            setter(before)


def forward_with_attentions(
    model: nn.Module, input_ids: torch.Tensor, layout: HeadLayout, **kwargs
) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """(the model's output, its attention probabilities: L tensors (B, nh, T, T)) of one eager forward pass over
    input_ids (B, T).

    InputError when the model does not return one (B, nh, T, T) tensor per layer (a model that cannot return its
    attention probabilities, such as one saved with an hfssl GPT file older than this feature and loaded with
    trust_remote_code)."""
    with eager_attention(model):
        try:
            output = model(input_ids=input_ids, output_attentions=True, **kwargs)
        except TypeError as err:
            if "output_attentions" not in str(err):  # a TypeError from inside the model is a bug: keep it
                raise
            raise InputError(f"{type(model).__name__} does not take output_attentions: {err}") from None
    attentions = getattr(output, "attentions", None)
    expected = (input_ids.shape[0], layout.num_heads, input_ids.shape[1], input_ids.shape[1])
    if (
        not attentions
        or len(attentions) != layout.num_layers
        or any(a is None or tuple(a.shape) != expected for a in attentions)
    ):
        got = "none" if not attentions else [None if a is None else tuple(a.shape) for a in attentions]
        raise InputError(
            f"{type(model).__name__} returned no attention probabilities in eager mode (expected {layout.num_layers} "
            f"tensors of shape {expected}, got {got}): it cannot be analysed by attention pattern."
        )
    return output, tuple(a.detach() for a in attentions)


__all__ = [
    "OUTPUT_PROJECTIONS",
    "Head",
    "HeadLayout",
    "ablate_heads",
    "eager_attention",
    "format_heads",
    "forward_with_attentions",
    "head_layout",
    "parse_heads",
    "scaled_heads",
]
