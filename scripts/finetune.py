"""Fine-tune a pretrained model on labelled data: --method full | lp-ft | surgical | lora.

    python scripts/finetune.py --method lp-ft --model_name_or_path outputs/gpt-stdlib \
        --dataset ../shared/data/sst2/train.txt --num_labels_per_class 32 --output_dir outputs/lpft-sst2
    python scripts/finetune.py --method lora --model_name_or_path outputs/simclr-digits --dataset digits

Saves the adapted model (adapter-only for LoRA unless --merge_lora) and metrics.json; --help lists every flag.
"""

import logging
import sys

from transformers import HfArgumentParser

import hfssl  # noqa: F401  (registers the hfssl models and peft defaults)
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.hub import push_after_training


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        (args,) = HfArgumentParser(FinetuneArguments).parse_args_into_dataclasses(args=argv)
        _, metrics = run_finetune(args)
    except (ValueError, OSError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{metrics['method']} on {metrics['num_train']} examples: accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} ({metrics['num_eval']} evaluation examples); "
        f"{metrics['trainable_parameters']:,} of {metrics['total_parameters']:,} parameters trained"
    )
    print(f"saved to {args.output_dir}")
    return push_after_training(args, args.output_dir)


if __name__ == "__main__":
    sys.exit(main())
