"""Synthetic sequential data from a Markov chain over items: the embedded dataset that
needs no download, with structure a sequence model can learn."""

from __future__ import annotations

import numpy as np

from mlstm4reco.interactions import Interactions


def get_synthetic_dataset(
    num_users: int = 100,
    num_items: int = 100,
    num_interactions: int = 10_000,
    concentration: float = 0.05,
    order: int = 1,
    random_state=None,
) -> Interactions:
    """Users walk an order-``order`` Markov chain over items 1..num_items - 1.

    Each state (the last ``order`` items, hashed to one of ``num_items - 1`` rows) has a
    next-item distribution drawn from a symmetric Dirichlet with ``concentration``: small
    values give nearly deterministic transitions, large ones nearly uniform (unlearnable)
    ones. Interactions are split evenly over users; timestamps are positions in the walk.

    Returns
    -------
    Interactions with ids 1..num_users (users) and 1..num_items - 1 (items; 0 is padding).
    """
    if num_items < 3 or num_users < 1 or num_interactions < num_users:
        raise ValueError(
            f"need num_items >= 3, num_users >= 1 and num_interactions >= num_users; got "
            f"{num_items}, {num_users}, {num_interactions}"
        )
    if concentration <= 0 or order < 1:
        raise ValueError(f"need concentration > 0 and order >= 1; got {concentration}, {order}")
    rng = (
        random_state
        if isinstance(random_state, np.random.RandomState)
        else np.random.RandomState(random_state)
    )
    n = num_items - 1  # real items 1..n
    transitions = rng.dirichlet(np.full(n, concentration), size=n)  # (n, n)
    cumulative = np.cumsum(transitions, axis=1)
    weights = rng.randint(1, n, size=order)  # mixes the last `order` items into a row
    per_user = num_interactions // num_users
    lengths = np.full(num_users, per_user)
    lengths[: num_interactions - per_user * num_users] += 1
    walks = np.empty((num_users, lengths.max()), dtype=np.int64)  # items 0..n-1
    walks[:, :order] = rng.randint(0, n, size=(num_users, order))
    for t in range(order, walks.shape[1]):  # vectorised over users
        state = (walks[:, t - order : t] * weights).sum(1) % n
        draws = rng.random_sample(num_users)[:, None]
        walks[:, t] = np.minimum((cumulative[state] < draws).sum(1), n - 1)
    mask = np.arange(walks.shape[1])[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(1, num_users + 1)[:, None], walks.shape)[mask]
    timestamps = np.broadcast_to(np.arange(walks.shape[1])[None, :], walks.shape)[mask]
    return Interactions(
        users,
        walks[mask] + 1,
        timestamps=timestamps,
        num_users=num_users + 1,
        num_items=num_items,
    )
