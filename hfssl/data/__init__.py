"""Data loading for hfssl: built-in corpora, text corpora and tokenizers."""
