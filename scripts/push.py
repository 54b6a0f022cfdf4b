"""Push a saved model (full, or a LoRA adapter with its base_model) to the Hugging Face Hub with a model card.

    python scripts/push.py --model_dir outputs/finetune-sst2 --repo_id you/gpt-sst2 [--private] [--adapter_only]
    python scripts/push.py --model_dir outputs/finetune-sst2 --repo_id you/gpt-sst2 --dry_run   # offline

The token comes from HF_TOKEN or `hf auth login`; it is never printed or written. --dry_run writes the exact
folder that would be uploaded (default: MODEL_DIR-hub-upload) and lists its files.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models for adapter merging)
from hfssl.hub import push_to_hub
from hfssl.hub.arguments import PushArguments
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        args = parse_cli(PushArguments, argv)
        result = push_to_hub(
            args.model_dir,
            args.repo_id,
            private=args.private,
            adapter_only=args.adapter_only,
            revision=args.revision,
            dry_run=args.dry_run,
            dry_run_dir=args.dry_run_dir,
            gguf_file=args.gguf_file,
        )
        if result["dry_run"]:
            print(f"dry run: {result['folder']} holds what would be uploaded to {args.repo_id}:")
        else:
            print(f"pushed to {result['repo_url']} ({result['commit']}):")
        for name in result["files"]:
            print(f"  {name}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
