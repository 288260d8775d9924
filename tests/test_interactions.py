import numpy as np
import pytest

from mlstm4reco.interactions import Interactions, SequenceInteractions


def loop_to_sequence(users, items, timestamps, max_len, min_len, step):
    """Straightforward reference: per user, sort by time (stable), cut windows from the
    end backwards, left-pad with 0."""
    rows, row_users = [], []
    for user in sorted(set(users.tolist())):
        index = [k for k in range(len(users)) if users[k] == user]
        index.sort(key=lambda k: timestamps[k])  # sorted() is stable
        history = [int(items[k]) for k in index]
        end = len(history)
        while end > 0:
            window = history[max(end - max_len, 0) : end]
            row = [0] * (max_len - len(window)) + window
            if min_len is None or row[-min_len] != 0:
                rows.append(row)
                row_users.append(user)
            end -= step
    return np.array(rows, dtype=np.int32).reshape(-1, max_len), np.array(row_users)


@pytest.mark.parametrize(
    "max_len,min_len,step",
    [(5, None, None), (5, 3, 5), (4, 2, 1), (6, None, 2), (3, 1, 7), (10, 10, 10)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_to_sequence_matches_loop(max_len, min_len, step, seed):
    rng = np.random.RandomState(seed)
    n = 300
    users = rng.randint(0, 25, n)
    items = rng.randint(1, 40, n)
    timestamps = rng.randint(0, 20, n)  # many ties
    data = Interactions(users, items, timestamps=timestamps, num_items=40)
    sequences = data.to_sequence(max_len, min_len, step)
    expected, expected_users = loop_to_sequence(
        users, items, timestamps, max_len, min_len, step or max_len
    )
    np.testing.assert_array_equal(sequences.sequences, expected)
    np.testing.assert_array_equal(sequences.user_ids, expected_users)
    assert sequences.num_items == 40
    assert sequences.sequences.dtype == np.int32


def test_to_sequence_hand_made():
    # user 2 has items 1..7 in time order given shuffled; user 0 one item; ties keep order.
    users = [2, 2, 2, 0, 2, 2, 2, 2, 1, 1]
    items = [3, 1, 2, 9, 4, 5, 6, 7, 8, 5]
    stamps = [30, 10, 20, 0, 40, 50, 60, 70, 5, 5]
    data = Interactions(users, items, timestamps=stamps)
    seqs = data.to_sequence(max_sequence_length=3)
    assert seqs.sequences.tolist() == [
        [0, 0, 9],  # user 0: one item, left-padded
        [0, 8, 5],  # user 1: a tie at time 5 keeps input order
        [5, 6, 7],  # user 2: latest window first
        [2, 3, 4],
        [0, 0, 1],
    ]
    assert seqs.user_ids.tolist() == [0, 1, 2, 2, 2]
    stepped = data.to_sequence(max_sequence_length=3, step_size=2)
    assert stepped.sequences[stepped.user_ids == 2].tolist() == [
        [5, 6, 7],
        [3, 4, 5],
        [1, 2, 3],
        [0, 0, 1],
    ]
    long_enough = data.to_sequence(max_sequence_length=3, min_sequence_length=2)
    assert long_enough.sequences.tolist() == [[0, 8, 5], [5, 6, 7], [2, 3, 4]]


def test_to_sequence_rejects_padding_id_and_missing_timestamps():
    with pytest.raises(ValueError, match="item id 0"):
        Interactions([1, 2], [0, 3], timestamps=[1, 2]).to_sequence()
    with pytest.raises(ValueError, match="needs timestamps"):
        Interactions([1, 2], [1, 3]).to_sequence()
    with pytest.raises(ValueError, match="min_sequence_length must be in"):
        Interactions([1], [1], timestamps=[1]).to_sequence(5, 6)


def test_interactions_validation():
    with pytest.raises(ValueError, match="differ in length: 2 and 3"):
        Interactions([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative, got -4 at index 1"):
        Interactions([1, -4], [1, 2])
    with pytest.raises(ValueError, match="expected integer ids"):
        Interactions([1.5, 2], [1, 2])
    with pytest.raises(ValueError, match="below 3, got 3 at index 0"):
        Interactions([1, 2], [3, 2], num_items=3)
    with pytest.raises(ValueError, match="timestamps: expected 2 values"):
        Interactions([1, 2], [1, 2], timestamps=[1])
    data = Interactions([1, 5], [2, 7], ratings=[4, 5])
    assert (data.num_users, data.num_items, len(data)) == (6, 8, 2)
    assert data.tocsr()[5, 7] == 5
    assert "6 users x 8 items x 2 interactions" in repr(data)


def test_sequence_interactions_validation():
    with pytest.raises(ValueError, match="2-D"):
        SequenceInteractions([1, 2, 3])
    with pytest.raises(ValueError, match="below 3"):
        SequenceInteractions([[0, 3]], num_items=3)
    seqs = SequenceInteractions([[0, 1, 2], [3, 4, 5]])
    assert (len(seqs), seqs.num_items, seqs.max_sequence_length) == (2, 6, 3)


def test_to_sequence_keeps_every_interaction_once_on_large_data():
    rng = np.random.RandomState(0)
    n = 2_000_000
    users, items = rng.randint(0, 20_000, n), rng.randint(1, 5_000, n)
    data = Interactions(users, items, timestamps=rng.randint(0, 10**9, n))
    sequences = data.to_sequence(100)  # step == length, no minimum: a partition
    assert (sequences.sequences != 0).sum() == n
    per_user = np.bincount(sequences.user_ids, weights=(sequences.sequences != 0).sum(1))
    np.testing.assert_array_equal(per_user, np.bincount(users, minlength=len(per_user)))


def test_float_timestamps_order_as_given():
    """Fractional timestamps are not truncated: 0.1 comes before 0.9 (truncated, both were
    0 and the input order won), compared with a sort of the pairs in Python."""
    rng = np.random.default_rng(0)
    users = rng.integers(0, 5, 200)
    items = rng.integers(1, 30, 200)
    stamps = rng.random(200)  # all in [0, 1): equal once truncated
    interactions = Interactions(users, items, timestamps=stamps)
    assert interactions.timestamps.dtype == np.float64
    sequences = interactions.to_sequence(max_sequence_length=200).sequences
    for row, user in zip(sequences, np.unique(users)):
        expected = [item for _, item in sorted(zip(stamps[users == user], items[users == user]))]
        assert row[row != 0].tolist() == expected
    assert Interactions([1, 1], [1, 2], timestamps=[0.9, 0.1]).to_sequence(
        2
    ).sequences.tolist() == [[2, 1]]
    assert (
        Interactions([1], [1], timestamps=np.array([7], dtype=np.int32)).timestamps.dtype
        == np.int64
    )


@pytest.mark.parametrize(
    "stamps,message",
    [
        ([0.5, np.nan], r"timestamps: expected finite numbers, got nan at index 1"),
        (["a", "b"], r"timestamps: expected numbers \(integer or float\), got dtype <U1"),
        ([True, False], r"timestamps: expected numbers"),
        ([1, 2, 3], r"timestamps: expected 2 values"),
    ],
)
def test_bad_timestamps_are_refused(stamps, message):
    with pytest.raises(ValueError, match=message):
        Interactions([1, 1], [1, 2], timestamps=stamps)
