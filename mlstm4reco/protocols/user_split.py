"""The 2018 study's protocol (Spotlight's): users split at random into train, validation and
test users; every window of a validation or test user's history is an evaluation sequence
(its last item the target)."""

from __future__ import annotations

import numpy as np

from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.protocols.base import WINDOW, Split, is_number

REQUIRED = ("seed", "test_percentage", "valid_percentage", *WINDOW)
OPTIONAL = ()


def check(options: dict) -> None:
    for name in ("test_percentage", "valid_percentage"):
        value = options[name]
        if not is_number(value) or not 0 < value < 1:
            raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")


def split(
    interactions,
    seed,
    test_percentage,
    valid_percentage,
    max_sequence_length,
    min_sequence_length,
    step_size,
) -> Split:
    """Users split ``test_percentage`` out with ``RandomState(seed)``, that part split
    again by ``valid_percentage`` into (test, valid) with the same RandomState; each part
    cut into windows of ``(max_sequence_length, min_sequence_length, step_size)``."""
    state = np.random.RandomState(seed)
    train, rest = user_based_train_test_split(interactions, test_percentage, state)
    test, valid = user_based_train_test_split(rest, valid_percentage, state)
    window = (max_sequence_length, min_sequence_length, step_size)
    parts = [part.to_sequence(*window) for part in (train, valid, test)]
    notes = {
        "protocol": "user",
        "training_windows": len(parts[0]),
        "valid_sequences": len(parts[1]),
        "test_sequences": len(parts[2]),
        "items": interactions.num_items,
    }
    return Split(*parts, notes)
