"""Baselines without a network, scored by the same evaluation as the models.

:class:`PopularityModel` scores every item by how often it occurs in the training
sequences: the sanity anchor of a protocol (a model that does not beat it has learnt
nothing about sequences).
"""

from __future__ import annotations

import numpy as np
import torch

from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.representations import PADDING_IDX

__all__ = ["PopularityModel"]


class PopularityModel:
    """Score of item i = the number of times it occurs in the training sequences (the
    padding id counts 0, as an item never seen); the same for every input sequence. Takes
    :func:`~mlstm4reco.evaluation.evaluate` and the other metrics as a model does
    (``score_sequences``, ``predict``)."""

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None
        self.device = torch.device("cpu")

    def fit(self, train: SequenceInteractions) -> PopularityModel:
        """Count the items of ``train``'s windows. Windows that overlap (a step size
        below the window length) count an interaction once per window it is in."""
        if not isinstance(train, SequenceInteractions):
            raise ValueError(f"fit expects SequenceInteractions, got {type(train).__name__}")
        counts = np.bincount(train.sequences.ravel(), minlength=train.num_items).astype(np.float32)
        counts[PADDING_IDX] = 0.0
        self.counts = torch.from_numpy(counts)
        return self

    def score_sequences(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, T) item ids -> (B, N) scores (the counts, for every row)."""
        if self.counts is None:
            raise ValueError("PopularityModel: call fit first")
        return self.counts.to(sequences.device).expand(sequences.shape[0], -1)

    def predict(self, sequences, item_ids=None) -> np.ndarray:
        """Spotlight's call: the scores of ``item_ids`` (default: every item)."""
        scores = self.score_sequences(torch.zeros(1, 1, dtype=torch.long))[0].numpy()
        return scores if item_ids is None else scores[np.asarray(item_ids)]
