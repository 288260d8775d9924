"""Dropping rare users and items before a split, as SASRec's and BERT4Rec's preprocessing
does (users and items with fewer than 5 interactions; on MovieLens 1M that leaves the
3,416 items of their papers' tables, where the whole data has 3,706).

Counts are taken once, on the whole data (not repeated until every count reaches the
minimum, a k-core, which the papers' code does not do); an interaction stays when its
user and its item both have at least their minimum. Users and items are then numbered
contiguously again (users from 0, items from 1), so that a dropped item is no candidate
of the full ranking; the mapping to the data's ids (a user's file's raw ids, or a
built-in dataset's own ids) goes with the result as ``id_mapping``.
"""

from __future__ import annotations

import numpy as np

from mlstm4reco.id_mapping import IdMapping
from mlstm4reco.interactions import Interactions

OPTIONS = ("min_user_interactions", "min_item_interactions")
"""Protocol options every split takes: the minimum interactions of a user and of an item
(default 1: nothing dropped)."""


def check(options: dict) -> None:
    """A ValueError naming the option when a minimum is not a positive integer."""
    for name in OPTIONS:
        value = options.get(name, 1)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def drop_rare(
    interactions: Interactions, min_user_interactions: int = 1, min_item_interactions: int = 1
) -> tuple[Interactions, dict]:
    """``interactions`` without the users and items under the minimums, renumbered
    (also at minimums of 1: the ids made contiguous), and notes of what was dropped."""
    check(
        {
            "min_user_interactions": min_user_interactions,
            "min_item_interactions": min_item_interactions,
        }
    )
    users, items = interactions.user_ids, interactions.item_ids
    user_counts = np.bincount(users, minlength=interactions.num_users)
    item_counts = np.bincount(items, minlength=interactions.num_items)
    keep = (user_counts[users] >= min_user_interactions) & (
        item_counts[items] >= min_item_interactions
    )
    if not keep.any():
        raise ValueError(
            f"no interaction is left when users with fewer than {min_user_interactions} and "
            f"items with fewer than {min_item_interactions} interactions are dropped"
        )
    kept_users, new_users = np.unique(users[keep], return_inverse=True)
    kept_items, new_items = np.unique(items[keep], return_inverse=True)
    pick = lambda a: None if a is None else a[keep]  # noqa: E731
    result = Interactions(
        new_users,
        new_items + 1,
        ratings=pick(interactions.ratings),
        timestamps=pick(interactions.timestamps),
        weights=pick(interactions.weights),
        num_users=len(kept_users),
        num_items=len(kept_items) + 1,
    )
    old = interactions.id_mapping
    raw_users = kept_users if old is None else old.users[kept_users]
    raw_items = kept_items if old is None else old.items[kept_items]
    result.id_mapping = IdMapping(raw_users, [None, *raw_items])
    notes = {
        "min_user_interactions": int(min_user_interactions),
        "min_item_interactions": int(min_item_interactions),
        "users_dropped": int((user_counts > 0).sum() - len(kept_users)),
        "items_dropped": int((item_counts > 0).sum() - len(kept_items)),
        "interactions_dropped": int((~keep).sum()),
    }
    return result, notes
