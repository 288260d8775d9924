"""Mixture-of-tastes representations: a recurrent state projected into k taste vectors
and k attention vectors; an item's score is its bias plus the taste scores weighted by a
softmax, over the k tastes, of the attention scores:

    score(i) = b_i + sum_k softmax_k(a_k . e_i) * (t_k . e_i)

``user_representation`` returns (B, 2k, D, T) and (B, 2k, D): tastes first, then
attention vectors (Spotlight's layout for its mixture LSTM).

References
----------
M. Kula. Mixture-of-tastes models for representing users with diverse interests.
arXiv:1711.08379, 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlstm4reco.representations.base import check_item_sequences
from mlstm4reco.representations.recurrent import LSTMNet, MLSTMNet

__all__ = ["MixtureLSTMNet", "MixtureMLSTMNet"]


class _MixtureHead:
    """Turns a net whose ``_states`` gives (B, T + 1, D) into a mixture of tastes."""

    def _init_mixture(self, num_components: int) -> None:
        if num_components < 1:
            raise ValueError(f"num_components must be positive, got {num_components}")
        self.num_components = num_components
        D = self.embedding_dim
        self.projection = nn.Linear(D, 2 * num_components * D)

    def user_representation(self, item_sequences: torch.Tensor):
        check_item_sequences(item_sequences, self.num_items)
        states = self.dropout(self._states(item_sequences.long()))  # (B, T + 1, D)
        B, T1, D = states.shape
        two_k = 2 * self.num_components
        # Projected separately so that the positions' tensor is contiguous as (B, T, 2k, D):
        # forward's matmul then reads it without a copy.
        positions = self.projection(states[:, :-1]).view(B, T1 - 1, two_k, D)
        final = self.projection(states[:, -1]).view(B, two_k, D)
        return positions.permute(0, 2, 3, 1), final  # (B, 2k, D, T), (B, 2k, D)

    def forward(self, user_representations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if user_representations.dim() == 3:  # one state per row: Spotlight's predict
            targets = targets.reshape(user_representations.shape[0], 1)
            return self.forward(user_representations.unsqueeze(3), targets).squeeze(1)
        k = self.num_components
        states = user_representations.permute(0, 3, 1, 2)  # (B, T, 2k, D)
        target_embedding = self.scoring_embeddings(targets).unsqueeze(-1)  # (B, T, D, 1)
        # One batched matmul gives every taste and attention score: (B, T, 2k).
        dots = torch.matmul(states, target_embedding).squeeze(-1)
        weights = F.softmax(dots[..., k:], dim=-1)  # (B, T, k)
        return (weights * dots[..., :k]).sum(-1) + self.item_biases(targets).squeeze(-1)

    def linear_scoring(self) -> None:
        """None: a mixture's scores are not linear in its states."""
        return None

    def score_items(self, states: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (..., S) of items (ids (S,) or a slice; all when None) for states
        (..., 2k, D)."""
        k = self.num_components
        embeddings, biases = self.scoring_embeddings.weight, self.item_biases.weight.squeeze(1)
        if items is not None:
            embeddings, biases = embeddings[items], biases[items]
        weights = F.softmax(states[..., k:, :] @ embeddings.t(), dim=-2)  # (..., k, S)
        taste_scores = states[..., :k, :] @ embeddings.t()  # (..., k, S)
        return (weights * taste_scores).sum(-2) + biases

    def position_states(self, all_representations: torch.Tensor) -> torch.Tensor:
        """(B, 2k, D, T) -> (B, T, 2k, D)."""
        return all_representations.permute(0, 3, 1, 2)


class MixtureLSTMNet(_MixtureHead, LSTMNet):
    """Mixture of tastes on Spotlight's LSTM (Spotlight's ``representation='mixture'``).

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
    num_components: int
        Number of tastes k (4 in Kula 2017).
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer=None,
        sparse: bool = False,
        num_components: int = 4,
        **options,
    ) -> None:
        super().__init__(num_items, embedding_dim, item_embedding_layer, sparse, **options)
        self._init_mixture(num_components)


class MixtureMLSTMNet(_MixtureHead, MLSTMNet):
    """Mixture of tastes on the multiplicative LSTM.

    Parameters
    ----------
    num_components: int
        Number of tastes k.
    **options:
        The arguments of :class:`~mlstm4reco.representations.MLSTMNet` (``num_items``,
        ``embedding_dim``, ``state``, ...).
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer=None,
        sparse: bool = False,
        num_components: int = 4,
        **mlstm_options,
    ) -> None:
        super().__init__(num_items, embedding_dim, item_embedding_layer, sparse, **mlstm_options)
        self._init_mixture(num_components)
