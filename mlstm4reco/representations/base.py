"""What every sequence representation shares: Spotlight's protocol, stated as
``typing.Protocol`` classes, and the base class of this library's nets.

A representation turns a batch of item sequences into user states and scores items
against them, exactly as Spotlight's ``spotlight.sequence.representations`` classes do,
so an instance can be handed to real Spotlight's
``ImplicitSequenceModel(representation=net)`` as well as to this library's:

    all_reps, final = net.user_representation(item_sequences)  # (B, D, T), (B, D)
    scores = net(all_reps, targets)                             # (B, T)

``all_reps[:, :, t]`` has seen the items before position t only (position 0 has seen
nothing) and ``final`` has seen the whole sequence; a score is the dot product of a state
and an item embedding plus the item's bias. Item id 0 is padding.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from mlstm4reco import matmul

__all__ = [
    "PADDING_IDX",
    "SequenceRepresentation",
    "ScoresItems",
    "ScaledEmbedding",
    "ZeroEmbedding",
    "SequenceNet",
    "check_item_sequences",
]

PADDING_IDX = 0


@runtime_checkable
class SequenceRepresentation(Protocol):
    """The contract of a representation (Spotlight's, by convention): what
    ``ImplicitSequenceModel`` needs of any net, here's or real Spotlight's."""

    def user_representation(
        self, item_sequences: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) item ids -> (B, D, T) states (position t has seen the items before t)
        and (B, D) final states (seen all T)."""

    def __call__(self, user_representations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scores of ``targets``: (B, D, T) with (B, T) -> (B, T); (B, D) with (B,) -> (B,)."""


@runtime_checkable
class ScoresItems(Protocol):
    """The optional part of the contract, for batched scoring and the softmax losses;
    a net without it is scored one sequence at a time through Spotlight's call. A net may
    also have ``linear_scoring()`` (see :meth:`SequenceNet.linear_scoring`) for the fused
    full softmax."""

    def score_items(self, states: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) states -> (..., S) scores of ``items`` (ids or a slice; None: all ids)."""

    def score_all(self, final_representation: torch.Tensor) -> torch.Tensor:
        """(B, D) final states (or the net's own final form) -> (B, N) scores of every id."""

    def position_states(self, all_representations: torch.Tensor) -> torch.Tensor:
        """``user_representation``'s first output as one state per position, (B, T, ...),
        the input of :meth:`score_items`."""


class ScaledEmbedding(nn.Embedding):
    """Embedding initialised normal with std 1 / embedding_dim, padding row zero
    (Spotlight's initialisation of item embeddings)."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0 / self.embedding_dim)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.weight[self.padding_idx].zero_()


class ZeroEmbedding(nn.Embedding):
    """Embedding initialised to zero (item biases)."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)


def check_item_sequences(item_sequences: torch.Tensor, num_items: int) -> None:
    """Raise ValueError unless ``item_sequences`` is a 2-D integer tensor of ids in
    [0, num_items)."""
    if not isinstance(item_sequences, torch.Tensor):
        raise ValueError(
            f"item_sequences: expected a torch.Tensor, got {type(item_sequences).__name__}"
        )
    if item_sequences.dim() != 2:
        raise ValueError(
            "item_sequences: expected a 2-D (batch, time) tensor, got "
            f"{item_sequences.dim()}-D with shape {tuple(item_sequences.shape)}"
        )
    if item_sequences.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"item_sequences: expected integer item ids, got {item_sequences.dtype}")
    if item_sequences.shape[1] == 0:
        raise ValueError(
            f"item_sequences: expected at least one time step, got shape "
            f"{tuple(item_sequences.shape)}"
        )
    if item_sequences.numel():
        low, high = int(item_sequences.min()), int(item_sequences.max())
        if low < 0 or high >= num_items:
            raise ValueError(
                f"item_sequences: expected item ids in [0, {num_items}), got ids from "
                f"{low} to {high}"
            )


class SequenceNet(nn.Module):
    """Item embeddings, item biases, scoring and checks shared by the representations.

    Subclasses implement ``_states(item_sequences) -> (B, T + 1, D)``: the state before
    any item, then the state after each item, reading items through :meth:`_embed`.

    Options every representation takes (keyword only):

    - ``dropout``: dropout probability on the input item embeddings and on the states
      that score items (training only; 0 = Spotlight's nets);
    - ``tie_embeddings``: score items with the input item embeddings (True, Spotlight's
      choice) or with separate output embeddings (False).
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer: nn.Embedding | None = None,
        sparse: bool = False,
        *,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_items < 2:
            raise ValueError(f"num_items must be at least 2 (id 0 is padding), got {num_items}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        if item_embedding_layer is None:
            item_embedding_layer = ScaledEmbedding(
                num_items, embedding_dim, padding_idx=PADDING_IDX, sparse=sparse
            )
        elif item_embedding_layer.embedding_dim != embedding_dim:
            raise ValueError(
                f"item_embedding_layer has dimension {item_embedding_layer.embedding_dim}, "
                f"expected embedding_dim={embedding_dim}"
            )
        self.item_embeddings = item_embedding_layer
        self.item_biases = ZeroEmbedding(num_items, 1, sparse=sparse, padding_idx=PADDING_IDX)
        self.output_embeddings = (
            None
            if tie_embeddings
            else ScaledEmbedding(num_items, embedding_dim, padding_idx=PADDING_IDX, sparse=sparse)
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def scoring_embeddings(self) -> nn.Embedding:
        """The embeddings items are scored with (the input ones when tied)."""
        return self.item_embeddings if self.output_embeddings is None else self.output_embeddings

    def _embed(self, item_sequences: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.item_embeddings(item_sequences))  # (B, T, D)

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def user_representation(self, item_sequences: torch.Tensor):
        """States of the user along each sequence.

        Parameters
        ----------
        item_sequences: tensor (B, T) of item ids, left-padded with 0.

        Returns
        -------
        (all_representations, final_representation): (B, D, T) and (B, D). Position t
        of the first has seen items 0..t-1; the second has seen all T items.
        """
        check_item_sequences(item_sequences, self.num_items)
        states = self.dropout(self._states(item_sequences.long())).transpose(1, 2)  # (B, D, T + 1)
        return states[:, :, :-1], states[:, :, -1]

    def forward(self, user_representations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scores of ``targets`` given user states: dot product plus item bias.

        Accepts Spotlight's two calls: (B, D, T) states with (B, T) targets give (B, T)
        scores; (B, D) states with (B,) or (B, 1) targets give (B,) scores.
        """
        if user_representations.dim() == 2:  # one state per row: Spotlight's predict
            targets = targets.reshape(user_representations.shape[0], 1)
            return self.forward(user_representations.unsqueeze(2), targets).squeeze(1)
        target_embedding = self.scoring_embeddings(targets)  # (B, T, D)
        target_bias = self.item_biases(targets).squeeze(-1)  # (B, T)
        dot = (user_representations.transpose(1, 2) * target_embedding).sum(-1)  # (B, T)
        return dot + target_bias

    def score_items(self, states: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (..., S) of the items ``items`` (ids (S,), or a slice of the ids) for
        states (..., D); all item ids in [0, num_items) when ``items`` is None."""
        embeddings, biases = self.scoring_embeddings.weight, self.item_biases.weight.squeeze(1)
        if items is not None:
            embeddings, biases = embeddings[items], biases[items]
        if states.dim() == 2 and not torch.is_grad_enabled() and _plain_cpu(states):
            return matmul.mm(states, embeddings.t()).add_(biases)  # evaluation: oneDNN
        if states.dim() == 2:  # one fused multiply-add, no second pass for the biases
            return torch.addmm(biases, states, embeddings.t())
        return states @ embeddings.t() + biases

    def linear_scoring(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (N, D) embeddings and (N,) biases with which :meth:`score_items` scores
        states linearly (``states @ embeddings.T + biases``), or None where scores are not
        linear in the states. With them the full softmax loss takes one fused function
        (:mod:`mlstm4reco.full_softmax`); a subclass that changes :meth:`score_items`
        overrides this too."""
        return self.scoring_embeddings.weight, self.item_biases.weight.squeeze(1)

    def score_all(self, final_representation: torch.Tensor) -> torch.Tensor:
        """Scores of every item id for each final state: (B, D) -> (B, N)."""
        return self.score_items(final_representation)

    def position_states(self, all_representations: torch.Tensor) -> torch.Tensor:
        """The states of ``user_representation``'s first output, one per position:
        (B, D, T) -> (B, T, D), the input of :meth:`score_items`."""
        return all_representations.transpose(1, 2)


def _plain_cpu(states: torch.Tensor) -> bool:
    """Float32 on the CPU outside autocast: where :func:`mlstm4reco.matmul.mm` may take
    a product to oneDNN."""
    return (
        states.device.type == "cpu"
        and states.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )
