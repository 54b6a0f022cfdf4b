from .configuration_simclr import SimCLRConfig
from .modeling_simclr import SimCLRForImageClassification, SimCLRModel, SimCLROutput, SimCLRPreTrainedModel

__all__ = ["SimCLRConfig", "SimCLRForImageClassification", "SimCLRModel", "SimCLROutput", "SimCLRPreTrainedModel"]
