import numpy as np
import pytest
from conftest import require_archive
from sklearn.utils import murmurhash3_32

from mlstm4reco.cross_validation import random_train_test_split, user_based_train_test_split
from mlstm4reco.datasets import get_movielens_dataset, get_synthetic_dataset
from mlstm4reco.interactions import Interactions
from mlstm4reco.study.config import config_path, load_config
from mlstm4reco.study.protocol import load_splits


def random_interactions(seed=0, n=2000):
    rng = np.random.RandomState(seed)
    return Interactions(
        rng.randint(0, 300, n), rng.randint(1, 50, n), timestamps=np.arange(n), ratings=rng.rand(n)
    )


def test_user_based_split_follows_spotlights_draw():
    data = random_interactions()
    train, test = user_based_train_test_split(data, 0.3, np.random.RandomState(11))
    # Independent reference: one draw from the RandomState, then a scalar hash per user.
    seed = np.random.RandomState(11).randint(0, 2**32 - 1, dtype=np.int64)
    in_test = {
        u
        for u in set(data.user_ids.tolist())
        if murmurhash3_32(int(u), seed=int(seed), positive=True) % 100 / 100.0 < 0.3
    }
    assert set(test.user_ids.tolist()) == in_test
    assert not set(train.user_ids.tolist()) & in_test
    assert len(train) + len(test) == len(data)
    assert train.num_items == test.num_items == data.num_items
    assert train.num_users == data.num_users
    # The interactions keep their rows' fields together and their order.
    mask = np.isin(data.user_ids, list(in_test))
    np.testing.assert_array_equal(test.timestamps, data.timestamps[mask])
    np.testing.assert_array_equal(test.ratings, data.ratings[mask])


def test_user_based_split_consumes_one_draw():
    state = np.random.RandomState(5)
    user_based_train_test_split(random_interactions(), 0.2, state)
    reference = np.random.RandomState(5)
    reference.randint(0, 2**32 - 1, dtype=np.int64)
    assert state.randint(1000) == reference.randint(1000)


def test_random_split():
    data = random_interactions()
    train, test = random_train_test_split(data, 0.25, random_state=3)
    assert len(test) == len(data) - int(0.75 * len(data))
    pairs = lambda d: sorted(zip(d.timestamps.tolist(), d.user_ids.tolist()))  # noqa: E731
    assert pairs(train) + pairs(test) != [] and sorted(pairs(train) + pairs(test)) == pairs(data)
    again, _ = random_train_test_split(data, 0.25, random_state=3)
    np.testing.assert_array_equal(again.timestamps, train.timestamps)
    with pytest.raises(ValueError, match="test_percentage must be in"):
        random_train_test_split(data, 1.5)
    with pytest.raises(ValueError, match="random_state must be"):
        user_based_train_test_split(data, 0.2, random_state="seed")
    for split in (random_train_test_split, user_based_train_test_split):
        with pytest.raises(
            ValueError, match="interactions must be Interactions .*, got SequenceInteractions"
        ):
            split(data.to_sequence(10), 0.2)


def protocol(data, length=100, minimum=20, step=100):
    """The 2018 study's protocol: seed 72, 20% of users held out, halved into test/valid."""
    state = np.random.RandomState(72)
    train, rest = user_based_train_test_split(data, 0.2, state)
    test, valid = user_based_train_test_split(rest, 0.5, state)
    return [part.to_sequence(length, minimum, step) for part in (train, valid, test)]


@pytest.mark.parametrize(
    "dataset,archive,expected,num_items",
    [
        ("ml1m", "ml-1m.zip", (9869, 1302, 1266), 3953),
        ("ml100k", "ml-100k.zip", (1169, 119, 146), 1683),
    ],
)
def test_acceptance_figures_of_the_2018_protocol(dataset, archive, expected, num_items):
    """The sequence counts of the study's protocol, through the runner's own path: the
    shipped config, read and checked, and the splits it builds for every trial."""
    folder = require_archive(archive)
    config = load_config(config_path(dataset, "mlstm"))
    train, valid, test = load_splits(config, data_dir=folder)
    assert (len(train), len(valid), len(test)) == expected
    assert train.num_items == valid.num_items == test.num_items == num_items
    assert not set(train.user_ids.tolist()) & set(test.user_ids.tolist())
    assert not set(valid.user_ids.tolist()) & set(test.user_ids.tolist())
    # the same figures from the library's functions called by hand, as a user would
    variant = {"ml1m": "1M", "ml100k": "100K"}[dataset]
    by_hand = protocol(get_movielens_dataset(variant, data_dir=folder))
    assert [len(part) for part in by_hand] == list(expected)


def test_synthetic_protocol_runs():
    train, valid, test = protocol(get_synthetic_dataset(random_state=0), 20, 5, 20)
    assert len(train) > len(valid) > 0 and len(test) > 0
