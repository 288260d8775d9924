"""Goodbooks-10k: ratings of 10,000 books (the ``ratings.csv`` of the goodbooks-10k
release: ``user_id,book_id,rating`` with a header), which the 2018 runner listed beside
MovieLens and Amazon. The file has no timestamps, so the file's order is each user's
order, as Spotlight's loader takes it.

Z. Zajac. Goodbooks-10k: a new dataset for book recommendations. FastML, 2017.
"""

from __future__ import annotations

import numpy as np

from mlstm4reco.datasets._download import find_or_download
from mlstm4reco.datasets.user_file import read_table
from mlstm4reco.interactions import Interactions

__all__ = ["get_goodbooks_dataset"]

FILENAME = "goodbooks-10k-ratings.csv"
"""The release's ``ratings.csv``, under this name in a data folder."""
URL = "https://raw.githubusercontent.com/zygmuntz/goodbooks-10k/master/ratings.csv"
COLUMNS = ("user_id", "book_id", "rating")


def read_goodbooks_ratings(path) -> Interactions:
    """The ratings of a goodbooks ``ratings.csv`` at ``path``: user and book ids as in the
    file (book ids from 1), the row number as the timestamp."""
    frame = read_table(path, sep=",")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: no column {missing[0]!r}; expected a header {','.join(COLUMNS)}, "
            f"got {list(frame.columns)}"
        )
    arrays = {}
    for column in COLUMNS:
        values = np.asarray(frame[column].str.strip())
        good = np.char.isdigit(values.astype(str))
        if not good.all():
            first = int(np.flatnonzero(~good)[0])
            raise ValueError(
                f"{path}, line {first + 2}: column {column!r}: expected a whole "
                f"number, got {frame[column].iloc[first]!r}"
            )
        arrays[column] = values.astype(np.int64)
    if (arrays["book_id"] == 0).any():
        first = int(np.flatnonzero(arrays["book_id"] == 0)[0])
        raise ValueError(f"{path}, line {first + 2}: book id 0 (ids start at 1; 0 pads sequences)")
    return Interactions(
        arrays["user_id"],
        arrays["book_id"],
        ratings=arrays["rating"].astype(np.float32),
        timestamps=np.arange(len(frame), dtype=np.int64),
    )


def get_goodbooks_dataset(data_dir=None) -> Interactions:
    """Goodbooks-10k as Interactions: ``goodbooks-10k-ratings.csv`` (the release's
    ``ratings.csv``) from ``data_dir``, ``MLSTM4RECO_DATA`` or the cache, downloaded
    when absent."""
    return read_goodbooks_ratings(find_or_download(FILENAME, URL, None, data_dir))
