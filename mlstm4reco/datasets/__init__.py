"""Datasets as :class:`~mlstm4reco.interactions.Interactions`: MovieLens (100K, 1M, 10M),
Amazon reviews, Goodbooks-10k, a user's own file, and synthetic Markov-chain sequences.

Files are looked for in ``data_dir``, then the folder in ``MLSTM4RECO_DATA``, then the user
cache (``~/.cache/mlstm4reco``), and downloaded only when absent.

:data:`DATASETS` is the one list of dataset names (a config's ``dataset``, the runner's
``--dataset``); :func:`get_dataset` loads one by name. Adding a dataset is a module here
with its loader, plus one line in :data:`DATASETS`.
"""

from __future__ import annotations

from collections.abc import Callable

from mlstm4reco.datasets.amazon import get_amazon_dataset
from mlstm4reco.datasets.goodbooks import get_goodbooks_dataset
from mlstm4reco.datasets.movielens import get_movielens_dataset
from mlstm4reco.datasets.synthetic import get_synthetic_dataset
from mlstm4reco.datasets.user_file import get_file_dataset
from mlstm4reco.interactions import Interactions

__all__ = [
    "DATASETS",
    "get_dataset",
    "get_amazon_dataset",
    "get_goodbooks_dataset",
    "get_movielens_dataset",
    "get_synthetic_dataset",
]


def _movielens(variant: str) -> Callable[..., Interactions]:
    def load(data_dir=None) -> Interactions:
        return get_movielens_dataset(variant, data_dir=data_dir)

    load.__doc__ = f"MovieLens {variant} (:func:`get_movielens_dataset`); takes no options."
    return load


def _synthetic(data_dir=None, **options) -> Interactions:
    """Synthetic sequences (:func:`get_synthetic_dataset`); no files, so ``data_dir`` is unused."""
    return get_synthetic_dataset(**options)


DATASETS: dict[str, Callable[..., Interactions]] = {
    "synthetic": _synthetic,
    "ml100k": _movielens("100K"),
    "ml1m": _movielens("1M"),
    "ml10m": _movielens("10M"),
    "amazon": get_amazon_dataset,
    "goodbooks": get_goodbooks_dataset,
    "file": get_file_dataset,  # a user's CSV, TSV or Parquet file: data: {path: ..., user_col: ...}
}
"""Loaders by dataset name, each called as ``loader(data_dir=..., **options)``."""


def get_dataset(name: str, data_dir=None, **options) -> Interactions:
    """The dataset ``name`` (a key of :data:`DATASETS`) with the loader's ``options``.

    Raises
    ------
    ValueError for an unknown name; TypeError for options the loader does not take;
    the loader's FileNotFoundError or ValueError for missing or bad files.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name](data_dir=data_dir, **options)
