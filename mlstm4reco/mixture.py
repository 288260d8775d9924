"""The mixture-of-tastes nets, where they were before ``representations`` became a package."""

from mlstm4reco.representations.mixture import MixtureLSTMNet, MixtureMLSTMNet

__all__ = ["MixtureLSTMNet", "MixtureMLSTMNet"]
