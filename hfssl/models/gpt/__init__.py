from .configuration_gpt import GPTConfig
from .modeling_gpt import GPTForCausalLM, GPTForSequenceClassification, GPTModel, GPTPreTrainedModel

__all__ = ["GPTConfig", "GPTModel", "GPTPreTrainedModel", "GPTForCausalLM", "GPTForSequenceClassification"]
