"""hfssl's encoder models, one folder because `save_pretrained` copies a model's file and its sibling files only
(`trust_remote_code=True` then loads them without hfssl): the SimCLR image encoder, the pooled text classifier and
the CLIP dual encoder that uses both kinds of tower."""

from .configuration_clip import DualEncoderConfig
from .configuration_pooled import POOLINGS, PooledClassifierConfig
from .configuration_simclr import SimCLRConfig
from .modeling_clip import DualEncoderModel, DualEncoderOutput
from .modeling_pooled import PooledModelForSequenceClassification, pool_hidden_states
from .modeling_simclr import SimCLRForImageClassification, SimCLRModel, SimCLROutput, SimCLRPreTrainedModel

__all__ = [
    "POOLINGS",
    "DualEncoderConfig",
    "DualEncoderModel",
    "DualEncoderOutput",
    "PooledClassifierConfig",
    "PooledModelForSequenceClassification",
    "SimCLRConfig",
    "SimCLRForImageClassification",
    "SimCLRModel",
    "SimCLROutput",
    "SimCLRPreTrainedModel",
    "pool_hidden_states",
]
