"""BERT's masking of `[CLS] ... [SEP]` blocks, reproducible per block.

Of the non-special tokens, each is chosen with probability p (`mlm_probability`, 0.15 in BERT); of the chosen, 80%
become `[MASK]`, 10% a token drawn uniformly from the vocabulary and 10% stay as they are. Labels are the original
ids at chosen positions and -100 elsewhere, so only they add to the loss. The draw is transformers'
`DataCollatorForLanguageModeling.torch_mask_tokens`, whose recipe is exactly this one.

With whole-word masking a *word* (a start token and the continuation tokens after it, `word_starts`) is chosen with
probability p, and all of its tokens are; the 80/10/10 replacement then applies to each chosen token. A block whose
draw chooses nothing gets one token (or word) chosen uniformly instead, so every block adds to the loss: that happens
with probability (1 - p)^n for n candidates, 1e-9 for a 128-token block, 10% for a 16-token one.

The masks of a block depend only on (seed, epoch, the block's index): the same in a run on 1 or N processes, and in a
resumed run. Held-out blocks use a fixed epoch, so every evaluation sees the same masks.
"""

import torch
from transformers import DataCollatorForLanguageModeling

EVAL_EPOCH = -1  # the masks of held-out blocks: one fixed draw, whatever the training epoch


class MaskingCollator:
    """Collates blocks of `hfssl.data.encoder_text.pack_encoder_blocks` into (B, T) `input_ids` (masked) and
    `labels`; `set_epoch(e)` (called by the training loop) draws new masks for the next pass over the data."""

    def __init__(self, tokenizer, mlm_probability: float, seed: int, *, whole_word_mask: bool = False, epoch: int = 0):
        self.seed, self.epoch, self.whole_word_mask = seed, epoch, whole_word_mask
        self.mlm_probability = mlm_probability
        self.special_ids = torch.tensor(sorted(tokenizer.all_special_ids))
        self._draw = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
        # the same replacement with p = 1 on a selection made here (whole words, or one token when nothing was drawn)
        self._replace = DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, index: int) -> torch.Generator:
        mixed = ((self.seed * 1_000_003 + self.epoch) * 1_000_000_007 + index) % 2**63
        return torch.Generator().manual_seed(mixed)

    def _whole_words(self, special: torch.Tensor, word_starts: torch.Tensor, generator) -> torch.Tensor:
        """(T,) bool: the tokens of words chosen with probability p (one at random if none); specials are in no word."""
        word_ids = torch.cumsum(word_starts.long(), dim=0) - 1  # (T,) the word each token belongs to
        candidates = word_ids[~special].unique()  # the words that hold tokens
        chosen_words = torch.zeros(int(word_ids.max()) + 1, dtype=torch.bool)
        draw = torch.bernoulli(torch.full((len(candidates),), self.mlm_probability), generator=generator).bool()
        if not draw.any() and len(candidates):
            draw[torch.randint(len(candidates), (1,), generator=generator)] = True
        chosen_words[candidates[draw]] = True
        return chosen_words[word_ids] & ~special

    def _replace_on(
        self, input_ids: torch.Tensor, chosen: torch.Tensor, generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._replace.generator = generator
        inputs, labels = self._replace.torch_mask_tokens(input_ids.clone()[None], special_tokens_mask=~chosen[None])
        return inputs[0], labels[0]

    def mask(self, input_ids, special_tokens_mask, word_starts, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input_ids, labels) of one block, each (T,)."""
        generator = self.generator(index)
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
        special = torch.as_tensor(special_tokens_mask, dtype=torch.bool) | torch.isin(input_ids, self.special_ids)
        if self.whole_word_mask:
            return self._replace_on(
                input_ids, self._whole_words(special, torch.as_tensor(word_starts), generator), generator
            )
        self._draw.generator = generator
        inputs, labels = self._draw.torch_mask_tokens(input_ids.clone()[None], special_tokens_mask=special[None])
        if (labels != -100).any() or special.all():
            return inputs[0], labels[0]
        candidates = (~special).nonzero().flatten()  # nothing drawn: one token, uniformly
        chosen = torch.zeros_like(special)
        chosen[candidates[torch.randint(len(candidates), (1,), generator=generator)]] = True
        return self._replace_on(input_ids, chosen, generator)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pairs = [
            self.mask(ex["input_ids"], ex["special_tokens_mask"], ex["word_starts"], ex["index"]) for ex in examples
        ]
        return {"input_ids": torch.stack([p[0] for p in pairs]), "labels": torch.stack([p[1] for p in pairs])}
