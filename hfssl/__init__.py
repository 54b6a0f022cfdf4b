"""hfssl: self-supervised pretraining -> adaptation -> evaluation -> sharing, on the Hugging Face stack.

Importing hfssl registers every hfssl model with the transformers Auto classes.
"""

from .models.gpt import GPTConfig, GPTForCausalLM, GPTForSequenceClassification, GPTModel
from .models.pooled import PooledClassifierConfig, PooledModelForSequenceClassification
from .models.registry import register_auto_classes, register_peft_defaults
from .models.simclr import SimCLRConfig, SimCLRForImageClassification, SimCLRModel

__version__ = "0.1.0"

register_auto_classes()
register_peft_defaults()

__all__ = [
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
