"""Raw user and item ids of a dataset (strings, large numbers, anything pandas reads) and
the contiguous ids the library works with: users 0..U-1, items 1..N-1 (0 pads sequences).

``recommend`` and ``predict`` speak contiguous ids; :meth:`IdMapping.raw_items` turns
them back into the dataset's own. A results folder of a user's file keeps the mapping as
``ids.json`` (:meth:`IdMapping.save`, :meth:`IdMapping.load`).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd

from mlstm4reco.files import atomic_path

__all__ = ["IdMapping"]


def _plain(values: np.ndarray) -> list:
    """JSON-ready values: numpy scalars as Python numbers, the rest as they are."""
    return [value.item() if hasattr(value, "item") else value for value in values]


class IdMapping:
    """``users[u]`` is the raw id of user u, ``items[i]`` the raw id of item i (``items[0]``
    is None: the padding id has no raw id)."""

    def __init__(self, users, items) -> None:
        self.users = np.asarray(users, dtype=object)
        self.items = np.asarray(items, dtype=object)

    @classmethod
    def of(cls, raw_users, raw_items) -> tuple[IdMapping, np.ndarray, np.ndarray]:
        """The mapping of raw id columns, in order of first appearance, and the columns as
        contiguous ids (users from 0, items from 1)."""
        users, user_ids = _codes(raw_users)
        items, item_ids = _codes(raw_items)
        return cls(users, [None, *items]), user_ids, item_ids + 1

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"<IdMapping: {len(self.users)} users, {len(self.items) - 1} items>"

    def raw_items(self, ids) -> np.ndarray:
        """The raw ids of contiguous item ids (as ``recommend`` returns them)."""
        return self.items[np.asarray(ids, dtype=np.int64)]

    def raw_users(self, ids) -> np.ndarray:
        return self.users[np.asarray(ids, dtype=np.int64)]

    def item_ids(self, raw) -> np.ndarray:
        """The contiguous ids of raw item ids; a KeyError names the first unknown one."""
        index = {value: i for i, value in enumerate(_plain(self.items)) if i}
        try:
            return np.array([index[value] for value in _plain(np.asarray(raw, dtype=object))])
        except KeyError as error:
            raise KeyError(f"item {error.args[0]!r} is not in the mapping") from None

    def save(self, path) -> None:
        """Write the mapping as JSON, atomically."""
        document = {"users": _plain(self.users), "items": _plain(self.items[1:])}
        with atomic_path(pathlib.Path(path)) as tmp:
            tmp.write_text(json.dumps(document))

    @classmethod
    def load(cls, path) -> IdMapping:
        document = json.loads(pathlib.Path(path).read_text())
        return cls(document["users"], [None, *document["items"]])

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, IdMapping)
            and _plain(self.users) == _plain(other.users)
            and _plain(self.items) == _plain(other.items)
        )


def _codes(values) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values in order of first appearance, each value's index among them)."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), sort=False)
    return np.asarray(uniques, dtype=object), codes.astype(np.int64)
