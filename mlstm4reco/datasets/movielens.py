"""MovieLens 100K, 1M and 10M from the official GroupLens archives.

F. M. Harper and J. A. Konstan. The MovieLens datasets: history and context.
ACM TiiS 5(4), 2015.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstm4reco.datasets._download import find_or_download
from mlstm4reco.datasets._parsing import parse_ratings, read_zip_member
from mlstm4reco.interactions import Interactions

BASE_URL = "https://files.grouplens.org/datasets/movielens/"


@dataclass(frozen=True)
class Variant:
    archive: str
    member: str
    sep: str
    md5: str
    num_ratings: int


VARIANTS = {
    "100K": Variant(
        "ml-100k.zip", "ml-100k/u.data", "\t", "0e33842e24a9c977be4e0107933c0723", 100_000
    ),
    "1M": Variant(
        "ml-1m.zip", "ml-1m/ratings.dat", "::", "c4d9eecfca2ab87c1945afe126590906", 1_000_209
    ),
    "10M": Variant(
        "ml-10m.zip", "ml-10M100K/ratings.dat", "::", "ce571fd55effeba0271552578f2648bd", 10_000_054
    ),
}


def read_movielens_archive(path, variant: str) -> Interactions:
    """Parse the ratings of a GroupLens MovieLens archive at ``path`` (no row-count
    check: any file in the variant's format)."""
    spec = _variant(variant)
    source = f"{path}:{spec.member}"
    arrays = parse_ratings(read_zip_member(path, spec.member), spec.sep, source)
    return Interactions(
        arrays["user_id"],
        arrays["item_id"],
        ratings=arrays["rating"],
        timestamps=arrays["timestamp"],
    )


def get_movielens_dataset(variant: str = "100K", data_dir=None) -> Interactions:
    """MovieLens ratings as Interactions, with the raw user and item ids (num_users and
    num_items are the largest id + 1, as in Spotlight's MovieLens data).

    Parameters
    ----------
    variant: '100K', '1M' or '10M'
    data_dir: folder to look in first (then ``MLSTM4RECO_DATA``, then the user cache);
        the archive is downloaded when none has it.
    """
    spec = _variant(variant)
    path = find_or_download(spec.archive, BASE_URL + spec.archive, spec.md5, data_dir)
    interactions = read_movielens_archive(path, variant)
    if len(interactions) != spec.num_ratings:
        raise ValueError(
            f"{path}: expected {spec.num_ratings:,} ratings in MovieLens {variant}, found "
            f"{len(interactions):,}; the file is truncated or not the official archive"
        )
    return interactions


def _variant(variant: str) -> Variant:
    key = str(variant).upper()
    if key not in VARIANTS:
        raise ValueError(f"unknown MovieLens variant {variant!r}; choose from {sorted(VARIANTS)}")
    return VARIANTS[key]
