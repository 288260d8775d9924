"""A user's own interactions from a CSV, TSV or Parquet file, or from a pandas DataFrame.

Columns are named by options (``user_col``, ``item_col``, ``time_col``; optionally a
``rating_col`` with ``min_rating`` to keep only ratings at or above it). Raw ids of any
type (strings, large numbers) become contiguous ids, users from 0 and items from 1 (0 pads
sequences), in order of first appearance; the :class:`~mlstm4reco.id_mapping.IdMapping`
is the interactions' ``id_mapping``. Timestamps are numbers or dates (read by pandas,
as seconds since 1970). A bad file gets one line naming it, the column and the first bad
row: a missing column, an unreadable timestamp or rating, nothing left after the rating
filter, the same (user, item, time) twice.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from mlstm4reco.id_mapping import IdMapping
from mlstm4reco.interactions import Interactions

__all__ = ["get_file_dataset", "interactions_from_frame", "read_table"]

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
PARQUET = (".parquet", ".pq")


def read_table(path, sep: str | None = None) -> pd.DataFrame:
    """The file as a DataFrame of strings (CSV, TSV) or of its own types (Parquet)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    suffix = path.suffix.lower()
    if suffix in PARQUET:
        try:
            return pd.read_parquet(path)
        except ImportError as error:
            raise ValueError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
            ) from error
        except Exception as error:  # noqa: BLE001 - the engines raise many kinds
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from error
    if sep is None and suffix not in SEPARATORS:
        raise ValueError(
            f"{path}: cannot tell the format from {suffix!r}; name it .csv, .tsv or .parquet, "
            "or give the separator"
        )
    try:
        return pd.read_csv(path, sep=sep or SEPARATORS[suffix], dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"{path}: not a readable table ({' '.join(str(error).split())})"
        ) from error


def _row(frame: pd.DataFrame, position: int, textual: bool) -> str:
    """How a message names row ``position``: its line in a text file (header on line 1)."""
    return f"line {position + 2}" if textual else f"row {position}"


def _numbers(frame, column, source, textual) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source}, {_row(frame, first, textual)}: column {column!r}: "
            f"expected a number, got {frame[column].iloc[first]!r}"
        )
    return values


def _times(frame, column, source, textual) -> np.ndarray:
    """Timestamps as numbers: numeric as they are, dates as seconds since 1970."""
    raw = frame[column]
    numbers = pd.to_numeric(raw, errors="coerce")
    if numbers.notna().all() and np.isfinite(numbers.to_numpy(dtype=np.float64)).all():
        values = numbers.to_numpy()
        return (
            values.astype(np.int64)
            if np.all(values == np.floor(values))
            else values.astype(np.float64)
        )
    dates = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
    if dates.isna().any():
        first = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise ValueError(
            f"{source}, {_row(frame, first, textual)}: column {column!r}: "
            f"expected a number or a date, got {raw.iloc[first]!r}"
        )
    return (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def interactions_from_frame(
    frame: pd.DataFrame,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    rating_col: str | None = None,
    min_rating: float | None = None,
    source: str = "the DataFrame",
    textual: bool = False,
) -> Interactions:
    """Interactions of ``frame``'s columns (see the module's docstring); ``source`` names
    the data in error messages and ``textual`` counts rows as a text file's lines."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    named = {
        "user_col": user_col,
        "item_col": item_col,
        "time_col": time_col,
        "rating_col": rating_col,
    }
    for option, column in named.items():
        if column is not None and column not in frame.columns:
            raise ValueError(
                f"{source}: no column {column!r} ({option}); its columns are "
                f"{[str(c) for c in frame.columns]}"
            )
    if min_rating is not None and rating_col is None:
        raise ValueError("min_rating needs rating_col, the column to filter on")
    frame = frame.reset_index(drop=True)
    ratings = _numbers(frame, rating_col, source, textual) if rating_col is not None else None
    if min_rating is not None:
        keep = ratings >= min_rating
        if not keep.any():
            raise ValueError(f"{source}: no interactions left with {rating_col} >= {min_rating}")
        frame, ratings = frame[keep].reset_index(drop=True), ratings[keep]
    if frame.empty:
        raise ValueError(f"{source}: no interactions")
    times = _times(frame, time_col, source, textual) if time_col is not None else None
    key = [user_col, item_col] + ([time_col] if time_col is not None else [])
    duplicated = frame.duplicated(subset=key).to_numpy()
    if duplicated.any():
        first = int(np.flatnonzero(duplicated)[0])
        raise ValueError(
            f"{source}, {_row(frame, first, textual)}: the same ({', '.join(key)}) "
            f"as an earlier row: {frame.loc[first, key].tolist()}"
        )
    mapping, user_ids, item_ids = IdMapping.of(
        frame[user_col].to_numpy(), frame[item_col].to_numpy()
    )
    interactions = Interactions(
        user_ids,
        item_ids,
        ratings=ratings,
        timestamps=times,
        num_users=len(mapping.users),
        num_items=len(mapping.items),
    )
    interactions.id_mapping = mapping
    return interactions


def get_file_dataset(
    data_dir=None,
    path=None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    rating_col: str | None = None,
    min_rating: float | None = None,
    sep: str | None = None,
) -> Interactions:
    """The interactions in the file at ``path`` (relative to ``data_dir`` when it is not
    found as given)."""
    if path is None:
        raise ValueError("the file dataset needs a path (a config's data: {path: ...})")
    path = pathlib.Path(path)
    if not path.is_file() and data_dir is not None and (pathlib.Path(data_dir) / path).is_file():
        path = pathlib.Path(data_dir) / path
    frame = read_table(path, sep)
    textual = path.suffix.lower() not in PARQUET
    return interactions_from_frame(
        frame,
        user_col,
        item_col,
        time_col,
        rating_col,
        min_rating,
        source=str(path),
        textual=textual,
    )
