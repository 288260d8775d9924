"""Amazon product co-purchasing reviews (SNAP's ``amazon-meta.txt.gz``), built as the
Spotlight sequence experiments used it: reviews as (customer, product, rating, date).

J. Leskovec, L. Adamic and B. Adamic. The dynamics of viral marketing.
ACM Transactions on the Web 1(1), 2007. https://snap.stanford.edu/data/amazon-meta.html
"""

from __future__ import annotations

import gzip
import os
import pathlib
import re

import numpy as np
from tqdm.auto import tqdm

from mlstm4reco.datasets._download import cache_dir, find_or_download
from mlstm4reco.files import atomic_path
from mlstm4reco.interactions import Interactions
from mlstm4reco.protocols.rare import drop_rare

URL = "https://snap.stanford.edu/data/bigdata/amazon/amazon-meta.txt.gz"
FILENAME = "amazon-meta.txt.gz"
CACHE_VERSION = 1

# "    2000-7-28  cutomer: A2JW67OY8U6HHK  rating: 5  votes:  10  helpful:   9"
# ("cutomer" is spelled so in the data).
REVIEW = re.compile(rb"^\s*(\d{4})-(\d{1,2})-(\d{1,2})\s+cutomer:\s+(\S+)\s+rating:\s+(\d+)\s")
PRODUCT = re.compile(rb"^Id:\s+(\d+)\s*$")


def parse_amazon_meta(path) -> dict[str, np.ndarray]:
    """Stream ``amazon-meta.txt(.gz)`` into arrays of reviews.

    Returns int64 ``item_id`` (product ``Id`` + 1), ``user_id`` (customers numbered from 0
    in order of first appearance), ``rating`` (float32) and ``timestamp`` (unix seconds of
    the review date, UTC midnight).
    """
    path = pathlib.Path(path)
    items, users, ratings, dates = [], [], [], []
    customers: dict[bytes, int] = {}
    product = None
    with (
        open(path, "rb") as raw,
        tqdm(
            total=os.path.getsize(path), unit="B", unit_scale=True, desc=f"parsing {path.name}"
        ) as bar,
    ):
        lines = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
        for number, line in enumerate(lines, start=1):
            if number % 100_000 == 0:
                bar.update(raw.tell() - bar.n)  # compressed bytes read
            if line.startswith(b"Id:"):
                match = PRODUCT.match(line)
                if match is None:
                    raise ValueError(f"{path}, line {number}: malformed product line {line!r}")
                product = int(match.group(1)) + 1
            elif b"cutomer:" in line:
                match = REVIEW.match(line)
                if match is None:
                    raise ValueError(f"{path}, line {number}: malformed review line {line!r}")
                if product is None:
                    raise ValueError(f"{path}, line {number}: review before any 'Id:' line")
                year, month, day, customer, rating = match.groups()
                if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
                    raise ValueError(f"{path}, line {number}: impossible date in {line!r}")
                items.append(product)
                users.append(customers.setdefault(customer, len(customers)))
                ratings.append(int(rating))
                dates.append((int(year), int(month), int(day)))
        bar.update(bar.total - bar.n)
    if not items:
        raise ValueError(f"{path}: no reviews found")
    ymd = np.array(dates, dtype=np.int64)  # (N, 3)
    months = np.array((ymd[:, 0] - 1970) * 12 + ymd[:, 1] - 1, dtype="datetime64[M]")
    days = months.astype("datetime64[D]") + (ymd[:, 2] - 1).astype("timedelta64[D]")
    return {
        "item_id": np.array(items, dtype=np.int64),
        "user_id": np.array(users, dtype=np.int64),
        "rating": np.array(ratings, dtype=np.float32),
        "timestamp": days.astype("datetime64[s]").astype(np.int64),
    }


def _cached_parse(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Parse once; later loads read an ``.npz`` in the user cache, keyed on the source's
    size and modification time."""
    stat = path.stat()
    key = np.array([CACHE_VERSION, stat.st_size, int(stat.st_mtime)], dtype=np.int64)
    cached = cache_dir() / f"{path.name}.parsed.npz"
    if cached.is_file():
        with np.load(cached) as data:
            if np.array_equal(data["key"], key):
                return {name: data[name] for name in data.files if name != "key"}
    arrays = parse_amazon_meta(path)
    with atomic_path(cached) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, key=key, **arrays)
    return arrays


def filter_and_reindex(
    arrays: dict[str, np.ndarray], min_user_interactions: int, min_item_interactions: int
) -> Interactions:
    """Drop users and items with fewer interactions than the minimums (both counted on
    the unfiltered data), then number users contiguously from 0 and items from 1
    (:func:`mlstm4reco.protocols.rare.drop_rare`)."""
    data = Interactions(
        arrays["user_id"],
        arrays["item_id"],
        ratings=arrays["rating"],
        timestamps=arrays["timestamp"],
    )
    kept, _ = drop_rare(data, min_user_interactions, min_item_interactions)
    kept.id_mapping = None  # the parser's numbers, not the file's ids: nothing to map back to
    return kept


def get_amazon_dataset(
    min_user_interactions: int = 10, min_item_interactions: int = 10, data_dir=None
) -> Interactions:
    """Amazon reviews as Interactions (see :func:`parse_amazon_meta` and
    :func:`filter_and_reindex`). The ~1 GB source is parsed once and cached."""
    path = find_or_download(FILENAME, URL, None, data_dir)
    return filter_and_reindex(_cached_parse(path), min_user_interactions, min_item_interactions)
