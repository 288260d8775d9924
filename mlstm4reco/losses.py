"""Training losses for implicit feedback.

First Spotlight's losses as pure functions of prediction tensors: each takes the
predictions of positive items and of sampled negative items (same shape, or with a
leading dimension of n negatives for :func:`adaptive_hinge_loss`) and an optional mask
that is False at padded positions, and returns the masked mean; then the cross-entropy
losses over many items. Then the losses of a batch, one signature for all
(:class:`LossInput` -> scalar), by name in :data:`LOSSES`: what
:class:`~mlstm4reco.sequence_model.ImplicitSequenceModel` trains with.

References
----------
Rendle et al. BPR: Bayesian personalized ranking from implicit feedback. UAI 2009.
Weston et al. WSABIE: Scaling up to large vocabulary image annotation. IJCAI 2011.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.utils.checkpoint

from mlstm4reco.full_softmax import full_softmax_cross_entropy
from mlstm4reco.representations.base import PADDING_IDX, ScoresItems

__all__ = [
    "pointwise_loss",
    "bpr_loss",
    "hinge_loss",
    "adaptive_hinge_loss",
    "softmax_loss",
    "sampled_softmax_loss",
    "LossInput",
    "Loss",
    "LOSSES",
    "preceding_items",
    "preceding_pairs",
]


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return loss.mean()
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum()


def pointwise_loss(positive_predictions, negative_predictions, mask=None):
    """(1 - sigmoid(positive)) + sigmoid(negative): push positives up, negatives down."""
    loss = (1.0 - torch.sigmoid(positive_predictions)) + torch.sigmoid(negative_predictions)
    return _masked_mean(loss, mask)


def bpr_loss(positive_predictions, negative_predictions, mask=None):
    """1 - sigmoid(positive - negative) (Rendle et al. 2009, as Spotlight writes it)."""
    loss = 1.0 - torch.sigmoid(positive_predictions - negative_predictions)
    return _masked_mean(loss, mask)


def hinge_loss(positive_predictions, negative_predictions, mask=None):
    """max(0, 1 + negative - positive)."""
    loss = torch.clamp(negative_predictions - positive_predictions + 1.0, min=0.0)
    return _masked_mean(loss, mask)


def adaptive_hinge_loss(positive_predictions, negative_predictions, mask=None):
    """The hinge against the highest of n negatives per position (WARP-like; Weston et
    al. 2011). ``negative_predictions`` is (n, *positive_predictions.shape)."""
    highest_negative, _ = torch.max(negative_predictions, 0)
    return hinge_loss(positive_predictions, highest_negative, mask=mask)


def softmax_loss(logits, targets):
    """Cross-entropy of the target item over every item: ``logits`` (M, N - 1) score item
    ids 1..N-1 for M positions (padding id 0 is never a candidate, so it is not scored:
    no (M, N) copy to mask), ``targets`` (M,) are item ids in 1..N-1."""
    return torch.nn.functional.cross_entropy(logits, targets - 1)


def sampled_softmax_loss(positive_logits, negative_logits, accidental_hits=None):
    """Cross-entropy of the target against S sampled items shared by all positions:
    ``positive_logits`` (M,), ``negative_logits`` (M, S); ``accidental_hits`` (M, S) marks
    samples equal to the position's target, which are left out. With uniform sampling
    the log-probability correction of Jean et al. (2015) is a constant and cancels."""
    if accidental_hits is not None:
        negative_logits = negative_logits.masked_fill(accidental_hits, -torch.inf)
    logits = torch.cat([positive_logits.unsqueeze(1), negative_logits], dim=1)  # (M, 1 + S)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


# ---------------------------------------------------------------- losses of a batch


@dataclass(frozen=True)
class LossInput:
    """What a training loss takes for one batch: the net, the batch and its states, and
    the model's settings and random draws. Every loss of :data:`LOSSES` takes one.

    Attributes
    ----------
    net: torch.nn.Module
        The representation (:class:`~mlstm4reco.representations.SequenceRepresentation`).
    sequences: torch.Tensor
        (B, T) item ids, 0 for padding: each position is its own target.
    user_representation: torch.Tensor
        ``net.user_representation(sequences)[0]``: the state at each position.
    num_items: int
        Item ids are 0..num_items - 1.
    num_negative_samples: int
        Negatives per position (adaptive hinge) or shared per batch (sampled softmax).
    negatives: callable
        ``negatives(shape)``: item ids drawn uniformly from [0, num_items) as Spotlight
        does, from the model's random state, on the net's device.
    random_state: numpy.random.RandomState
        The model's random state (the sampled softmax's draws).
    exclude_preceding: bool
        Leave items seen earlier in a sequence out of its positions' candidates.
    item_chunk_size: int, optional
        The full softmax scores this many items at a time (the log-sum-exp carried across
        chunks, each chunk's scores recomputed in the backward pass), so that it never
        holds (positions x all items) at once; None scores all items at once.
    """

    net: torch.nn.Module
    sequences: torch.Tensor
    user_representation: torch.Tensor
    num_items: int
    num_negative_samples: int
    negatives: Callable[[tuple], torch.Tensor]
    random_state: np.random.RandomState
    exclude_preceding: bool = False
    item_chunk_size: int | None = None

    @property
    def mask(self) -> torch.Tensor:
        """(B, T): False at padded positions."""
        return self.sequences != PADDING_IDX


class Loss(NamedTuple):
    """A training loss: ``compute(LossInput) -> scalar``, and what it needs."""

    compute: Callable[[LossInput], torch.Tensor]
    #: scores many items per position: needs a net with score_items and position_states
    #: (:class:`~mlstm4reco.representations.ScoresItems`) and takes ``exclude_preceding``
    over_items: bool = False


def preceding_items(
    sequences: torch.Tensor, num_items: int, items: slice | None = None
) -> torch.Tensor:
    """(B, T, N) booleans: whether item n occurs in sequence b before position t, for every
    n but each position's own item (padding id 0 never counts); with ``items`` (a slice
    ``start:stop`` of the ids), (B, T, stop - start) for those items only."""
    start, stop = (0, num_items) if items is None else items.indices(num_items)[:2]
    batch, length = sequences.shape
    positions = torch.arange(length, device=sequences.device)
    inside = (sequences >= max(start, PADDING_IDX + 1)) & (sequences < stop)
    first = torch.full((batch, stop - start + 1), length, dtype=torch.long, device=sequences.device)
    columns = torch.where(inside, sequences - start, stop - start)  # the rest: a spare column
    first.scatter_reduce_(1, columns, positions.expand(batch, length), reduce="amin")
    seen = first[:, :-1].unsqueeze(1) < positions.view(1, length, 1)
    own = torch.where(inside, columns, 0).unsqueeze(2)
    seen.scatter_(2, own, seen.gather(2, own) & ~inside.unsqueeze(2))  # own item stays a target
    return seen


def preceding_pairs(
    sequences: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The True entries of ``preceding_items(sequences, num_items)[mask]`` as index pairs
    (rows, item ids), without the (B, T, N) booleans: row m is the m-th position where
    ``mask`` is True (in row-major order, as ``[mask]``); a pair may repeat (an item seen
    twice)."""
    batch_rows, positions = mask.nonzero(as_tuple=True)  # (M,) each
    earlier = sequences[batch_rows]  # (M, T): each position's whole sequence
    own = sequences[batch_rows, positions].unsqueeze(1)
    steps = torch.arange(sequences.shape[1], device=sequences.device)
    before = (steps < positions.unsqueeze(1)) & (earlier != PADDING_IDX) & (earlier != own)
    rows, columns = before.nonzero(as_tuple=True)
    return rows, earlier[rows, columns]


