"""Average pooling over the items seen so far."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlstm4reco.representations.base import PADDING_IDX, SequenceNet

__all__ = ["PoolNet"]


class PoolNet(SequenceNet):
    """Average pooling: the state at position t is the mean of the embeddings of the
    items before t, padding excluded (zero when nothing has been seen). Spotlight's
    PoolNet divides by the count plus one; this one takes the plain mean.

    Parameters
    ----------
    num_items: int
        Number of item ids, padding id 0 included.
    embedding_dim: int
        Dimension of the item embeddings and of the state.
    item_embedding_layer: nn.Embedding, optional
        An embedding layer to use instead of a new
        :class:`~mlstm4reco.representations.ScaledEmbedding`.
    sparse: bool
        Sparse gradients for the embeddings.
    """

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        embeddings = self._embed(item_sequences)  # (B, T, D)
        sums = F.pad(embeddings.cumsum(1), (0, 0, 1, 0))  # (B, T + 1, D)
        counts = F.pad((item_sequences != PADDING_IDX).cumsum(1), (1, 0))  # (B, T + 1)
        return sums / counts.clamp(min=1).unsqueeze(2).to(sums.dtype)
