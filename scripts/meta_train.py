"""Meta-learning on N-way K-shot episodes: MAML, first-order MAML, ANIL, Prototypical Networks.

    python scripts/meta_train.py --algorithm maml --ways 5 --shots 1 \
        --dataset ../shared/data/omniglot/images_background_small1.zip --output_dir outputs/maml-omniglot
    python scripts/meta_train.py --algorithm anil --model_name_or_path outputs/simclr-digits --dataset ...
    python scripts/meta_train.py ... --resume            # continue a killed run from its checkpoint

Reports 5-way 1-shot and 5-shot meta-test accuracy with 95% confidence intervals, saves the meta-learned
model (save_pretrained) and metrics.json; --help lists every flag.
"""

import logging
import sys

from transformers import HfArgumentParser

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.hub import push_after_training
from hfssl.meta.trainer import MetaArguments, run_meta_training


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        (args,) = HfArgumentParser(MetaArguments).parse_args_into_dataclasses(args=argv)
        _, metrics = run_meta_training(args)
    except (ValueError, OSError, ImportError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{args.algorithm} ({args.engine}), {metrics['meta_steps']} meta-steps in {metrics['train_minutes']:.1f} min:"
    )
    for setting, row in metrics["meta_test"].items():
        print(f"  {setting}: {100 * row['accuracy']:.1f}% +- {100 * row['ci95']:.1f} ({row['episodes']} test episodes)")
    print(f"saved to {args.output_dir}")
    return push_after_training(args, args.output_dir)


if __name__ == "__main__":
    sys.exit(main())
