"""Leave-one-out by time, the convention of SASRec and BERT4Rec: each user's last
interaction is the test target, the one before it the validation target.

Per user, interactions in timestamp order (ties keep their input order, as
``to_sequence``). Users with fewer than 3 interactions cannot give a training item, a
validation target and a test target: they stay in training only (counted in the notes).
Training windows are cut from each history before its validation item; the validation
sequence is the history up to its target, the test sequence the history up to the test
target, validation item included (the last ``max_sequence_length`` items, target last).
"""

from __future__ import annotations

import numpy as np

from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.protocols.base import WINDOW, Split, history_rows, time_order

REQUIRED = WINDOW
OPTIONAL = ("seed",)  # the runner's seed; the split draws nothing
MIN_INTERACTIONS = 3


def check(options: dict) -> None:
    """Nothing beyond the windows."""


def split(interactions, max_sequence_length, min_sequence_length, step_size, seed=None) -> Split:
    order = time_order(interactions)
    users = interactions.user_ids[order]
    items = interactions.item_ids[order]
    ids, starts, counts = np.unique(users, return_index=True, return_counts=True)
    evaluated = counts >= MIN_INTERACTIONS
    ends = starts + counts  # exclusive
    # training: every interaction but the last two of an evaluated user
    keep = np.ones(len(items), dtype=bool)
    keep[(ends - 1)[evaluated]] = False
    keep[(ends - 2)[evaluated]] = False
    train = interactions.subset(order[keep]).to_sequence(
        max_sequence_length, min_sequence_length, step_size
    )
    L = max_sequence_length
    s, e = starts[evaluated], ends[evaluated]
    valid = SequenceInteractions(
        history_rows(items, s, e - 1, L), user_ids=ids[evaluated], num_items=interactions.num_items
    )
    test = SequenceInteractions(
        history_rows(items, s, e, L), user_ids=ids[evaluated], num_items=interactions.num_items
    )
    notes = {
        "protocol": "leave_one_out",
        "users": int(len(ids)),
        "users_evaluated": int(evaluated.sum()),
        "users_in_training_only": int((~evaluated).sum()),
        "training_windows": len(train),
        "training_interactions": int(keep.sum()),
        "items": interactions.num_items,
    }
    return Split(train, valid, test, notes)
