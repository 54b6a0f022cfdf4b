"""Fine-tune a pretrained model on labelled data: --method full | lp-ft | surgical | lora | contrastive (SetFit).

    python scripts/finetune.py --method lp-ft --model_name_or_path outputs/gpt-stdlib \
        --dataset ../shared/data/sst2/train.txt --num_labels_per_class 32 --output_dir outputs/lpft-sst2
    python scripts/finetune.py --method lora --model_name_or_path outputs/simclr-digits --dataset digits
    python scripts/finetune.py --method contrastive --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 \
        --dataset ../shared/data/sst2/train.txt --num_labels_per_class 16 --num_train_epochs 1 --pooling mean
    python scripts/finetune.py --model_name_or_path outputs/gpt-stdlib --output_dir outputs/multitask \
        --tasks sst2=../shared/data/sst2/train.txt,trec=../shared/data/trec/train.txt --num_labels_per_class 8

Saves the adapted model (adapter-only for LoRA unless --merge_lora) and metrics.json; --help lists every flag.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models and peft defaults)
from hfssl.adapt.finetune import FinetuneArguments, run_finetune
from hfssl.adapt.multitask_text import TEXT_TO_TEXT
from hfssl.hub import push_after_training
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli
from hfssl.run.results import MultitaskResult


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse_cli(FinetuneArguments, argv)
        result = run_finetune(args)
        if isinstance(result, MultitaskResult):
            text_to_text = args.multitask_format == TEXT_TO_TEXT
            for name, scores in result.tasks.items():
                print(
                    f"{name}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f} "
                    f"({scores['num_train']} training examples, p = {scores['sampling_probability']:.3f}, "
                    f"{scores['steps']} steps)" + ("" if text_to_text else f"; saved to {args.output_dir}/{name}")
                )
            if text_to_text:
                print(f"saved to {args.output_dir}: one causal LM for every task (each task's prompt: metrics.json)")
            return push_after_training(args, args.output_dir)
        print(
            f"{result.method} on {result.num_train} examples: accuracy {result.accuracy:.4f}, "
            f"macro-F1 {result.macro_f1:.4f} ({result.num_eval} evaluation examples); "
            f"{result.trainable_parameters:,} of {result.total_parameters:,} parameters trained"
        )
        print(f"saved to {args.output_dir}")
        return push_after_training(args, args.output_dir)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
