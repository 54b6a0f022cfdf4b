"""Zero-shot and k-shot (in-context) evaluation of any causal LM: accuracy and calibration over shots x seeds.

    python scripts/prompt_eval.py --model_name_or_path outputs/gpt-stdlib --dataset ../shared/data/sst2/train.txt \
        --shots 0,1,4,8 --seeds 3 --calibrate --output_file outputs/icl-sst2.json

Queries come from --dataset; demonstrations from --demos_dataset (default: a disjoint part of --dataset).
Prints a table (mean +- std over seeds); --help lists every flag.
"""

import json
import logging
import sys

from transformers import HfArgumentParser

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.adapt.prompting import PromptEvalArguments, format_table, run_prompt_eval


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        (args,) = HfArgumentParser(PromptEvalArguments).parse_args_into_dataclasses(args=argv)
        results = run_prompt_eval(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{results['model']} on {results['dataset']} (label words {json.dumps(results['label_words'])})")
    print(format_table(results))
    if args.output_file:
        print(f"results written to {args.output_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
