"""Convert a llama.cpp GGUF checkpoint once into an ordinary safetensors folder: weights dequantised to float32, the
tokenizer with its chat template, and the generation config. Later loads of the folder take about a second, where
dequantising the GGUF again takes many (about 14 s for SmolLM2-135M on 2 CPU cores).

    python scripts/convert_gguf.py --model_name_or_path path/to/model.gguf --output_dir models/smollm2
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForCausalLM

from ..run.arguments import ModelSourceArguments, RunArguments
from ..run.errors import InputError
from ..run.model_source import ModelSource
from ..run.output import publish
from ..run.start import prepare_run
from .loading import load_pretrained, load_tokenizer


@dataclass(kw_only=True)
class ConvertArguments(ModelSourceArguments, RunArguments):
    model_name_or_path: str = field(
        metadata={"help": "The GGUF: a path ending in .gguf, or a folder / Hub repository with --gguf_file."}
    )
    output_dir: str = field(metadata={"help": "The safetensors folder to write."})

    def __post_init__(self):
        super().__post_init__()
        self.check_model_source()
        if not self.source.is_gguf:
            raise InputError(
                f"{self.model_name_or_path} is not a GGUF: name a .gguf file, or a folder and --gguf_file."
            )


def convert_gguf(source: ModelSource, output_dir: str | Path) -> Path:
    """Write the causal LM of a GGUF checkpoint as a safetensors folder (atomically). Returns output_dir."""
    model = load_pretrained(AutoModelForCausalLM, source)
    tokenizer = load_tokenizer(source)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)  # with the chat template the GGUF carries
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(folder)

    return publish(output_dir, write)


def run_convert(args: ConvertArguments) -> Path:
    prepare_run(args, [args.source.input_path])
    return convert_gguf(args.source, args.output_dir)
