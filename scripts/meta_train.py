"""Meta-learning on N-way K-shot episodes: MAML, first-order MAML, ANIL, Prototypical Networks.

    python scripts/meta_train.py --algorithm maml --ways 5 --shots 1 \
        --dataset ../shared/data/omniglot/images_background_small1.zip --output_dir outputs/maml-omniglot
    python scripts/meta_train.py --algorithm anil --model_name_or_path outputs/simclr-digits --dataset ...
    python scripts/meta_train.py ... --resume_from_checkpoint latest     # continue a killed run

Reports 5-way 1-shot and 5-shot meta-test accuracy with 95% confidence intervals, saves the meta-learned
model (save_pretrained) and metrics.json; --help lists every flag.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.hub import push_after_training
from hfssl.meta.trainer import MetaArguments, run_meta_training
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse_cli(MetaArguments, argv)
        result = run_meta_training(args)
        print(f"{args.algorithm} ({args.engine}), {result.meta_steps} meta-steps in {result.train_minutes:.1f} min:")
        for setting, score in result.meta_test.items():
            print(
                f"  {setting}: {100 * score.accuracy:.1f}% +- {100 * score.ci95:.1f} ({score.episodes} test episodes)"
            )
        print(f"saved to {args.output_dir}")
        return push_after_training(args, args.output_dir)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
