"""Synthetic key -> value documents: text whose next token can only be known by copying from the context.

Every document draws a fresh random mapping from KEYS_PER_MAPPING of 26 letter keys to colour words and
writes LINES_PER_DOC lines `key value`, keys drawn with replacement:

    q red
    w blue
    q red
    ...

Once a key has appeared, its value is predictable from the document alone, and from nothing else: the
mapping is new each time. A model lowers its loss on these lines only by attending to the earlier line
with the same key and copying the token after it, the induction circuit of Olsson et al. (2022),
"In-context Learning and Induction Heads". `scripts/pretrain.py` trains on them before the corpus (its
in-context warm-up) so that a model pretrained for minutes can learn from a prompt's demonstrations;
`benchmarks/exp_icl.py` measures that on held-out mappings.
"""

import random
import string

import datasets

KEYS = list(string.ascii_lowercase)
VALUES = ["red", "blue", "green", "gold", "pink", "gray", "black", "white"]
KEYS_PER_MAPPING, LINES_PER_DOC = 4, 32


def draw_mapping(rng: random.Random) -> dict[str, str]:
    """KEYS_PER_MAPPING distinct keys, each mapped to a value drawn independently (a random function)."""
    return {k: rng.choice(VALUES) for k in rng.sample(KEYS, KEYS_PER_MAPPING)}


def draw_lines(mapping: dict[str, str], n: int, rng: random.Random) -> list[tuple[str, str]]:
    """n (key, value) lines of `mapping`, keys drawn uniformly with replacement."""
    keys = list(mapping)
    return [(k, mapping[k]) for k in (rng.choice(keys) for _ in range(n))]


def key_value_document(rng: random.Random) -> str:
    """One document: LINES_PER_DOC `key value` lines of a fresh mapping."""
    return "\n".join(f"{k} {v}" for k, v in draw_lines(draw_mapping(rng), LINES_PER_DOC, rng))


def key_value_documents(num_docs: int, seed: int) -> datasets.Dataset:
    """`num_docs` documents in a `text` column; the same (num_docs, seed) always gives the same documents."""
    rng = random.Random(seed)
    return datasets.Dataset.from_dict({"text": [key_value_document(rng) for _ in range(num_docs)]})


def documents_for_chars(num_chars: int, seed: int) -> datasets.Dataset:
    """Enough documents to hold about `num_chars` characters (at least one)."""
    rng = random.Random(seed)
    texts: list[str] = []
    total = 0
    while total < num_chars or not texts:
        texts.append(key_value_document(rng))
        total += len(texts[-1]) + 1
    return datasets.Dataset.from_dict({"text": texts})
