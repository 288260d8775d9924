"""Dropping rare users and items before a split (protocols.rare) against a pandas
implementation, through every protocol, the runner's --min-interactions, and on
MovieLens 1M against the item count of SASRec's paper."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, require_archive
from test_experiments import tiny_config
from test_protocols import WINDOW

from mlstm4reco.datasets import get_movielens_dataset
from mlstm4reco.id_mapping import IdMapping
from mlstm4reco.interactions import Interactions
from mlstm4reco.protocols import PROTOCOLS, rare, split
from mlstm4reco.study.adjust import with_minimums
from mlstm4reco.study.config import load_config
from mlstm4reco.study.errors import UserError

sys.path.insert(0, str(ROOT / "experiments"))
import run  # noqa: E402


def skewed(seed=0, users=50, items=60, n=700):
    """Interactions with many rare users and items (geometric activity and popularity),
    ids with gaps (some ids never used), timestamps and ratings."""
    rng = np.random.RandomState(seed)
    user_ids = np.minimum(rng.geometric(0.06, n), users - 1)
    item_ids = np.minimum(rng.geometric(0.05, n), items - 1)
    return Interactions(
        user_ids,
        item_ids,
        ratings=rng.randint(1, 6, n),
        timestamps=rng.randint(0, 1000, n),
        num_users=users + 3,
        num_items=items + 5,
    )


def pandas_drop_rare(data, min_users, min_items):
    """The rows a one-pass filter keeps: counts on the whole frame, both minimums met."""
    df = pd.DataFrame(
        {
            "user": data.user_ids,
            "item": data.item_ids,
            "time": data.timestamps,
            "rating": data.ratings,
        }
    )
    users = df.groupby("user")["user"].transform("size")
    items = df.groupby("item")["item"].transform("size")
    return df[(users >= min_users) & (items >= min_items)].reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("minimums", [(5, 5), (1, 8), (12, 1), (3, 20)])
def test_drop_rare_equals_pandas(seed, minimums):
    data = skewed(seed)
    expected = pandas_drop_rare(data, *minimums)
    kept, notes = rare.drop_rare(data, *minimums)
    assert 0 < len(kept) == len(expected) < len(data)
    mapping = kept.id_mapping
    # back to the data's ids, row for row (the filter keeps the input order)
    np.testing.assert_array_equal(mapping.raw_users(kept.user_ids).astype(int), expected["user"])
    np.testing.assert_array_equal(mapping.raw_items(kept.item_ids).astype(int), expected["item"])
    np.testing.assert_array_equal(kept.timestamps, expected["time"])
    np.testing.assert_array_equal(kept.ratings, expected["rating"])
    # contiguous ids: users 0..U-1 and items 1..N-1 all used, 0 left for padding
    assert kept.num_users == expected["user"].nunique() == len(np.unique(kept.user_ids))
    assert kept.num_items == expected["item"].nunique() + 1
    assert set(kept.item_ids) == set(range(1, kept.num_items))
    assert notes == {
        "min_user_interactions": minimums[0],
        "min_item_interactions": minimums[1],
        "users_dropped": len(np.unique(data.user_ids)) - expected["user"].nunique(),
        "items_dropped": len(np.unique(data.item_ids)) - expected["item"].nunique(),
        "interactions_dropped": len(data) - len(expected),
    }


def test_a_files_raw_ids_are_kept_through_the_filter():
    data = skewed(3)
    words = np.array([f"user-{u}" for u in range(data.num_users)], dtype=object)
    titles = np.array([None, *(f"item-{i}" for i in range(1, data.num_items))], dtype=object)
    data.id_mapping = IdMapping(words, titles)
    kept, _ = rare.drop_rare(data, 4, 6)
    expected = pandas_drop_rare(data, 4, 6)
    assert list(kept.id_mapping.raw_items(kept.item_ids)) == [f"item-{i}" for i in expected["item"]]
    assert list(kept.id_mapping.raw_users(kept.user_ids)) == [f"user-{u}" for u in expected["user"]]


def test_minimums_of_one_drop_nothing():
    """drop_rare at 1: every interaction kept, the ids made contiguous; split at 1: the
    split of the data as it is (no renumbering, no notes of a filter)."""
    data = skewed()
    kept, notes = rare.drop_rare(data, 1, 1)
    assert len(kept) == len(data) and notes["interactions_dropped"] == 0
    assert kept.num_items == len(np.unique(data.item_ids)) + 1 < data.num_items
    np.testing.assert_array_equal(
        kept.id_mapping.raw_items(kept.item_ids).astype(int), data.item_ids
    )
    options = dict(WINDOW, min_user_interactions=1, min_item_interactions=1)
    plain, filtered = (
        split(data, "leave_one_out", **WINDOW),
        split(data, "leave_one_out", **options),
    )
    np.testing.assert_array_equal(plain.test.sequences, filtered.test.sequences)
    assert plain.notes == filtered.notes and filtered.id_mapping is None


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "5", None])
def test_bad_minimums_are_refused(value):
    for name in rare.OPTIONS:
        with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value!r}"):
            split(skewed(), "leave_one_out", **WINDOW, **{name: value})


def test_a_filter_that_leaves_nothing_is_refused():
    with pytest.raises(ValueError, match="no interaction is left when users with fewer than 1000"):
        rare.drop_rare(skewed(), 1000, 1)


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_protocol_splits_the_filtered_data(name):
    """split(data, min_*=...) is the split of the filtered data, with what was dropped in
    its notes and the mapping to the data's ids."""
    data = skewed(4, n=1500)
    options = (
        dict(WINDOW, seed=7)
        if name != "user"
        else dict(WINDOW, seed=7, test_percentage=0.2, valid_percentage=0.5)
    )
    if name == "leave_one_out":
        options.pop("seed")
    got = split(data, name, **options, min_user_interactions=6, min_item_interactions=4)
    kept, dropped = rare.drop_rare(data, 6, 4)
    want = split(kept, name, **options)
    for a, b in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(a.sequences, b.sequences)
        assert a.num_items == b.num_items == kept.num_items
    assert got.notes == {**want.notes, **dropped} and dropped["items_dropped"] > 0
    assert got.id_mapping == kept.id_mapping and want.id_mapping is None


