"""Push a saved model (full, or a LoRA adapter with its base_model) to the Hugging Face Hub with a model card.

    python scripts/push.py --model_dir outputs/finetune-sst2 --repo_id you/gpt-sst2 [--private] [--adapter_only]
    python scripts/push.py --model_dir outputs/finetune-sst2 --repo_id you/gpt-sst2 --dry_run   # offline

The token comes from HF_TOKEN or `hf auth login`; it is never printed or written. --dry_run writes the exact
folder that would be uploaded (default: MODEL_DIR-hub-upload) and lists its files.
"""

import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

import hfssl  # noqa: F401  (registers the hfssl models for adapter merging)
from hfssl.hub import HubError, push_to_hub


@dataclass
class PushArguments:
    model_dir: str = field(
        metadata={"help": "A folder written by pretrain.py, probe.py, finetune.py or meta_train.py."}
    )
    repo_id: str = field(metadata={"help": "Hub repository id: user/name or org/name."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    adapter_only: bool = field(default=False, metadata={"help": "Push the LoRA adapter only (base_model in its card)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    dry_run: bool = field(default=False, metadata={"help": "Only write the upload folder and list its files."})
    dry_run_dir: str | None = field(default=None, metadata={"help": "Where --dry_run writes the folder."})


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
        result = push_to_hub(
            args.model_dir,
            args.repo_id,
            private=args.private,
            adapter_only=args.adapter_only,
            revision=args.revision,
            dry_run=args.dry_run,
            dry_run_dir=args.dry_run_dir,
        )
    except (HubError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result["dry_run"]:
        print(f"dry run: {result['folder']} holds what would be uploaded to {args.repo_id}:")
    else:
        print(f"pushed to {result['repo_url']} ({result['commit']}):")
    for name in result["files"]:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
