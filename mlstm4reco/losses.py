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

__all__ = ["pointwise_loss", "bpr_loss", "hinge_loss", "adaptive_hinge_loss", "LOSSES"]


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


LOSSES = {
    "pointwise": pointwise_loss,
    "bpr": bpr_loss,
    "hinge": hinge_loss,
    "adaptive_hinge": adaptive_hinge_loss,
}