def test_the_runner_drops_rare_items_in_a_folder_of_its_own(tmp_path):
    """run.py --min-interactions 5,12: the folder says so, every record holds the
    minimums and the split's counts, and ids.json maps back to the data's ids."""
    config = tiny_config(tmp_path / "configs")
    argv = "--dataset synthetic --model mlstm --trials 1 --device cpu --quiet".split()
    argv += ["--protocol", "leave_one_out", "--min-interactions", "5,12"]
    argv += ["--config", str(config), "--out", str(tmp_path / "out")]
    assert run.main(argv) == 0
    out = tmp_path / "out" / "synthetic_mlstm_leave_one_out_min5_12"
    (record,) = json.loads((out / "trials.json").read_text())["records"]
    assert record["protocol"]["min_user_interactions"] == 5
    assert record["protocol"]["min_item_interactions"] == 12
    assert record["split_notes"]["items_dropped"] > 0
    items = json.loads((out / "ids.json").read_text())["items"]
    assert len(items) == record["split_notes"]["items"] - 1


def test_the_options_are_checked_in_a_config_and_on_the_command_line(tmp_path):
    path = tiny_config(tmp_path)
    config = load_config(path)
    assert with_minimums(config, "5").name == "synthetic_mlstm_min5"
    assert with_minimums(with_minimums(config, "5"), "1").name == "synthetic_mlstm"
    for text in ("five", "5,5,5", ""):
        with pytest.raises(UserError, match="--min-interactions must be K or K_USER,K_ITEM"):
            with_minimums(config, text)
    with pytest.raises(UserError, match="protocol.min_item_interactions must be a positive"):
        with_minimums(config, "5,0")
    raw = yaml.safe_load(path.read_text())
    raw["protocol"]["min_user_interactions"] = 5
    path.write_text(yaml.safe_dump(raw))
    assert load_config(path).name == "synthetic_mlstm_min5_1"
    raw["protocol"]["min_item_interactions"] = 1.5
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=f"{path}: protocol.min_item_interactions must be a"):
        load_config(path)


def test_movielens_1m_keeps_the_items_of_sasrecs_paper():
    """SASRec's paper (Kang and McAuley 2018, table II) gives ML-1M after its preprocessing
    (users and items with fewer than 5 interactions dropped) as 6,040 users and 3,416 items."""
    data = get_movielens_dataset("1M", data_dir=require_archive("ml-1m.zip"))
    result = split(
        data,
        "leave_one_out",
        max_sequence_length=200,
        min_sequence_length=1,
        step_size=200,
        min_user_interactions=5,
        min_item_interactions=5,
    )
    assert result.notes["users"] == 6040 and result.notes["items"] - 1 == 3416
    assert result.notes["users_evaluated"] == 6040
    expected = pandas_drop_rare(data, 5, 5)
    assert result.notes["interactions_dropped"] == len(data) - len(expected)
