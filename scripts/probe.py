"""Linear probe of a pretrained model on labelled data (text or images), with cached features.

    python scripts/probe.py --model_name_or_path outputs/gpt-stdlib --dataset ../shared/data/sst2/train.txt \
        --num_labels_per_class 32 --output_dir outputs/probe-sst2
    python scripts/probe.py --model_name_or_path outputs/simclr-digits --dataset digits \
        --output_dir outputs/probe-digits

Saves the adapted model (a complete classifier for hfssl models) and metrics.json; --help lists every flag.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.adapt.probe import ProbeArguments, run_linear_probe
from hfssl.hub import push_after_training
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse_cli(ProbeArguments, argv)
        result = run_linear_probe(args)
        print(
            f"linear probe on {result.num_train} examples: accuracy {result.accuracy:.4f}, "
            f"macro-F1 {result.macro_f1:.4f} ({result.num_eval} evaluation examples)"
        )
        print(f"saved to {args.output_dir} ({result.saved})")
        return push_after_training(args, args.output_dir)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
