"""A user's own data: DataFrames and CSV, TSV and Parquet files, raw ids mapped and kept,
bad files named with their column and first bad row, and run.py --dataset PATH."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from mlstm4reco.datasets import get_dataset
from mlstm4reco.id_mapping import IdMapping
from mlstm4reco.interactions import Interactions

sys.path.insert(0, str(ROOT / "experiments"))
import run  # noqa: E402


def user_frame(n=400, seed=0):
    rng = np.random.RandomState(seed)
    return pd.DataFrame(
        {
            "user": [f"u{x:03d}" for x in rng.randint(0, 30, n)],
            "movie": [
                ["tt0111161", "007", "7", "Amélie"][x % 4] + f"-{x}" for x in rng.randint(0, 40, n)
            ],
            "when": pd.date_range("2021-03-01", periods=n, freq="37min").astype(str),
            "stars": rng.randint(1, 6, n).astype(str),
        }
    )


def first_appearance(values):
    """{value: index} in order of first appearance, by a plain loop."""
    index = {}
    for value in values:
        index.setdefault(value, len(index))
    return index


def test_from_dataframe_maps_raw_ids_in_order_of_first_appearance():
    frame = user_frame()
    data = Interactions.from_dataframe(frame, "user", "movie", "when")
    users, items = first_appearance(frame["user"]), first_appearance(frame["movie"])
    assert data.user_ids.tolist() == [users[u] for u in frame["user"]]
    assert data.item_ids.tolist() == [items[i] + 1 for i in frame["movie"]]  # 0 pads sequences
    assert data.num_items == len(items) + 1 and data.num_users == len(users)
    seconds = [pd.Timestamp(t, tz="UTC").timestamp() for t in frame["when"]]
    np.testing.assert_array_equal(data.timestamps, seconds)
    mapping = data.id_mapping
    assert mapping.raw_items(data.item_ids).tolist() == frame["movie"].tolist()
    assert mapping.raw_users(data.user_ids).tolist() == frame["user"].tolist()
    assert (
        mapping.item_ids(["007-12"] if "007-12" in items else [frame["movie"][0]]).tolist()[0] >= 1
    )
    assert data.subset(data.user_ids == 0).id_mapping is mapping


def test_the_mapping_survives_json(tmp_path):
    mapping, users, items = IdMapping.of(
        np.array([10**12, 5, 10**12]), np.array(["a", 3, "a"], dtype=object)
    )
    mapping.save(tmp_path / "ids.json")
    again = IdMapping.load(tmp_path / "ids.json")
    assert again == mapping and again.raw_items([1, 2]).tolist() == ["a", 3]
    assert users.tolist() == [0, 1, 0] and items.tolist() == [1, 2, 1]
    with pytest.raises(KeyError, match="item 'zzz' is not in the mapping"):
        again.item_ids(["zzz"])


def test_rating_filter_and_numeric_times():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": [1, 2, 1, 3],
            "timestamp": [5, 6, 7, 8],
            "rating": ["1", "4", "5", "2"],
        }
    )
    data = Interactions.from_dataframe(frame, rating_col="rating", min_rating=4)
    assert data.id_mapping.raw_items(data.item_ids).tolist() == [2, 1]
    assert data.timestamps.tolist() == [6, 7] and data.timestamps.dtype == np.int64
    np.testing.assert_array_equal(data.ratings, [4.0, 5.0])


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_text_files_read_as_the_frame(tmp_path, suffix, sep):
    frame = user_frame()
    path = tmp_path / f"mine{suffix}"
    frame.to_csv(path, sep=sep, index=False)
    data = get_dataset("file", path=str(path), user_col="user", item_col="movie", time_col="when")
    expected = Interactions.from_dataframe(frame, "user", "movie", "when")
    np.testing.assert_array_equal(data.item_ids, expected.item_ids)
    np.testing.assert_array_equal(data.timestamps, expected.timestamps)
    assert data.id_mapping == expected.id_mapping  # ids read as text: "007" stays "007"


def test_parquet_files_read_as_the_frame(tmp_path):
    pytest.importorskip("pyarrow")
    frame = user_frame()
    frame.to_parquet(tmp_path / "mine.parquet")
    data = get_dataset(
        "file",
        path=str(tmp_path / "mine.parquet"),
        user_col="user",
        item_col="movie",
        time_col="when",
    )
    assert data.id_mapping == Interactions.from_dataframe(frame, "user", "movie", "when").id_mapping


@pytest.mark.parametrize(
    "change, options, message",
    [
        (
            None,
            dict(item_col="film"),
            r"mine.csv: no column 'film' \(item_col\); its columns are \['user', 'movie'",
        ),
        (
            "bad time",
            {},
            r"mine.csv, line 5: column 'when': expected a number or a date, got 'yesterday-ish'",
        ),
        (
            "bad rating",
            dict(rating_col="stars", min_rating=3),
            r"line 4: column 'stars': expected a number, got 'five'",
        ),
        (
            None,
            dict(rating_col="stars", min_rating=9),
            r"mine.csv: no interactions left with stars >= 9",
        ),
        ("duplicate", {}, r"mine.csv, line 7: the same \(user, movie, when\) as an earlier row"),
    ],
)
def test_bad_files_name_the_column_and_the_first_bad_row(tmp_path, change, options, message):
    frame = user_frame(20)
    if change == "bad time":
        frame.loc[3, "when"] = "yesterday-ish"
    if change == "bad rating":
        frame.loc[2, "stars"] = "five"
    if change == "duplicate":
        frame.loc[5] = frame.loc[1]
    frame.to_csv(tmp_path / "mine.csv", index=False)
    columns = dict(user_col="user", item_col="movie", time_col="when") | options
    with pytest.raises(ValueError, match=message):
        get_dataset("file", path=str(tmp_path / "mine.csv"), **columns)


def test_unknown_formats_and_missing_files_are_refused(tmp_path):
    (tmp_path / "mine.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"cannot tell the format from '.xlsx'"):
        get_dataset("file", path=str(tmp_path / "mine.xlsx"))
    with pytest.raises(FileNotFoundError, match="no data file at"):
        get_dataset("file", path=str(tmp_path / "none.csv"))


def test_run_searches_a_users_file_and_keeps_its_ids(tmp_path, capsys):
    """run.py --dataset PATH.csv with its columns: a search under leave-one-out with HR@10,
    NDCG@10 and MRR, results in a folder named after the file, ids.json beside them; a
    model's recommendations turn back into the file's ids."""
    frame = user_frame(1500)
    path = tmp_path / "my ratings.csv"
    frame.to_csv(path, index=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "dataset: file\nmodel: mlstm\n"
        "protocol: {seed: 1, split: leave_one_out, max_sequence_length: 20,\n"
        "  min_sequence_length: 2, step_size: 20, exclude_preceding: true}\n"
        "fixed: {loss: adaptive_hinge, representation: mlstm}\n"
        "space: {learning_rate: {loguniform: [-5, -3]}, n_iter: {quniform: [1, 2, 1]}}\n"
        "best: {learning_rate: 0.01, n_iter: 2, embedding_dim: 8}\n"
    )
    argv = [
        *"--model mlstm --trials 2 --device cpu --quiet --user-col user --item-col movie".split(),
        "--time-col",
        "when",
        "--dataset",
        str(path),
        "--config",
        str(config),
        "--out",
        str(tmp_path / "out"),
    ]
    assert run.main(argv) == 0
    out = tmp_path / "out" / "my_ratings_mlstm_leave_one_out"
    records = json.loads((out / "trials.json").read_text())["records"]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(0 <= r["test_ndcg@10"] <= 1 and 0 <= r["valid_hit_rate@10"] <= 1 for r in records)
    mapping = IdMapping.load(out / "ids.json")
    assert mapping == Interactions.from_dataframe(frame, "user", "movie", "when").id_mapping
    from mlstm4reco.sequence_model import ImplicitSequenceModel

    data = get_dataset("file", path=str(path), user_col="user", item_col="movie", time_col="when")
    model = ImplicitSequenceModel(
        representation="pooling", embedding_dim=8, n_iter=1, random_state=0
    )
    model.fit(data.to_sequence(20))
    top = mapping.raw_items(model.recommend(data.to_sequence(20).sequences[0], k=5))
    assert len(top) == 5 and set(top) <= set(frame["movie"])


def test_a_bad_dataset_argument_is_one_line(tmp_path, capsys):
    assert run.main(["--dataset", "ml3m", "--model", "mlstm", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert (
        "--dataset 'ml3m': neither a dataset (synthetic, ml100k" in error
        and "Traceback" not in error
    )
