"""The checks of :class:`~mlstm4reco.sequence_model.ImplicitSequenceModel`'s arguments,
made when it is built (not at the first fit): each bad value is a ValueError naming it."""

from __future__ import annotations

import numpy as np
import torch

from mlstm4reco.losses import LOSSES
from mlstm4reco.representations import REPRESENTATIONS
from mlstm4reco.representations.arguments import check_representation_kwargs

__all__ = ["PRECISIONS", "check_constructor_arguments"]

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Training precisions ``ImplicitSequenceModel(precision=...)`` accepts."""


def check_constructor_arguments(
    loss,
    representation,
    representation_kwargs,
    n_iter,
    batch_size,
    embedding_dim,
    num_negative_samples,
    learning_rate,
    l2,
    exclude_preceding,
    precision,
    item_chunk_size,
) -> None:
    """A ValueError for an unknown loss, representation or precision, a representation
    argument the representation does not take, or a size or rate out of range."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {sorted(LOSSES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if exclude_preceding and not LOSSES[loss].over_items:
        over_items = " or ".join(repr(name) for name, entry in LOSSES.items() if entry.over_items)
        raise ValueError(f"exclude_preceding needs loss {over_items}, not {loss!r}")
    if isinstance(representation, str) and representation not in REPRESENTATIONS:
        raise ValueError(
            f"unknown representation {representation!r}; choose from "
            f"{sorted(REPRESENTATIONS)} or pass a representation instance"
        )
    if isinstance(representation, str):
        check_representation_kwargs(
            representation, REPRESENTATIONS[representation], representation_kwargs
        )
    for name, value in (
        ("n_iter", n_iter),
        ("batch_size", batch_size),
        ("embedding_dim", embedding_dim),
        ("num_negative_samples", num_negative_samples),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if item_chunk_size is not None:
        whole = isinstance(item_chunk_size, (int, np.integer)) and not isinstance(
            item_chunk_size, bool
        )
        if not whole or item_chunk_size < 1:
            raise ValueError(
                f"item_chunk_size must be a positive integer or None, got {item_chunk_size!r}"
            )
        if loss != "softmax":
            raise ValueError(f"item_chunk_size needs loss 'softmax', not {loss!r}")
    real = (int, float, np.integer, np.floating)
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, real)
        or not learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if isinstance(l2, bool) or not isinstance(l2, real) or not l2 >= 0:
        raise ValueError(f"l2 must be a non-negative number, got {l2!r}")
