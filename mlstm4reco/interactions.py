"""User-item interactions and their conversion into item sequences (Spotlight's
``Interactions`` and ``SequenceInteractions``, with the same semantics)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["Interactions", "SequenceInteractions"]


def _as_ids(name: str, values, bound: int | None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or np.any(array != np.floor(array)):
            raise ValueError(f"{name}: expected integer ids, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        bad = int(np.flatnonzero(array < 0)[0])
        raise ValueError(f"{name}: ids must be non-negative, got {array[bad]} at index {bad}")
    if array.size and bound is not None and array.max() >= bound:
        bad = int(np.flatnonzero(array >= bound)[0])
        raise ValueError(f"{name}: ids must be below {bound}, got {array[bad]} at index {bad}")
    if array.size and array.max() > np.iinfo(np.int32).max:
        raise ValueError(f"{name}: ids must fit in int32, got {array.max()}")
    return array.astype(np.int32)


def _timestamps(values, length: int) -> np.ndarray | None:
    """Timestamps as given for ordering: integers as int64, fractional ones as float64
    (never truncated, so 0.1 comes before 0.9); NaN and infinity refused."""
    if values is None:
        return None
    array = np.asarray(values)
    if array.shape != (length,):
        raise ValueError(f"timestamps: expected {length} values, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"timestamps: expected numbers (integer or float), got dtype {array.dtype}"
        )
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"timestamps: expected finite numbers, got {array[bad]} at index {bad}")
    return array


def _optional(name: str, values, length: int, dtype) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=dtype)
    if array.shape != (length,):
        raise ValueError(f"{name}: expected {length} values, got shape {array.shape}")
    return array


class Interactions:
    """Interactions between users and items (one row per event).

    Parameters
    ----------
    user_ids, item_ids: array of int
        Non-negative ids, stored as int32.
    ratings, weights: array, optional
        One value per interaction (float32).
    timestamps: array, optional
        One per interaction, ordering each user's history: integers (stored as int64) or
        fractional numbers (float64, kept as given).
    num_users, num_items: int, optional
        Number of ids; default the largest id + 1.
    """

    def __init__(
        self,
        user_ids,
        item_ids,
        ratings=None,
        timestamps=None,
        weights=None,
        num_users: int | None = None,
        num_items: int | None = None,
    ) -> None:
        self.id_mapping = None  # raw ids of a user's data (mlstm4reco.id_mapping.IdMapping)
        self.user_ids = _as_ids("user_ids", user_ids, num_users)
        self.item_ids = _as_ids("item_ids", item_ids, num_items)
        n = len(self.user_ids)
        if len(self.item_ids) != n:
            raise ValueError(
                f"user_ids and item_ids differ in length: {n} and {len(self.item_ids)}"
            )
        self.ratings = _optional("ratings", ratings, n, np.float32)
        self.timestamps = _timestamps(timestamps, n)
        self.weights = _optional("weights", weights, n, np.float32)
        self.num_users = int(num_users if num_users is not None else self._count(self.user_ids))
        self.num_items = int(num_items if num_items is not None else self._count(self.item_ids))

    @staticmethod
    def _count(ids: np.ndarray) -> int:
        return int(ids.max()) + 1 if ids.size else 0

    def __len__(self) -> int:
        return len(self.user_ids)

    def __repr__(self) -> str:
        return (
            f"<Interactions dataset ({self.num_users} users x {self.num_items} items "
            f"x {len(self)} interactions)>"
        )

    @classmethod
    def from_dataframe(
        cls,
        frame,
        user_col: str = "user_id",
        item_col: str = "item_id",
        time_col: str | None = "timestamp",
        rating_col: str | None = None,
        min_rating: float | None = None,
    ) -> Interactions:
        """Interactions from a pandas DataFrame's columns: raw ids of any type mapped to
        contiguous ids (users from 0, items from 1), the mapping kept as ``id_mapping``;
        timestamps as numbers or dates; ``min_rating`` keeps ratings at or above it (see
        :mod:`mlstm4reco.datasets.user_file`)."""
        # the datasets package builds on this module: imported here, where it is used
        from mlstm4reco.datasets.user_file import interactions_from_frame

        return interactions_from_frame(frame, user_col, item_col, time_col, rating_col, min_rating)

    def subset(self, index) -> Interactions:
        """The interactions selected by ``index`` (a boolean mask or indices), with the
        same num_users and num_items."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        subset = Interactions(
            self.user_ids[index],
            self.item_ids[index],
            ratings=pick(self.ratings),
            timestamps=pick(self.timestamps),
            weights=pick(self.weights),
            num_users=self.num_users,
            num_items=self.num_items,
        )
        subset.id_mapping = self.id_mapping
        return subset

    def tocoo(self) -> sp.coo_matrix:
        """A (num_users, num_items) sparse matrix of ratings (ones without ratings)."""
        data = self.ratings if self.ratings is not None else np.ones(len(self), np.float32)
        return sp.coo_matrix(
            (data, (self.user_ids, self.item_ids)), shape=(self.num_users, self.num_items)
        )

    def tocsr(self) -> sp.csr_matrix:
        return self.tocoo().tocsr()

    def to_sequence(
        self,
        max_sequence_length: int = 10,
        min_sequence_length: int | None = None,
        step_size: int | None = None,
    ) -> SequenceInteractions:
        """Cut each user's history, ordered by timestamp, into item sequences.

        Windows of up to ``max_sequence_length`` items are cut from the end of each
        history backwards every ``step_size`` items (default ``max_sequence_length``),
        left-padded with item 0. Windows with fewer than ``min_sequence_length`` real
        items are dropped. Rows are ordered by user id, and within a user from the
        latest window to the earliest. Ties in timestamp keep their input order.

        Returns
        -------
        SequenceInteractions
        """
        if self.timestamps is None:
            raise ValueError("to_sequence needs timestamps, and these interactions have none")
        if max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be positive, got {max_sequence_length}")
        if step_size is None:
            step_size = max_sequence_length
        if step_size < 1:
            raise ValueError(f"step_size must be positive, got {step_size}")
        if min_sequence_length is not None and not 1 <= min_sequence_length <= max_sequence_length:
            raise ValueError(
                f"min_sequence_length must be in [1, {max_sequence_length}], "
                f"got {min_sequence_length}"
            )
        if np.any(self.item_ids == 0):
            raise ValueError(
                "item id 0 is used by an interaction, but 0 is the padding value of sequences"
            )
        L = max_sequence_length
        order = np.lexsort((self.timestamps, self.user_ids))  # stable: ties keep input order
        items = self.item_ids[order]
        users, starts, counts = np.unique(
            self.user_ids[order], return_index=True, return_counts=True
        )
        windows = -(-counts // step_size)  # ceil: windows per user
        row_user = np.repeat(np.arange(len(users)), windows)
        # k-th window of a user (0 = latest) ends (exclusive) k * step_size before the end.
        k = np.arange(len(row_user)) - np.repeat(np.cumsum(windows) - windows, windows)
        ends = starts[row_user] + counts[row_user] - k * step_size  # (R,)
        positions = ends[:, None] - L + np.arange(L)  # (R, L) indices into items
        valid = positions >= starts[row_user][:, None]
        sequences = np.where(valid, items[np.where(valid, positions, 0)], 0).astype(np.int32)
        sequence_users = users[row_user].astype(np.int32)
        if min_sequence_length is not None:
            long_enough = sequences[:, -min_sequence_length] != 0
            sequences, sequence_users = sequences[long_enough], sequence_users[long_enough]
        return SequenceInteractions(sequences, user_ids=sequence_users, num_items=self.num_items)


class SequenceInteractions:
    """Item sequences, one per row, left-padded with 0.

    Parameters
    ----------
    sequences: array of int, (num_sequences, max_sequence_length)
    user_ids: array of int, optional
        The user of each sequence.
    num_items: int, optional
        Number of item ids; default the largest id + 1.
    """

    def __init__(self, sequences, user_ids=None, num_items: int | None = None) -> None:
        sequences = np.asarray(sequences)
        if sequences.ndim != 2:
            raise ValueError(f"sequences: expected a 2-D array, got shape {sequences.shape}")
        self.sequences = _as_ids("sequences", sequences.ravel(), num_items).reshape(sequences.shape)
        self.user_ids = None if user_ids is None else np.asarray(user_ids, dtype=np.int32)
        if self.user_ids is not None and self.user_ids.shape != (len(sequences),):
            raise ValueError(
                f"user_ids: expected {len(sequences)} values, got shape {self.user_ids.shape}"
            )
        self.max_sequence_length = sequences.shape[1]
        self.num_items = int(
            num_items if num_items is not None else Interactions._count(self.sequences.ravel())
        )

    def __len__(self) -> int:
        return len(self.sequences)

    def __repr__(self) -> str:
        return (
            f"<Sequence interactions dataset ({len(self)} sequences x "
            f"{self.max_sequence_length} sequence length, {self.num_items} items)>"
        )
