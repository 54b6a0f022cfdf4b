"""Self-supervised pretraining with Accelerate.

    accelerate launch scripts/pretrain.py                      # GPT on the built-in stdlib-docstring corpus
    accelerate launch scripts/pretrain.py --objective contrastive   # SimCLR on the built-in digits
    accelerate launch scripts/pretrain.py --objective masked_lm     # BERT on the built-in corpus
    accelerate launch scripts/pretrain.py --objective masked_lm --model_name_or_path ENCODER --dataset my_text.txt
    accelerate launch --multi_gpu --num_processes 2 scripts/pretrain.py --dataset my_corpus.txt
    accelerate launch scripts/pretrain.py --config recipe.yaml --resume_from_checkpoint latest

Every flag is listed by --help (`--objective contrastive --help` for that objective's); a YAML --config supplies
defaults that flags override.
"""

import sys

from accelerate import PartialState

import hfssl  # noqa: F401  (registers the hfssl models with the Auto classes)
from hfssl.hub import push_after_training
from hfssl.run.cli import run_cli
from hfssl.training.arguments import parse_pretrain_args
from hfssl.training.loop import run_pretraining


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse_pretrain_args(argv)
        result = run_pretraining(args)
        if not PartialState().is_main_process:  # the others print nothing and push nothing
            return 0
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.final.items() if isinstance(v, float))
        print(f"\nModel saved to {result.output_dir}  ({metrics})")
        print(result.report)
        return push_after_training(args, result.output_dir)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
