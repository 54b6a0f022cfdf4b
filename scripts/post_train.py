"""Post-train a causal LM, RLHF's three steps with TRL: --method sft | reward | dpo | grpo.

    python scripts/post_train.py --method sft --model_name_or_path outputs/gpt-stdlib --output_dir outputs/sft
    python scripts/post_train.py --method reward --model_name_or_path outputs/sft --output_dir outputs/reward
    python scripts/post_train.py --method dpo --model_name_or_path outputs/sft --output_dir outputs/dpo
    python scripts/post_train.py --method grpo --model_name_or_path outputs/sft --output_dir outputs/grpo
    accelerate launch scripts/post_train.py --method sft --use_lora --model_name_or_path \
        ~/.cache/hfssl/reference/SmolLM2-135M-Instruct --dataset my_instructions.jsonl

Without --dataset the rows are hfssl's built-in instruction tasks (hfssl.data.instructions). Saves the model (the
adapter only with --use_lora, unless --merge_adapter), its tokenizer and metrics.json with held-out scores before and
after; --help lists every flag.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.hub import push_after_training
from hfssl.posttrain.arguments import PostTrainArguments
from hfssl.posttrain.run import is_main_process, run_post_training
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if "/" not in k) or "none"


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse_cli(PostTrainArguments, argv)
        result = run_post_training(args)
        if not is_main_process():  # every process of a launch returns the result; one reports it
            return 0
        print(
            f"{result.method}: {result.global_step} steps on {result.num_train} rows; held-out ({result.num_eval} "
            f"rows) before: {_scores(result.before)}; after: {_scores(result.after)}"
        )
        print(f"saved to {args.output_dir}")
        return push_after_training(args, args.output_dir)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
