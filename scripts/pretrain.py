"""Self-supervised pretraining with Accelerate.

    accelerate launch scripts/pretrain.py                      # GPT on the built-in stdlib-docstring corpus
    accelerate launch scripts/pretrain.py --objective contrastive   # SimCLR on the built-in digits
    accelerate launch --multi_gpu --num_processes 2 scripts/pretrain.py --dataset my_corpus.txt
    accelerate launch scripts/pretrain.py --config recipe.yaml --resume_from_checkpoint latest

Every flag is listed by --help; a YAML --config supplies defaults that flags override.
"""

import logging
import sys

import hfssl  # noqa: F401  (registers the hfssl models with the Auto classes)
from hfssl.hub import push_after_training
from hfssl.training.arguments import parse_args
from hfssl.training.loop import NonFiniteLossError, run_pretraining


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "urllib3", "filelock", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args = parse_args(argv)
        summary = run_pretraining(*args)
    except (ValueError, OSError, NonFiniteLossError) as err:  # OSError: missing files, unreachable Hub
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "report" in summary:  # main process only
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in summary.items() if isinstance(v, float))
        print(f"\nModel saved to {summary['output_dir']}  ({metrics})")
        print(summary["report"])
        return push_after_training(args[2], summary["output_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
