"""Registration of hfssl models with transformers' Auto classes and peft's default LoRA targets.

Two mechanisms, both needed:
- `AutoConfig.register` / `AutoModel*.register`: `AutoModel*.from_pretrained(dir)` works in any process
  that imported hfssl.
- `register_for_auto_class`: `save_pretrained` writes `auto_map` into config.json and copies the modeling
  files beside the weights, so `from_pretrained(dir, trust_remote_code=True)` works without hfssl installed.
"""

import importlib.util
from typing import TYPE_CHECKING

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoModelForZeroShotImageClassification,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

from ..run.errors import InputError
from .encoders import (
    DualEncoderConfig,
    DualEncoderModel,
    PooledClassifierConfig,
    PooledModelForSequenceClassification,
    SimCLRConfig,
    SimCLRForImageClassification,
    SimCLRModel,
)
from .gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel

# model_type -> module names LoRA adapts when the user names none (peft's `target_modules=None`).
LORA_DEFAULT_TARGET_MODULES = {
    GPTConfig.model_type: ["qkv_proj", "out_proj"],
    # ResNet blocks' 3x3 convolutions; the ViT backbone's MLP layers
    SimCLRConfig.model_type: ["conv1", "conv2", "linear1", "linear2"],
}

_AUTO_CLASSES: "list[tuple[type[PretrainedConfig], list[tuple[type[_BaseAutoModelClass], type[PreTrainedModel]]]]]" = [
    # (config class, [(Auto class, model class), ...])
    (
        GPTConfig,
        [
            (AutoModel, GPTModel),
            (AutoModelForCausalLM, GPTForCausalLM),
            (AutoModelForSequenceClassification, GPTForSequenceClassification),
        ],
    ),
    (
        PooledClassifierConfig,  # the classifier is the whole model: AutoModel gives it too
        [
            (AutoModel, PooledModelForSequenceClassification),
            (AutoModelForSequenceClassification, PooledModelForSequenceClassification),
        ],
    ),
    (
        SimCLRConfig,
        [
            (AutoModel, SimCLRModel),
            (AutoModelForImageClassification, SimCLRForImageClassification),
        ],
    ),
    (
        DualEncoderConfig,
        [
            (AutoModel, DualEncoderModel),
            (AutoModelForZeroShotImageClassification, DualEncoderModel),
        ],
    ),
]


def register_auto_classes() -> None:
    """Idempotently register every hfssl model (safe to call more than once)."""
    for config_cls, pairs in _AUTO_CLASSES:
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        config_cls.register_for_auto_class()
        for auto_cls, model_cls in pairs:
            auto_cls.register(config_cls, model_cls, exist_ok=True)
            model_cls.register_for_auto_class(auto_cls.__name__)
    # SimCLR's and CLIP's images are preprocessed like ViT's (resize, rescale, normalise): transformers' own processor
    from transformers.models.vit import ViTImageProcessor, ViTImageProcessorPil

    for config_cls in (SimCLRConfig, DualEncoderConfig):
        AutoImageProcessor.register(
            config_cls,
            image_processor_classes={"torchvision": ViTImageProcessor, "pil": ViTImageProcessorPil},
            exist_ok=True,
        )


def register_peft_defaults() -> None:
    """Teach peft our default LoRA target modules, so `LoraConfig()` needs no `target_modules`."""
    if importlib.util.find_spec("peft") is None:  # peft is optional for the core library
        return
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    for model_type, modules in LORA_DEFAULT_TARGET_MODULES.items():
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault(model_type, list(modules))


def default_lora_targets(model) -> list[str] | None:
    """The modules LoRA adapts in `model` when the user names none: None lets peft pick by the model's type; for
    hfssl's pooled classifier, whose type peft does not know, the targets of the body's type (BERT: query, value)."""
    config = getattr(model, "config", None)
    if not isinstance(config, PooledClassifierConfig) or not config.encoder_config:
        return None
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    body_type = config.encoder_config["model_type"]
    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(body_type)
    if targets is None:
        raise InputError(
            f"peft has no default LoRA target modules for model_type {body_type!r}: name them with "
            "--lora_target_modules."
        )
    return list(targets)


def check_lora_targets(model, targets: list[str] | str | None) -> None:
    """InputError naming the --lora_target_modules the model has no module for (peft's own error is a traceback
    from deep inside), with the names of its linear layers. None and peft's "all-linear" are not checked."""
    if not targets or isinstance(targets, str):
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise InputError(
            f"--lora_target_modules {missing}: the model has no such module; its linear layers are {leaves}."
        )
