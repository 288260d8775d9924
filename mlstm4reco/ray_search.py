"""The Ray backend under its old name: it lives in :mod:`mlstm4reco.study.ray_tune`."""

from mlstm4reco.study.ray_tune import (
    TPESearcher,
    _import_ray,
    make_searcher,
    max_epochs,
    run_ray_search,
)

__all__ = ["TPESearcher", "_import_ray", "make_searcher", "max_epochs", "run_ray_search"]
