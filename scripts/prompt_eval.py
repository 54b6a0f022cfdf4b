"""Zero-shot and k-shot (in-context) evaluation of any causal LM: accuracy and calibration over shots x seeds.

    python scripts/prompt_eval.py --model_name_or_path outputs/gpt-stdlib --dataset ../shared/data/sst2/train.txt \
        --shots 0,1,4,8 --num_seeds 3 --calibrate --output_file outputs/icl-sst2.json

Chain-of-thought with self-consistency (demonstrations from a file with a `rationale` column):

    python scripts/prompt_eval.py --model_name_or_path ... --dataset data.jsonl --shots 0,4 --chain_of_thought \
        --num_samples 8 --temperature 0.7

Queries come from --dataset; demonstrations from --demos_dataset (default: a disjoint part of --dataset).
Prints a table (mean +- std over seeds); --help lists every flag.
"""

import json
import sys

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.adapt.prompt_eval import PromptEvalArguments, format_table, run_prompt_eval
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        args = parse_cli(PromptEvalArguments, argv)
        result = run_prompt_eval(args)
        print(f"{result.model} on {result.dataset} (label words {json.dumps(result.label_words)})")
        print(format_table(result))
        if args.output_file:
            print(f"results written to {args.output_file}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
