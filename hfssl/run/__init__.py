"""The ground floor every entry point stands on: arguments and the command-line parser, the error hierarchy and the
CLI frame, checkpoints, output folders, typed results, resume checks and the shared optimizer step. Nothing here
imports another hfssl package (pyproject.toml's import-linter contract)."""
