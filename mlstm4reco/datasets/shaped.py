"""Synthetic interactions with a real dataset's shape, and writers of the MovieLens 10M
and SNAP Amazon file formats, so that the real parsers can be measured on full-sized
files that cannot be downloaded here (``benchmarks/scale.py``).

The shape is the numbers of users, items and interactions, a power-law (Zipf) item
popularity and user activity with a floor (MovieLens keeps users with at least 20
ratings), ratings drawn from MovieLens' distribution, and timestamps spread over the
dataset's years, increasing within each user's history. Items are drawn by popularity
independently (a user may meet an item twice, which the real data never does: a cost
shape, not a dataset to learn from)."""

from __future__ import annotations

import gzip
import pathlib
import zipfile
from typing import NamedTuple

import numpy as np
import pandas as pd

from mlstm4reco.files import atomic_path
from mlstm4reco.interactions import Interactions

RATING_SHARES = (0.06, 0.11, 0.26, 0.35, 0.22)
"""MovieLens 1M's shares of ratings 1..5, rounded."""
DAY = 86_400


class Shape(NamedTuple):
    num_users: int
    num_items: int
    num_interactions: int
    min_per_user: int
    first: int  # unix seconds of the first and last interaction
    last: int


SHAPES = {
    "ml1m": Shape(6_040, 3_706, 1_000_209, 20, 956_703_932, 1_046_454_590),
    "ml10m": Shape(69_878, 10_677, 10_000_054, 20, 789_652_009, 1_231_131_736),
    # SNAP gives 548,552 products and 7,781,990 reviews; the customers are an assumption.
    "amazon": Shape(1_500_000, 548_552, 7_781_990, 1, 805_248_000, 1_136_073_600),
}
"""Published sizes (MovieLens' READMEs; SNAP's amazon-meta page) and approximate time
spans."""


