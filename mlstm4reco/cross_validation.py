"""Train/test splits of interactions, drawing from a ``RandomState`` exactly as
Spotlight's ``spotlight.cross_validation`` does, so a seed gives Spotlight's split."""

from __future__ import annotations

import numpy as np
from sklearn.utils import murmurhash3_32

from mlstm4reco.interactions import Interactions

__all__ = ["random_train_test_split", "user_based_train_test_split"]


def _random_state(random_state) -> np.random.RandomState:
    if random_state is None:
        return np.random.RandomState()
    if isinstance(random_state, (int, np.integer)):
        return np.random.RandomState(random_state)
    if isinstance(random_state, np.random.RandomState):
        return random_state
    raise ValueError(
        "random_state must be None, an int or a numpy RandomState, got "
        f"{type(random_state).__name__}"
    )


def _check_interactions(interactions) -> None:
    if not isinstance(interactions, Interactions):
        raise ValueError(
            f"interactions must be Interactions (split them, then cut sequences with "
            f"to_sequence), got {type(interactions).__name__}"
        )


def _check_percentage(test_percentage: float) -> None:
    if not 0.0 <= test_percentage <= 1.0:
        raise ValueError(f"test_percentage must be in [0, 1], got {test_percentage}")


def random_train_test_split(
    interactions: Interactions, test_percentage: float = 0.2, random_state=None
) -> tuple[Interactions, Interactions]:
    """Shuffle the interactions and put the last ``test_percentage`` of them in test."""
    _check_interactions(interactions)
    _check_percentage(test_percentage)
    random_state = _random_state(random_state)
    shuffled = np.arange(len(interactions))
    random_state.shuffle(shuffled)
    cutoff = int((1.0 - test_percentage) * len(interactions))
    return interactions.subset(shuffled[:cutoff]), interactions.subset(shuffled[cutoff:])


def user_based_train_test_split(
    interactions: Interactions, test_percentage: float = 0.2, random_state=None
) -> tuple[Interactions, Interactions]:
    """Split by user: all of a user's interactions go to train or all to test.

    One draw ``random_state.randint(0, 2**32 - 1, dtype=int64)`` seeds MurmurHash3
    (32-bit, positive) of each user id; a user is in test when
    ``hash % 100 / 100 < test_percentage``. Returns (train, test).
    """
    _check_interactions(interactions)
    _check_percentage(test_percentage)
    random_state = _random_state(random_state)
    seed = random_state.randint(0, np.iinfo(np.uint32).max, dtype=np.int64)
    hashes = murmurhash3_32(interactions.user_ids.astype(np.int32), seed=int(seed), positive=True)
    in_test = (hashes % 100 / 100.0) < test_percentage
    return interactions.subset(~in_test), interactions.subset(in_test)
