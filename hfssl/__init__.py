"""hfssl: self-supervised pretraining -> adaptation -> evaluation -> sharing, on the Hugging Face stack.

Importing hfssl registers every hfssl model with the transformers Auto classes.
"""

from .models.encoders import (
    DualEncoderConfig,
    DualEncoderModel,
    PooledClassifierConfig,
    PooledModelForSequenceClassification,
    SimCLRConfig,
    SimCLRForImageClassification,
    SimCLRModel,
)
from .models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from .models.registry import register_auto_classes, register_peft_defaults

__version__ = "0.1.0"

register_auto_classes()
register_peft_defaults()

__all__ = [
    "DualEncoderConfig",
    "DualEncoderModel",
    "GPTConfig",
    "GPTForCausalLM",
    "GPTForSequenceClassification",
    "GPTModel",
    "PooledClassifierConfig",
    "PooledModelForSequenceClassification",
    "SimCLRConfig",
    "SimCLRForImageClassification",
    "SimCLRModel",
    "__version__",
]
