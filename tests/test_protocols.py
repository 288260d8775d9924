"""The split protocols against independent pandas implementations on random data with
timestamp ties, and on MovieLens with the counts written here."""

import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, require_archive
from test_experiments import read_records, tiny_config

from mlstm4reco.datasets import get_movielens_dataset
from mlstm4reco.interactions import Interactions
from mlstm4reco.protocols import PROTOCOLS, split
from mlstm4reco.study.config import load_config
from mlstm4reco.study.errors import UserError

sys.path.insert(0, str(ROOT / "experiments"))
import run  # noqa: E402

WINDOW = dict(max_sequence_length=6, min_sequence_length=1, step_size=3)


def random_interactions(seed=0, users=60, items=40, n=900):
    """Users with 1 to many interactions, timestamps drawn from few values (many ties)."""
    rng = np.random.RandomState(seed)
    user_ids = np.concatenate([np.arange(users), rng.randint(0, users, n - users)])  # all present
    user_ids[:5] = 0  # and some with one or two interactions only:
    user_ids = np.where(np.isin(user_ids, [1, 2]), 3, user_ids)
    user_ids = np.concatenate([user_ids, [1, 2, 2]])
    item_ids = rng.randint(1, items, len(user_ids))
    timestamps = rng.randint(0, 30, len(user_ids)).astype(np.float64)
    return Interactions(user_ids, item_ids, timestamps=timestamps, num_items=items)


def frame(data):
    """The interactions as a DataFrame in time order per user, ties in input order."""
    df = pd.DataFrame({"user": data.user_ids, "item": data.item_ids, "time": data.timestamps})
    df["row"] = np.arange(len(df))
    return df.sort_values(["user", "time", "row"], kind="stable").reset_index(drop=True)


def rows_of(sequences):
    """{user: the row's items without padding} of SequenceInteractions with one row a user."""
    return {
        int(u): [int(i) for i in row if i]
        for u, row in zip(sequences.user_ids, sequences.sequences)
    }


def windows_of(df, data, window=WINDOW):
    """Training windows cut from a pandas-selected set of interactions."""
    picked = Interactions(
        df["user"].to_numpy(),
        df["item"].to_numpy(),
        timestamps=df["time"].to_numpy(),
        num_users=data.num_users,
        num_items=data.num_items,
    )
    return picked.to_sequence(
        window["max_sequence_length"], window["min_sequence_length"], window["step_size"]
    )


