"""Spotlight's losses for implicit feedback: pure functions of prediction tensors.

Each takes the predictions of positive items and of sampled negative items (same shape,
or with a leading dimension of n negatives for :func:`adaptive_hinge_loss`) and an
optional mask that is False at padded positions, and returns the masked mean.

References
----------
Rendle et al. BPR: Bayesian personalized ranking from implicit feedback. UAI 2009.
Weston et al. WSABIE: Scaling up to large vocabulary image annotation. IJCAI 2011.
"""

from __future__ import annotations

import torch

__all__ = [
    "pointwise_loss", "bpr_loss", "hinge_loss", "adaptive_hinge_loss", "softmax_loss",
    "sampled_softmax_loss", "LOSSES", "SAMPLED_LOSSES", "SOFTMAX_LOSSES",
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


SAMPLED_LOSSES = {
    "pointwise": pointwise_loss,
    "bpr": bpr_loss,
    "hinge": hinge_loss,
    "adaptive_hinge": adaptive_hinge_loss,
}
"""Spotlight's losses: positive and negative predictions, and a mask."""

SOFTMAX_LOSSES = {"softmax": softmax_loss, "sampled_softmax": sampled_softmax_loss}
"""Losses over many items per position (beyond Spotlight)."""

LOSSES = {**SAMPLED_LOSSES, **SOFTMAX_LOSSES}