def _against_one_negative(function):
    """Spotlight's loss ``function`` of positive and negative predictions, on a batch:
    one uniform negative per position."""

    def compute(batch: LossInput) -> torch.Tensor:
        positive = batch.net(batch.user_representation, batch.sequences)
        negative = batch.net(
            batch.user_representation, batch.negatives(tuple(batch.sequences.shape))
        )
        # Losses in float32 (bfloat16 scores under autocast are upcast here).
        return function(positive.float(), negative.float(), mask=batch.mask)

    compute.__name__ = compute.__qualname__ = function.__name__.replace("_loss", "")
    return compute


def adaptive_hinge(batch: LossInput) -> torch.Tensor:
    """Spotlight's adaptive hinge on a batch: the highest of n uniform negatives a position."""
    positive = batch.net(batch.user_representation, batch.sequences)
    n, shape = batch.num_negative_samples, tuple(batch.sequences.shape)
    # One draw of (n * B, T), as Spotlight, viewed as n sets of negatives.
    negative_items = batch.negatives((n * shape[0], shape[1])).view(n, *shape)
    negative = torch.stack(
        [batch.net(batch.user_representation, items) for items in negative_items]
    )
    return adaptive_hinge_loss(positive.float(), negative.float(), mask=batch.mask)


def _position_states(batch: LossInput, name: str):
    """The states, targets and (with ``exclude_preceding``) the preceding items of the
    batch's non-padded positions: (M, ...), (M,), (M, N) or None."""
    if not isinstance(batch.net, ScoresItems):
        raise ValueError(
            f"loss {name!r} needs a representation with score_items, score_all "
            f"and position_states (representations.ScoresItems)"
        )
    mask = batch.mask
    states = batch.net.position_states(batch.user_representation)[mask]  # (M, ...)
    seen = (
        preceding_items(batch.sequences, batch.num_items)[mask] if batch.exclude_preceding else None
    )
    return states, batch.sequences[mask], seen


