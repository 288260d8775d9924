"""Datasets as :class:`~mlstm4reco.interactions.Interactions`: MovieLens (100K, 1M, 10M),
Amazon reviews, and synthetic Markov-chain sequences.

Files are looked for in ``data_dir``, then the folder in ``MLSTM4RECO_DATA``, then the user
cache (``~/.cache/mlstm4reco``), and downloaded only when absent.
"""

from mlstm4reco.datasets.amazon import get_amazon_dataset
from mlstm4reco.datasets.movielens import get_movielens_dataset
from mlstm4reco.datasets.synthetic import get_synthetic_dataset

__all__ = ["get_amazon_dataset", "get_movielens_dataset", "get_synthetic_dataset"]
