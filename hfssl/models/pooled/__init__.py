from .configuration_pooled import POOLINGS, PooledClassifierConfig
from .modeling_pooled import PooledModelForSequenceClassification, pool_hidden_states

__all__ = ["POOLINGS", "PooledClassifierConfig", "PooledModelForSequenceClassification", "pool_hidden_states"]