def pandas_leave_one_out(data, window=WINDOW):
    """Leave-one-out written with pandas: ({user: validation row}, {user: test row},
    training windows, users with fewer than 3 interactions)."""
    df = frame(data)
    df["rank"] = df.groupby("user").cumcount()
    df["size"] = df.groupby("user")["item"].transform("size")
    L = window["max_sequence_length"]
    valid, test = {}, {}
    for user, group in df[df["size"] >= 3].groupby("user"):
        items = group["item"].tolist()
        valid[user] = items[:-1][-L:]  # history up to the validation target, target last
        test[user] = items[-L:]
    train_frame = df[(df["size"] < 3) | (df["rank"] < df["size"] - 2)]
    return (
        valid,
        test,
        windows_of(train_frame, data, window),
        int((df.groupby("user").size() < 3).sum()),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_equals_pandas(seed):
    data = random_interactions(seed)
    valid, test, train, short = pandas_leave_one_out(data)
    result = split(data, "leave_one_out", **WINDOW)
    assert rows_of(result.valid) == valid
    assert rows_of(result.test) == test
    np.testing.assert_array_equal(result.train.sequences, train.sequences)
    np.testing.assert_array_equal(result.train.user_ids, train.user_ids)
    assert (
        result.notes["users_evaluated"] == len(test)
        and result.notes["users_in_training_only"] == short == 2
    )


def pandas_temporal(data, cutoffs, window=WINDOW):
    """The temporal split written with pandas: the two cutoffs, per part ({user: row},
    users without history, targets first seen at or after the cutoff, items first seen
    at or after it), and the training windows."""
    df = frame(data)
    times = np.sort(df["time"].to_numpy())
    if "valid_quantile" in cutoffs:  # numpy's 'lower' quantile: a timestamp that occurs
        valid_cut = times[int(np.floor(cutoffs["valid_quantile"] * (len(times) - 1)))]
        test_cut = times[int(np.floor(cutoffs["test_quantile"] * (len(times) - 1)))]
    else:
        valid_cut, test_cut = cutoffs["valid_cutoff"], cutoffs["test_cutoff"]
    L = window["max_sequence_length"]
    first_seen = df.groupby("item")["time"].min()
    parts = {}
    for part, cut, until in (("valid", valid_cut, test_cut), ("test", test_cut, np.inf)):
        expected, without_history, new = {}, 0, 0
        for user, group in df.groupby("user"):
            before = group[group["time"] < cut]["item"].tolist()
            after = group[(group["time"] >= cut) & (group["time"] < until)]
            if after.empty:
                continue
            if not before:
                without_history += 1
                continue
            target = after["item"].iloc[0]
            expected[user] = before[-(L - 1) :] + [target]
            new += first_seen[target] >= cut
        parts[part] = (expected, without_history, int(new), int((first_seen >= cut).sum()))
    train = windows_of(df[df["time"] < valid_cut], data, window)
    return (valid_cut, test_cut), parts, train


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "cutoffs", [dict(valid_quantile=0.6, test_quantile=0.8), dict(valid_cutoff=12, test_cutoff=21)]
)
def test_temporal_split_equals_pandas(seed, cutoffs):
    data = random_interactions(seed)
    result = split(data, "temporal", **WINDOW, **cutoffs)
    (valid_cut, test_cut), parts, train = pandas_temporal(data, cutoffs)
    for part, sequences in (("valid", result.valid), ("test", result.test)):
        expected, without_history, new_targets, new_items = parts[part]
        assert rows_of(sequences) == expected, part
        assert result.notes[f"{part}_users"] == len(expected)
        assert result.notes[f"{part}_users_without_history"] == without_history
        assert result.notes[f"{part}_targets_new_items"] == new_targets
        assert result.notes[f"{part}_new_items"] == new_items
    np.testing.assert_array_equal(result.train.sequences, train.sequences)
    assert result.notes["valid_cutoff"] == valid_cut and result.notes["test_cutoff"] == test_cut


def test_the_user_split_is_the_2018_protocol():
    """The registry's 'user' is the protocol the runner has always used (same draws)."""
    from mlstm4reco.cross_validation import user_based_train_test_split

    data = random_interactions()
    result = split(data, "user", seed=72, test_percentage=0.2, valid_percentage=0.5, **WINDOW)
    state = np.random.RandomState(72)
    train, rest = user_based_train_test_split(data, 0.2, state)
    test, valid = user_based_train_test_split(rest, 0.5, state)
    for got, part in zip(result[:3], (train, valid, test)):
        np.testing.assert_array_equal(got.sequences, part.to_sequence(6, 1, 3).sequences)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("leave_one_out", dict(WINDOW, test_percentage=0.2), r"unknown \['test_percentage'\]"),
        ("user", dict(WINDOW), r"missing \['seed', 'test_percentage', 'valid_percentage'\]"),
        (
            "temporal",
            dict(WINDOW, test_quantile=1.5),
            r"test_quantile must be a number in \(0, 1\), got 1.5",
        ),
        (
            "temporal",
            dict(WINDOW, test_cutoff=3, test_quantile=0.5),
            "give test_cutoff or test_quantile, not both",
        ),
        (
            "temporal",
            dict(WINDOW, valid_cutoff=20, test_cutoff=10),
            "validation cutoff 20.0 must come before",
        ),
        (
            "leave_one_out",
            dict(WINDOW, max_sequence_length=0),
            "max_sequence_length must be a positive integer",
        ),
        (
            "bogus",
            dict(WINDOW),
            r"unknown protocol 'bogus'; choose from \['leave_one_out', 'temporal', 'user'\]",
        ),
    ],
)
def test_bad_options_are_refused(name, options, message):
    with pytest.raises(ValueError, match=message):
        split(random_interactions(), name, **options)


def test_every_protocol_names_its_options():
    for name, module in PROTOCOLS.items():
        assert set(module.REQUIRED) >= {
            "max_sequence_length",
            "min_sequence_length",
            "step_size",
        }, name
        assert callable(module.split) and callable(module.check), name


MOVIELENS_WINDOW = dict(max_sequence_length=200, min_sequence_length=1, step_size=200)


