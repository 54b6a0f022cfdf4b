"""Convert a llama.cpp GGUF checkpoint into a safetensors folder (weights, tokenizer, chat template) once, so that
later loads are fast.

    python scripts/convert_gguf.py --model_name_or_path path/to/model.gguf --output_dir models/my-model
    python scripts/convert_gguf.py --model_name_or_path folder --gguf_file model.Q4_1.gguf --output_dir models/m

Needs the gguf package (pip install 'hfssl[gguf]'); --help lists every flag.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.models.convert import ConvertArguments, run_convert
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        folder = run_convert(parse_cli(ConvertArguments, argv))
        print(f"converted to {folder}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
