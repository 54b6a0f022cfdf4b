"""Settings of `scripts/push.py`, valid when constructed."""

from dataclasses import dataclass, field

from ..run.arguments import check_repo_id


@dataclass(kw_only=True)
class PushArguments:
    model_dir: str = field(
        metadata={
            "help": "A folder written by pretrain.py, probe.py, finetune.py or meta_train.py, or a GGUF "
            "checkpoint (a .gguf path, or a folder with --gguf_file), which is uploaded converted to safetensors."
        }
    )
    gguf_file: str | None = field(default=None, metadata={"help": "The GGUF file inside --model_dir."})
    repo_id: str = field(metadata={"help": "Hub repository id: user/name or org/name."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    adapter_only: bool = field(default=False, metadata={"help": "Push the LoRA adapter only (base_model in its card)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    dry_run: bool = field(default=False, metadata={"help": "Only write the upload folder and list its files."})
    dry_run_dir: str | None = field(
        default=None, metadata={"help": "Where --dry_run writes the folder (default: MODEL_DIR-hub-upload)."}
    )

    def __post_init__(self):
        check_repo_id(self.repo_id, "--repo_id")  # before a dry run writes a folder for an id no push could use