def softmax(batch: LossInput) -> torch.Tensor:
    """Cross-entropy over every item at the non-padded positions (in chunks of
    ``item_chunk_size`` items when given)."""
    scoring = getattr(batch.net, "linear_scoring", lambda: None)()
    if scoring is not None:  # ids 1..N-1 only: slices are views, not copies
        embeddings, biases = scoring
        mask = batch.mask
        states = batch.net.position_states(batch.user_representation)[mask]
        left_out = None
        if batch.exclude_preceding:
            rows, items = preceding_pairs(batch.sequences, mask)
            left_out = (rows, items - 1)
        return full_softmax_cross_entropy(
            states,
            embeddings[1:],
            biases[1:],
            batch.sequences[mask] - 1,
            left_out,
            batch.item_chunk_size,
        )
    if batch.item_chunk_size is not None and batch.item_chunk_size < batch.num_items - 1:
        return _chunked_softmax(batch)
    states, targets, seen = _position_states(batch, "softmax")
    logits = batch.net.score_items(states, slice(1, None)).float()
    if seen is not None:
        logits = logits.masked_fill(seen[:, 1:], -torch.inf)
    return softmax_loss(logits, targets)


_LEFT_OUT = -1e30
"""A left-out item's score in the chunked softmax: exp() of it is 0, as of -inf, but a
chunk of left-out items only keeps a finite log-sum-exp and gradient."""


def _chunked_softmax(batch: LossInput) -> torch.Tensor:
    """:func:`softmax` in chunks for nets that do not score linearly (the mixtures): the
    log-sum-exp over items taken chunk by chunk, each chunk's (M, chunk) scores living only
    inside a checkpoint, recomputed in the backward pass, so the peak is one chunk's
    scores and their gradient, not (M, all items)."""
    if not isinstance(batch.net, ScoresItems):
        raise ValueError(
            "loss 'softmax' needs a representation with score_items, score_all "
            "and position_states (representations.ScoresItems)"
        )
    mask = batch.mask
    states = batch.net.position_states(batch.user_representation)[mask]  # (M, ...)
    targets = batch.sequences[mask]

    def chunk_logsumexp(states: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        scores = batch.net.score_items(states, slice(start, stop)).float()
        if batch.exclude_preceding:
            seen = preceding_items(batch.sequences, batch.num_items, slice(start, stop))[mask]
            scores = scores.masked_fill(seen, _LEFT_OUT)
        return torch.logsumexp(scores, dim=1)  # (M,)

    step = batch.item_chunk_size
    chunks = [
        torch.utils.checkpoint.checkpoint(
            chunk_logsumexp, states, start, min(start + step, batch.num_items), use_reentrant=False
        )
        for start in range(1, batch.num_items, step)
    ]
    normaliser = torch.logsumexp(torch.stack(chunks, dim=1), dim=1)
    return (normaliser - batch.net(states, targets).float()).mean()


def sampled_softmax(batch: LossInput) -> torch.Tensor:
    """Cross-entropy against ``num_negative_samples`` uniform items shared by the batch."""
    states, targets, seen = _position_states(batch, "sampled_softmax")
    samples = batch.random_state.randint(1, batch.num_items, batch.num_negative_samples)
    samples = torch.from_numpy(samples).to(states.device)  # (S,)
    positive = batch.net(states, targets).float()  # (M,): one state per row, Spotlight's call
    negative = batch.net.score_items(states, samples).float()  # (M, S)
    left_out = samples.unsqueeze(0) == targets.unsqueeze(1)  # accidental hits
    if seen is not None:
        left_out |= seen[:, samples]
    return sampled_softmax_loss(positive, negative, left_out)


LOSSES = {
    "pointwise": Loss(_against_one_negative(pointwise_loss)),
    "bpr": Loss(_against_one_negative(bpr_loss)),
    "hinge": Loss(_against_one_negative(hinge_loss)),
    "adaptive_hinge": Loss(adaptive_hinge),
    "softmax": Loss(softmax, over_items=True),
    "sampled_softmax": Loss(sampled_softmax, over_items=True),
}
"""Training losses by the names ``ImplicitSequenceModel(loss=...)`` accepts (Spotlight's
four, then the two over many items). A new one: a function of a :class:`LossInput` and a
line here."""
