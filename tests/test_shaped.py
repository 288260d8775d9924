"""Synthetic data with a real dataset's shape, and the MovieLens 10M and SNAP Amazon
writers, read back by the real parsers."""

import numpy as np
import pandas as pd
import pytest

from mlstm4reco.datasets import amazon, shaped
from mlstm4reco.datasets.movielens import read_movielens_archive


@pytest.fixture(scope="module")
def data():
    return shaped.shaped_interactions(
        2_000,
        1_000,
        200_000,
        min_per_user=20,
        first=956_703_932,
        last=1_046_454_590,
        random_state=0,
    )


def test_the_shape_is_the_one_asked_for(data):
    frame = pd.DataFrame({"u": data.user_ids, "i": data.item_ids, "t": data.timestamps})
    assert len(frame) == 200_000 and data.num_users == 2_001 and data.num_items == 1_001
    per_user = frame.groupby("u").size()
    assert per_user.index.tolist() == list(range(1, 2_001)) and per_user.min() >= 20
    assert frame["i"].between(1, 1_000).all()
    assert (frame["t"] % shaped.DAY == 0).all()
    assert frame["t"].between(956_703_932 - shaped.DAY, 1_046_454_590).all()
    assert frame.groupby("u")["t"].apply(lambda t: t.is_monotonic_increasing).all()
    assert set(np.unique(data.ratings)) <= {1, 2, 3, 4, 5}


def _slope(counts) -> float:
    """The log-log slope of counts against rank, over the ranks that hold most data."""
    ranked = np.sort(np.asarray(counts))[::-1]
    ranks = np.arange(1, len(ranked) + 1)
    top = slice(0, len(ranked) // 5)
    return np.polyfit(np.log(ranks[top]), np.log(ranked[top]), 1)[0]


def test_popularity_and_activity_fall_as_a_power_law(data):
    assert _slope(np.bincount(data.item_ids)[1:]) == pytest.approx(-1.0, abs=0.15)
    beyond_floor = np.bincount(data.user_ids)[1:] - 20
    assert _slope(beyond_floor) == pytest.approx(-1.0, abs=0.15)
    steeper = shaped.shaped_interactions(500, 1_000, 100_000, item_exponent=1.5, random_state=0)
    assert _slope(np.bincount(steeper.item_ids)[1:]) == pytest.approx(-1.5, abs=0.2)


def test_the_same_seed_gives_the_same_data():
    a, b = (shaped.shaped_interactions(50, 40, 1_000, random_state=3) for _ in range(2))
    for name in ("user_ids", "item_ids", "timestamps", "ratings"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


def test_shapes_of_real_datasets_scale_down():
    small = shaped.shaped_like("ml10m", scale=0.01, random_state=0)
    shape = shaped.SHAPES["ml10m"]
    assert small.num_users - 1 == round(shape.num_users * 0.01)
    assert len(small) == round(shape.num_interactions * 0.01)
    assert small.num_items - 1 == shape.num_items
    with pytest.raises(ValueError, match="no shape named 'ml20m'"):
        shaped.shaped_like("ml20m")


def test_movielens_writer_reads_back_through_the_parser(tmp_path, data):
    path = shaped.write_movielens_ratings(data, tmp_path / "ml-10m.zip")
    back = read_movielens_archive(path, "10M")
    for name in ("user_ids", "item_ids", "timestamps", "ratings"):
        assert np.array_equal(getattr(back, name), getattr(data, name)), name


def test_amazon_writer_reads_back_through_the_parser(tmp_path, data):
    path = shaped.write_amazon_meta(data, tmp_path / "amazon-meta.txt.gz")
    parsed = amazon.parse_amazon_meta(path)
    expected = pd.DataFrame(
        {"item": data.item_ids, "user": data.user_ids, "t": data.timestamps, "r": data.ratings}
    ).sort_values("item", kind="stable")  # the file holds each product's reviews together
    assert np.array_equal(parsed["item_id"], expected["item"])
    assert np.array_equal(parsed["timestamp"], expected["t"])
    assert np.array_equal(parsed["rating"], expected["r"])
    # customers are renumbered by first appearance: one to one with the users written
    pairs = pd.DataFrame({"written": expected["user"].to_numpy(), "read": parsed["user_id"]})
    assert len(pairs.drop_duplicates()) == pairs["written"].nunique() == pairs["read"].nunique()


def test_bad_shapes_are_refused():
    for args, message in (
        ((0, 10, 100), "need num_users, num_items and min_per_user >= 1"),
        ((10, 10, 50, 6), "cannot give 10 users 6 each"),
    ):
        with pytest.raises(ValueError, match=message):
            shaped.shaped_interactions(*args)
    with pytest.raises(ValueError, match="last=1 is before first=5"):
        shaped.shaped_interactions(10, 10, 100, first=5, last=1)