def shaped_interactions(
    num_users: int,
    num_items: int,
    num_interactions: int,
    min_per_user: int = 1,
    item_exponent: float = 1.0,
    user_exponent: float = 1.0,
    first: int = 0,
    last: int = 1_000 * DAY,
    random_state=None,
) -> Interactions:
    """``num_interactions`` interactions of ``num_users`` users (ids 1..num_users) with
    ``num_items`` items (ids 1..num_items): item popularity and user activity fall as
    rank ** -exponent (ranks shuffled over ids), every user has at least
    ``min_per_user``; timestamps are whole days in [first, last], increasing within
    each user's history (ties broken by the order drawn). Vectorised: 10M interactions
    take seconds."""
    if min(num_users, num_items) < 1 or min_per_user < 1:
        raise ValueError(
            f"need num_users, num_items and min_per_user >= 1; got {num_users}, {num_items}, "
            f"{min_per_user}"
        )
    if num_interactions < num_users * min_per_user:
        raise ValueError(
            f"num_interactions={num_interactions:,} cannot give {num_users:,} users "
            f"{min_per_user} each"
        )
    if last < first:
        raise ValueError(f"last={last} is before first={first}")
    rng = np.random.default_rng(random_state)
    lengths = _lengths(num_users, num_interactions, min_per_user, user_exponent, rng)
    popularity = _zipf(num_items, item_exponent, rng)
    items = rng.choice(num_items, size=num_interactions, p=popularity) + 1
    users = np.repeat(np.arange(1, num_users + 1), lengths)
    days = rng.integers(first // DAY, last // DAY + 1, size=num_interactions)
    order = np.lexsort((days, users))  # each user's days in increasing order
    ratings = rng.choice(np.arange(1, 6), size=num_interactions, p=RATING_SHARES)
    return Interactions(
        users,
        items,
        ratings=ratings.astype(np.float32),
        timestamps=days[order] * DAY,
        num_users=num_users + 1,
        num_items=num_items + 1,
    )


def shaped_like(name: str, scale: float = 1.0, random_state=None) -> Interactions:
    """:func:`shaped_interactions` with the shape of ``SHAPES[name]`` (``ml1m``,
    ``ml10m``, ``amazon``), its users and interactions times ``scale``."""
    if name not in SHAPES:
        raise ValueError(f"no shape named {name!r}; known: {', '.join(SHAPES)}")
    shape = SHAPES[name]
    users = max(1, round(shape.num_users * scale))
    return shaped_interactions(
        users,
        shape.num_items,
        max(users * shape.min_per_user, round(shape.num_interactions * scale)),
        min_per_user=shape.min_per_user,
        first=shape.first,
        last=shape.last,
        random_state=random_state,
    )


def _zipf(n: int, exponent: float, rng) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return rng.permutation(weights / weights.sum())


def _lengths(users: int, total: int, floor: int, exponent: float, rng) -> np.ndarray:
    """Per-user counts summing to ``total``, each at least ``floor``, the rest shared as
    rank ** -exponent (largest remainders rounded up)."""
    share = _zipf(users, exponent, rng) * (total - users * floor)
    lengths = np.floor(share).astype(np.int64)
    short = total - users * floor - lengths.sum()
    lengths[np.argsort(share - lengths)[::-1][:short]] += 1
    return lengths + floor


def write_movielens_ratings(
    interactions: Interactions, path, member: str = "ml-10M100K/ratings.dat"
) -> pathlib.Path:
    """A GroupLens zip at ``path`` holding ``member`` as ``UserID::MovieID::Rating::
    Timestamp`` lines (MovieLens 1M and 10M's format), written atomically."""
    path = pathlib.Path(path)
    frame = pd.DataFrame(
        {
            "u": interactions.user_ids,
            "i": interactions.item_ids,
            "r": _ratings(interactions).astype(np.int64),
            "t": _timestamps(interactions),
        }
    ).astype(str)
    text = (frame["u"] + "::" + frame["i"] + "::" + frame["r"] + "::" + frame["t"] + "\n").str.cat()
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(
            tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
        ) as archive:
            archive.writestr(member, text)
    return path


def write_amazon_meta(interactions: Interactions, path) -> pathlib.Path:
    """SNAP's ``amazon-meta.txt.gz`` at ``path``, written atomically: a product block
    (``Id:``, ``ASIN:``, ``reviews:``) per item that has reviews (``Id`` = item id - 1) and
    a review line per interaction (its day, customer ``C<user id>``, rating), reviews of
    a product in the order given."""
    path = pathlib.Path(path)
    items = np.asarray(interactions.item_ids)
    order = np.argsort(items, kind="stable")
    items = items[order]
    days = pd.DatetimeIndex(pd.to_datetime(_timestamps(interactions)[order], unit="s"))
    date = (
        _text(days.year) + "-" + _text(days.month) + "-" + _text(days.day)
    )  # as SNAP writes it: 2000-7-28
    reviews = pd.DataFrame(
        {
            "item": items,
            "line": "    "
            + date
            + "  cutomer: C"
            + pd.Series(interactions.user_ids[order]).astype(str).to_numpy()
            + "  rating: "
            + pd.Series(_ratings(interactions)[order].astype(np.int64)).astype(str).to_numpy()
            + "  votes:   0  helpful:   0\n",
        }
    )
    counts = reviews.groupby("item", sort=True)["line"].size()
    means = pd.Series(_ratings(interactions)[order]).groupby(items).mean()
    ids = counts.index.to_numpy() - 1
    headers = pd.DataFrame(
        {
            "item": counts.index.to_numpy(),
            "line": "\nId:   "
            + pd.Series(ids).astype(str).to_numpy()
            + "\nASIN: "
            + pd.Series(ids).map("{:010d}".format).to_numpy()
            + "\n  reviews: total: "
            + counts.astype(str).to_numpy()
            + "  downloaded: "
            + counts.astype(str).to_numpy()
            + "  avg rating: "
            + means.round(1).astype(str).to_numpy()
            + "\n",
        }
    )
    blocks = pd.concat([headers, reviews], ignore_index=True)
    first = np.r_[np.zeros(len(headers), dtype=np.int8), np.ones(len(reviews), dtype=np.int8)]
    blocks = blocks.iloc[np.lexsort((np.arange(len(blocks)), first, blocks["item"].to_numpy()))]
    text = "# Full information about Amazon Share the Love products\n"
    text += f"Total items: {int(counts.index.max())}\n" + blocks["line"].str.cat()
    with atomic_path(path) as tmp:
        with gzip.open(tmp, "wt", compresslevel=1) as handle:
            handle.write(text)
    return path


def _text(values) -> np.ndarray:
    return pd.Series(np.asarray(values)).astype(str).to_numpy()


def _ratings(interactions: Interactions) -> np.ndarray:
    if interactions.ratings is None:
        return np.full(len(interactions), 5.0)
    return np.asarray(interactions.ratings)


def _timestamps(interactions: Interactions) -> np.ndarray:
    if interactions.timestamps is None:
        raise ValueError("these interactions have no timestamps to write")
    return np.asarray(interactions.timestamps, dtype=np.int64)
