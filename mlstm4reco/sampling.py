"""Negative sampling (Spotlight's ``spotlight.sampling``)."""

from __future__ import annotations

import numpy as np

__all__ = ["sample_items"]


def sample_items(num_items: int, shape, random_state: np.random.RandomState) -> np.ndarray:
    """Item ids drawn uniformly from [0, num_items), as Spotlight's ``sample_items``."""
    return random_state.randint(0, num_items, shape, dtype=np.int64)
