"""A global temporal split (the leakage-free protocol of recent benchmarks; Ji et al., "A
Critical Study on Data Leakage in Recommender System Offline Evaluation", TOIS 2023).

Two cutoffs on the time line, each a timestamp (``valid_cutoff``, ``test_cutoff``) or a
quantile of all timestamps (``valid_quantile``, ``test_quantile``), validation's earlier.
Training uses only the interactions before the validation cutoff, so that no future
interaction reaches the model. A user with an interaction at or after a cutoff (and
before the next cutoff, for validation) is evaluated on the first such interaction given
their whole history before the cutoff (the last ``max_sequence_length`` items); a user
with no history before it cannot be, and is counted. Items first seen at or after a cutoff
cannot have been learnt: those targets are counted too (they stay in the evaluation: a
model that cannot score new items pays for it, as it would in use).
"""

from __future__ import annotations

import numpy as np

from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.protocols.base import WINDOW, Split, history_rows, is_number, time_order

REQUIRED = WINDOW
OPTIONAL = ("seed", "valid_cutoff", "test_cutoff", "valid_quantile", "test_quantile")
DEFAULT_QUANTILES = {"valid": 0.8, "test": 0.9}


def check(options: dict) -> None:
    for part in ("valid", "test"):
        cutoff, quantile = options.get(f"{part}_cutoff"), options.get(f"{part}_quantile")
        if cutoff is not None and quantile is not None:
            raise ValueError(f"give {part}_cutoff or {part}_quantile, not both")
        if cutoff is not None and not (is_number(cutoff) and np.isfinite(cutoff)):
            raise ValueError(f"{part}_cutoff must be a timestamp (a number), got {cutoff!r}")
        if quantile is not None and not (is_number(quantile) and 0 < quantile < 1):
            raise ValueError(f"{part}_quantile must be a number in (0, 1), got {quantile!r}")


def cutoffs(timestamps: np.ndarray, options: dict) -> tuple[float, float]:
    """(valid cutoff, test cutoff) as timestamps; a ValueError unless valid < test."""
    found = {}
    for part in ("valid", "test"):
        cutoff = options.get(f"{part}_cutoff")
        if cutoff is None:
            quantile = options.get(f"{part}_quantile", DEFAULT_QUANTILES[part])
            cutoff = float(np.quantile(timestamps, quantile, method="lower"))
        found[part] = float(cutoff)
    if not found["valid"] < found["test"]:
        raise ValueError(
            f"the validation cutoff {found['valid']} must come before the test "
            f"cutoff {found['test']}"
        )
    return found["valid"], found["test"]


def _targets(times, starts, counts, cutoff, until):
    """Per user: the index of the first interaction at or after ``cutoff`` (and before
    ``until``), or -1; and the number of interactions before ``cutoff`` (the histories are
    in time order, so those come first)."""
    before = np.add.reduceat((times < cutoff).astype(np.int64), starts)
    index = starts + before
    inside = before < counts
    safe = np.where(inside, index, 0)
    return np.where(inside & (times[safe] < until), index, -1), before


def split(
    interactions, max_sequence_length, min_sequence_length, step_size, seed=None, **cutoff_options
) -> Split:
    order = time_order(interactions)
    users = interactions.user_ids[order]
    items = interactions.item_ids[order]
    times = np.asarray(interactions.timestamps, dtype=np.float64)[order]
    valid_cutoff, test_cutoff = cutoffs(times, cutoff_options)
    ids, starts, counts = np.unique(users, return_index=True, return_counts=True)
    train = interactions.subset(order[times < valid_cutoff]).to_sequence(
        max_sequence_length, min_sequence_length, step_size
    )
    first_seen = np.full(interactions.num_items, np.inf)
    np.minimum.at(first_seen, items, times)
    parts, notes = (
        {},
        {
            "protocol": "temporal",
            "valid_cutoff": valid_cutoff,
            "test_cutoff": test_cutoff,
            "training_windows": len(train),
            "training_interactions": int((times < valid_cutoff).sum()),
            "items": interactions.num_items,
        },
    )
    spans = (("valid", valid_cutoff, test_cutoff), ("test", test_cutoff, np.inf))
    for part, cutoff, until in spans:
        target, before = _targets(times, starts, counts, cutoff, until)
        has_target = target >= 0
        evaluated = has_target & (before > 0)
        rows = history_rows(
            items, starts[evaluated], starts[evaluated] + before[evaluated], max_sequence_length - 1
        )
        sequences = np.concatenate([rows, items[target[evaluated]][:, None]], axis=1)
        parts[part] = SequenceInteractions(
            sequences.astype(np.int32), user_ids=ids[evaluated], num_items=interactions.num_items
        )
        new_items = first_seen[items[target[evaluated]]] >= cutoff
        notes.update(
            {
                f"{part}_users": int(evaluated.sum()),
                f"{part}_users_without_history": int((has_target & (before == 0)).sum()),
                f"{part}_targets_new_items": int(new_items.sum()),
                f"{part}_new_items": int((np.isfinite(first_seen) & (first_seen >= cutoff)).sum()),
            }
        )
    return Split(train, parts["valid"], parts["test"], notes)
