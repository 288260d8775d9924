"""What the split protocols share: their result, the checks of their options, and the
windows every one of them cuts training histories into."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mlstm4reco.interactions import Interactions, SequenceInteractions
from mlstm4reco.protocols import rare

WINDOW = ("max_sequence_length", "min_sequence_length", "step_size")
"""The options of the training windows, which every protocol takes."""


class Split(NamedTuple):
    """A protocol's result: training windows, validation and test sequences (the last
    item of each row is its target, the items before it its input, 0 padding on the
    left), and counts that say what the split did (``notes``)."""

    train: SequenceInteractions
    valid: SequenceInteractions
    test: SequenceInteractions
    notes: dict
    id_mapping: object = None
    """The ids of the data the split numbered anew (:mod:`.rare`), else None."""


def check_options(name: str, module, options: dict) -> None:
    """A ValueError naming the protocol and the option when ``options`` are not those of
    the protocol ``module`` (its ``REQUIRED`` and ``OPTIONAL``, and the minimums of
    :data:`.rare.OPTIONS` every protocol takes) or fail its ``check``."""
    missing = sorted(set(module.REQUIRED) - set(options))
    optional = sorted({*module.OPTIONAL, *rare.OPTIONS})
    unknown = sorted(set(options) - set(module.REQUIRED) - set(optional))
    if missing or unknown:
        raise ValueError(
            f"protocol {name!r} takes {sorted(module.REQUIRED)} (and optionally "
            f"{optional}); missing {missing}, unknown {unknown}"
        )
    check_window(options)
    rare.check(options)
    module.check(options)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number (numpy's too), not a bool."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def check_window(options: dict) -> None:
    for name in ("max_sequence_length", "step_size"):
        if not _is_int(options[name]) or options[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {options[name]!r}")
    low, high = options["min_sequence_length"], options["max_sequence_length"]
    if not _is_int(low) or not 1 <= low <= high:
        raise ValueError(
            f"min_sequence_length must be an integer in [1, {high}] (max_sequence_length), "
            f"got {low!r}"
        )


def time_order(interactions: Interactions) -> np.ndarray:
    """Indices of the interactions by user, then timestamp; ties keep their input order
    (as :meth:`~mlstm4reco.interactions.Interactions.to_sequence`)."""
    if interactions.timestamps is None:
        raise ValueError("this protocol needs timestamps, and these interactions have none")
    return np.lexsort((interactions.timestamps, interactions.user_ids))


def history_rows(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int
) -> np.ndarray:
    """(len(ends), length) rows: row r holds ``items[starts[r]:ends[r]]``'s last ``length``
    items, left-padded with 0 (the evaluation's sequences: target last)."""
    positions = ends[:, None] - length + np.arange(length)  # (R, length)
    present = positions >= starts[:, None]
    return np.where(present, items[np.where(present, positions, 0)], 0).astype(np.int32)