@pytest.mark.parametrize(
    "variant, archive, expected",
    [
        # users, users evaluated, training windows of (200, 1, 200), items (ids, padding included)
        (
            "1M",
            "ml-1m.zip",
            dict(users=6040, users_evaluated=6040, training_windows=8637, items=3953),
        ),
        (
            "100K",
            "ml-100k.zip",
            dict(users=943, users_evaluated=943, training_windows=1107, items=1683),
        ),
    ],
)
def test_leave_one_out_on_movielens(variant, archive, expected):
    """Every MovieLens user has at least 20 ratings, so every one is evaluated. The counts
    written here are also those of the pandas implementation, run on the real data."""
    data = get_movielens_dataset(variant, data_dir=require_archive(archive))
    result = split(data, "leave_one_out", **MOVIELENS_WINDOW)
    assert {k: result.notes[k] for k in expected} == expected
    assert result.notes["training_interactions"] == len(data) - 2 * expected["users_evaluated"]
    valid, test, train, short = pandas_leave_one_out(data, MOVIELENS_WINDOW)
    assert short == 0 and len(valid) == len(test) == expected["users_evaluated"] == len(result.test)
    assert len(train) == expected["training_windows"]
    assert rows_of(result.test) == test and rows_of(result.valid) == valid


@pytest.mark.parametrize(
    "variant, archive, expected",
    [
        # the default cutoffs (quantiles 0.8 and 0.9 of all timestamps): users evaluated,
        # users with a target but no history, targets and items first seen after the cutoff
        (
            "1M",
            "ml-1m.zip",
            dict(
                valid_users=523,
                valid_users_without_history=611,
                valid_targets_new_items=0,
                valid_new_items=44,
                test_users=1180,
                test_users_without_history=29,
                test_targets_new_items=2,
                test_new_items=28,
                training_windows=7344,
            ),
        ),
        (
            "100K",
            "ml-100k.zip",
            dict(
                valid_users=81,
                valid_users_without_history=116,
                valid_targets_new_items=1,
                valid_new_items=66,
                test_users=90,
                test_users_without_history=76,
                test_targets_new_items=7,
                test_new_items=45,
                training_windows=883,
            ),
        ),
    ],
)
def test_temporal_split_on_movielens(variant, archive, expected):
    """The counts written here are also those of the pandas implementation on the real data."""
    data = get_movielens_dataset(variant, data_dir=require_archive(archive))
    result = split(data, "temporal", **MOVIELENS_WINDOW)
    assert {k: result.notes[k] for k in expected} == expected
    _, parts, train = pandas_temporal(
        data, dict(valid_quantile=0.8, test_quantile=0.9), MOVIELENS_WINDOW
    )
    for part in ("valid", "test"):
        rows, without_history, new_targets, new_items = parts[part]
        assert (len(rows), without_history, new_targets, new_items) == tuple(
            expected[f"{part}_{name}"]
            for name in ("users", "users_without_history", "targets_new_items", "new_items")
        )
    assert len(train) == expected["training_windows"]


def test_the_runner_searches_under_leave_one_out_for_ndcg(tmp_path, capsys):
    """run.py --protocol leave_one_out --objective ndcg@10: a folder of its own, HR@10,
    NDCG@10 and MRR recorded for valid and test, the protocol and its counts in every
    record and in the report."""
    config = tiny_config(tmp_path / "configs")
    flags = "--dataset synthetic --model mlstm --trials 2 --device cpu --quiet"
    argv = [*flags.split(), "--protocol", "leave_one_out", "--objective", "ndcg@10"]
    argv += ["--config", str(config), "--out", str(tmp_path / "out")]
    assert run.main(argv) == 0
    out = tmp_path / "out" / "synthetic_mlstm_leave_one_out_ndcg_at_10"
    records = read_records(out / "trials.json")
    assert len(records) == 2
    for record in records:
        assert record["status"] == "ok" and record["objective"] == "ndcg@10"
        protocol = record["protocol"]
        assert protocol["split"] == "leave_one_out" and "test_percentage" not in protocol
        assert record["split_notes"]["users_evaluated"] == 100  # every synthetic user has 60
        for name in (
            "valid_ndcg@10",
            "test_ndcg@10",
            "valid_hit_rate@10",
            "test_hit_rate@10",
            "valid_mrr",
            "test_mrr",
        ):
            assert 0 <= record[name] <= 1, name
    summary = (out / "summary.md").read_text()
    assert "Best by validation NDCG@10" in summary
    counts = "users 100, users evaluated 100, users in training only 0"
    assert f"Protocol: leave_one_out split ({counts}" in summary
    assert "the input's items excluded (exclude_preceding: true)" in summary


