"""Text for encoder (masked-LM) pretraining: a tokenizer with BERT's special tokens and `[CLS] ... [SEP]` blocks.

A block is `[CLS]` + `block_size - 2` corpus tokens + `[SEP]`, cut from the documents concatenated with `[SEP]`
between them (the packing of RoBERTa's FULL-SENTENCES, with BERT's special tokens). Each block carries

- `input_ids`: (block_size,) token ids;
- `special_tokens_mask`: (block_size,) 1 at `[CLS]`, `[SEP]` and any other special token (`[PAD]`, `[MASK]` spelled
  out in the text), which are never masked;
- `word_starts`: (block_size,) 1 where a token begins a word (from the tokenizer's pre-tokenizer), for whole-word
  masking: a word is a start token and the non-start tokens after it;
- `index`: the block's row number, which seeds its masks (`hfssl.training.masking`).
"""

from itertools import chain

import datasets
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ..run.errors import InputError

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
MASK_TOKEN = "[MASK]"


def train_encoder_tokenizer(texts, vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (RoBERTa's kind: any text is encodable, nothing is unknown) with BERT's special
    tokens, trained on `texts` (an iterator of strings or of lists of strings).

    Special tokens: 0 `[PAD]`, 1 `[UNK]`, 2 `[CLS]`, 3 `[SEP]`, 4 `[MASK]`; `tokenizer(text)` gives `[CLS] text [SEP]`
    (and `[CLS] a [SEP] b [SEP]` for pairs). Not WordPiece: tokenizers' WordPiece trainer is not deterministic across
    processes (in 3 runs on one corpus, 3 different vocabularies, even different sets of tokens), and every process of
    a run, and a resumed run, must agree on the token ids; its byte-level BPE trainer is deterministic.
    """
    specials = [*SPECIAL_TOKENS.values(), MASK_TOKEN]
    if vocab_size < 256 + len(specials):
        raise InputError(
            f"vocab_size must be at least {256 + len(specials)} (256 bytes + 5 special tokens), got {vocab_size}."
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # a document's first word is a word too
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, mask_token=MASK_TOKEN, **SPECIAL_TOKENS)


def check_encoder_tokenizer(tokenizer, name: str) -> None:
    """ValueError unless `tokenizer` has the mask, separator and pad tokens masked-LM pretraining needs."""
    missing = [
        kind for kind in ("mask_token", "sep_token", "cls_token", "pad_token") if getattr(tokenizer, kind) is None
    ]
    if "mask_token" in missing:
        raise InputError(
            f"The tokenizer of {name} has no mask token, which masked-LM pretraining needs: use an encoder's tokenizer "
            "(e.g. BERT's [MASK]) or leave --tokenizer_name_or_path unset to train one with [CLS] [SEP] [MASK] [PAD]."
        )
    if missing:
        raise InputError(f"The tokenizer of {name} has no {' / '.join(missing)}, which masked-LM blocks need.")


def _word_starts(encoding) -> list[int]:
    previous, starts = None, []
    for word in encoding.word_ids:
        starts.append(int(word is None or word != previous))
        previous = word
    return starts


def pack_encoder_blocks(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, block_size: int, num_proc: int | None = None
) -> datasets.Dataset:
    """`[CLS] tokens [SEP]` blocks of exactly `block_size` tokens from the documents in column "text".

    Returns columns input_ids, special_tokens_mask, word_starts, index (see the module docstring). The tail of each
    map batch shorter than a block is dropped. ValueError if the corpus is shorter than one block.
    """
    if block_size < 3:
        raise InputError(f"block_size must be at least 3 ([CLS], a token, [SEP]), got {block_size}.")
    body = block_size - 2
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    specials = set(tokenizer.all_special_ids)  # text may spell one out ("[PAD]"): it is special there too

    def tokenize(batch):
        encodings = tokenizer(batch["text"], add_special_tokens=False).encodings
        return {
            "input_ids": [e.ids + [sep] for e in encodings],  # [SEP] ends each document
            "is_special": [[int(i in specials) for i in e.ids] + [1] for e in encodings],
            "word_starts": [_word_starts(e) + [1] for e in encodings],
        }

    def group(batch):
        flat = {k: list(chain.from_iterable(batch[k])) for k in ("input_ids", "is_special", "word_starts")}
        usable = len(flat["input_ids"]) // body * body
        starts = range(0, usable, body)
        return {
            "input_ids": [[cls, *flat["input_ids"][i : i + body], sep] for i in starts],
            "special_tokens_mask": [[1, *flat["is_special"][i : i + body], 1] for i in starts],
            "word_starts": [[1, 1, *flat["word_starts"][i + 1 : i + body], 1] for i in starts],  # a cut starts a word
        }

    tokens = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=num_proc, desc="Tokenizing")
    blocks = tokens.map(
        group,
        batched=True,
        batch_size=1000,
        remove_columns=tokens.column_names,
        num_proc=num_proc,
        desc=f"Packing into [CLS] + {body} + [SEP]",
    )
    if len(blocks) == 0:
        n_tokens = sum(len(x) for x in tokens["input_ids"])
        raise InputError(
            f"The corpus has {n_tokens} tokens, fewer than one block of block_size={block_size}: "
            "use more text or a smaller --block_size."
        )
    return blocks.add_column("index", list(range(len(blocks))))
