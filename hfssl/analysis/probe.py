"""Induction measured during pretraining: a fixed small probe, scored every N optimizer steps.

Olsson et al. (2022) saw induction heads form in a sudden phase change that coincides with the drop of the
in-context learning score. `InductionProbe` makes both visible in a training run at little cost: its inputs are built
once (seeded) and scored with two forward passes, so the curves of one run are comparable step to step:

- B = `batch_size` random sequences of T tokens repeated twice (`repeated_random_tokens`): the prefix-matching score
  of every head (the best one is logged, with its index l * nh + h) and the loss on the second copy, which only
  copying from the context can lower (the first copy's loss is log V at best);
- N held-out token blocks: the in-context learning score, loss at token `late` minus loss at token
  `early` (1-based; negative when the model uses its context), `in_context_learning_score` without its bootstrap.

Sizes follow the length N the probe reads (`--analysis_length`, by default the shortest block the run trains on, so
every position read is a trained one): T = min(32, (N - 1) // 2) and late = N, early = min(50, N // 4) (Olsson et
al. use 500 and 50 on 8,192-token contexts; N = 128 gives 128 and 32, N = 64 gives 64 and 16).
"""

from dataclasses import dataclass

import torch
from torch import nn

from ..run.errors import InputError
from .heads import head_layout
from .induction import in_context_learning_score, induction_scores, repeated_random_tokens

# the keys logged to the tracker and metrics.json
PREFIX_MATCHING_MAX = "induction/prefix_matching_max"
BEST_HEAD = "induction/best_head"
LOSS_SECOND_COPY = "induction/loss_second_copy"
ICL_SCORE = "induction/icl_score"
MAX_SEQ_LEN = 32
MAX_EARLY = 50


@dataclass
class InductionProbe:
    """What is measured: `seq_len` T and `batch_size` B of the repeated random tokens (drawn with `seed`), and the
    held-out blocks (N, >= late) of the in-context learning score (None: not measured)."""

    tokenizer: object
    seq_len: int
    batch_size: int
    seed: int
    held_out: torch.Tensor | None
    early: int
    late: int

    @classmethod
    def for_blocks(
        cls, model: nn.Module, tokenizer, block_size: int, held_out_blocks=None, *, batch_size=4, seed=0
    ) -> "InductionProbe":
        """The probe reading `block_size` tokens per sequence; `held_out_blocks` (a sequence of token-id lists or a
        (N, >= block_size) tensor) are the in-context learning score's rows, cut to `block_size` (shorter ones left
        out).

        InputError when the model has no attention heads to find or the blocks are too short to measure."""
        head_layout(model)  # a model whose heads cannot be found is refused before training starts
        seq_len = min(MAX_SEQ_LEN, (block_size - 1) // 2)
        late = block_size
        early = min(MAX_EARLY, late // 4)
        if seq_len < 2 or early < 2:
            raise InputError(
                f"--analysis_steps needs blocks of at least 8 tokens (two copies of a sequence and two positions of "
                f"the in-context learning score), got block_size {block_size}."
            )
        repeated_random_tokens(model, tokenizer, seq_len=seq_len, batch_size=batch_size, seed=seed)  # checked once
        held_out = None
        if held_out_blocks is not None and len(held_out_blocks) > 0:
            rows = [list(block)[:late] for block in held_out_blocks]
            held_out = torch.tensor([r for r in rows if len(r) == late], dtype=torch.long) if rows else None
            if held_out is not None and held_out.numel() == 0:
                held_out = None
        return cls(tokenizer, seq_len, batch_size, seed, held_out, early, late)

    def measure(self, model: nn.Module) -> dict[str, float]:
        """The probe's scores of `model` now (its training mode is restored after): {PREFIX_MATCHING_MAX, BEST_HEAD,
        LOSS_SECOND_COPY, and ICL_SCORE when there are held-out blocks}."""
        scores = induction_scores(
            model, self.tokenizer, seq_len=self.seq_len, batch_size=self.batch_size, seed=self.seed, copying=False
        )
        flat = scores.prefix_matching.flatten()
        metrics = {
            PREFIX_MATCHING_MAX: float(flat.max()),
            BEST_HEAD: float(flat.argmax()),
            LOSS_SECOND_COPY: scores.loss_second_copy,
        }
        if self.held_out is not None:
            icl = in_context_learning_score(model, self.held_out, early=self.early, late=self.late, num_bootstrap=1)
            metrics[ICL_SCORE] = icl.score
        return metrics


__all__ = ["BEST_HEAD", "ICL_SCORE", "LOSS_SECOND_COPY", "PREFIX_MATCHING_MAX", "InductionProbe"]
