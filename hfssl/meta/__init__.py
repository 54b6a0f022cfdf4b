"""Meta-learning for tiny target sets: MAML, FOMAML, ANIL, ProtoNets (torch.func; learn2learn optional)."""

from .algorithms import ALGORITHMS, FunctionalMetaLearner, features, use_batch_statistics

__all__ = ["ALGORITHMS", "FunctionalMetaLearner", "features", "use_batch_statistics"]
