"""Linear probe of a pretrained model on labelled data (text or images), with cached features.

    python scripts/probe.py --model_name_or_path outputs/gpt-stdlib --dataset ../shared/data/sst2/train.txt \
        --num_labels_per_class 32 --output_dir outputs/probe-sst2
    python scripts/probe.py --model_name_or_path outputs/simclr-digits --dataset digits \
        --output_dir outputs/probe-digits

Saves the adapted model (a complete classifier for hfssl models) and metrics.json; --help lists every flag.
"""

import logging
import sys

from transformers import HfArgumentParser

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.adapt.probe import ProbeArguments, run_linear_probe
from hfssl.hub import push_after_training


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        (args,) = HfArgumentParser(ProbeArguments).parse_args_into_dataclasses(args=argv)
        _, metrics = run_linear_probe(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"linear probe on {metrics['num_train']} examples: accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} ({metrics['num_eval']} evaluation examples)"
    )
    print(f"saved to {args.output_dir} ({metrics['saved']})")
    return push_after_training(args, args.output_dir)


if __name__ == "__main__":
    sys.exit(main())