def test_a_config_names_its_split_and_is_checked(tmp_path):
    path = tiny_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["protocol"] = dict(
        seed=1,
        exclude_preceding=False,
        split="temporal",
        max_sequence_length=20,
        min_sequence_length=2,
        step_size=20,
        test_quantile=0.9,
        valid_quantile=0.7,
    )
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    assert config.split == "temporal" and config.name == "synthetic_mlstm_temporal"
    for change, message in (
        (dict(split="random"), r"protocol.split must be one of \['leave_one_out', "),
        (dict(test_percentage=0.2), r"protocol needs exactly .* for split 'temporal'"),
        (dict(valid_quantile=1.0), r"protocol.valid_quantile must be a number in \(0, 1\)"),
    ):
        path.write_text(yaml.safe_dump(dict(raw, protocol={**raw["protocol"], **change})))
        with pytest.raises(UserError, match=message):
            load_config(path)


def test_the_popularity_script_reports_every_protocol(tmp_path, capsys, monkeypatch):
    """experiments/popularity.py: each protocol's counts, and its metrics as
    evaluate() gives them for a popularity model of the same split."""
    import json

    sys.path.insert(0, str(ROOT / "experiments"))
    import popularity

    from mlstm4reco.baselines import PopularityModel
    from mlstm4reco.datasets import get_dataset
    from mlstm4reco.evaluation import evaluate

    data = get_dataset("synthetic", random_state=0)
    monkeypatch.setattr(popularity, "get_dataset", lambda name, data_dir=None: data)
    out = tmp_path / "pop.json"
    assert (
        popularity.main(["--dataset", "synthetic", "--window", "20", "1", "20", "--out", str(out)])
        == 0
    )
    written = json.loads(out.read_text())
    assert sorted(written["results"]) == sorted(PROTOCOLS)
    parts = split(
        data,
        "leave_one_out",
        max_sequence_length=20,
        min_sequence_length=1,
        step_size=20,
    )
    expected = evaluate(
        PopularityModel().fit(parts.train),
        parts.test,
        ["hit_rate@10", "ndcg@10", "mrr"],
        exclude_preceding=True,
    )
    assert written["results"]["leave_one_out"]["test, input's items excluded"] == pytest.approx(
        expected
    )
    assert written["results"]["leave_one_out"]["notes"] == parts.notes
    assert "leave_one_out: users 100" in capsys.readouterr().out


def test_records_of_another_protocol_or_objective_are_not_mixed(tmp_path):
    """A results folder holds one study: a search or reproduction under another objective
    or protocol into it is refused before any training, naming what differs."""
    from mlstm4reco.study.adjust import with_objective, with_protocol
    from mlstm4reco.study.runners import run_reproduce, run_search

    def fake(arguments, **kwargs):
        metrics = kwargs["metrics"]
        return {f"{s}_{m}": 0.5 for s in ("valid", "test") for m in metrics} | dict(
            final_loss=1.0, fit_seconds=0.0, device="cpu"
        )

    config = load_config(tiny_config(tmp_path / "configs"))
    out = tmp_path / "out"
    run_search(config, 1, out, "cpu", progress=False, train=fake)
    for other, differs in (
        (with_objective(config, "ndcg@10"), "objective"),
        (with_protocol(config, "leave_one_out"), "protocol"),
    ):
        with pytest.raises(
            UserError, match=f"holds records of another {differs} .*choose another --out"
        ):
            run_search(other, 2, out, "cpu", progress=False, train=fake)
    assert len(read_records(out / "trials.json")) == 1
    run_reproduce([config], 1, tmp_path / "runs", "cpu", progress=False, train=fake)
    with pytest.raises(UserError, match="holds records of another objective"):
        run_reproduce(
            [with_objective(config, "hit_rate@10")],
            2,
            tmp_path / "runs",
            "cpu",
            progress=False,
            train=fake,
        )
