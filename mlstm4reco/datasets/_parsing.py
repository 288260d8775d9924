"""Reading delimited rating files with clear errors: file, line and value."""

from __future__ import annotations

import io
import re
import zipfile
import zlib

import numpy as np
import pandas as pd

COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def read_zip_member(archive, member: str) -> bytes:
    """The bytes of ``member`` inside the zip ``archive``, or a ValueError that says the
    archive is truncated, corrupt or lacks the member."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                raise ValueError(
                    f"{archive}: no {member} in the archive (it holds {names[:5]}); "
                    "is this the right file?"
                )
            return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise ValueError(f"{archive}: corrupt or truncated zip archive ({error})") from error


LIMITS = {
    "user_id": np.iinfo(np.int32).max,
    "item_id": np.iinfo(np.int32).max,
    "timestamp": np.iinfo(np.int64).max,
}
"""The largest value of each integer column (ids are stored as int32)."""


def parse_ratings(raw: bytes, sep: str, source: str) -> dict[str, np.ndarray]:
    """Parse ``user, item, rating, timestamp`` lines separated by ``sep``.

    Returns int64 ``user_id``, ``item_id``, ``timestamp`` and float32 ``rating`` arrays.
    Ids and timestamps must be written as non-negative integers (``196``, not ``196.0``)
    within :data:`LIMITS`, and item id 0 is refused (it pads sequences). ``source`` names
    the file in error messages, which also give the line number and the value.
    """
    if sep != "\t":
        raw = raw.replace(sep.encode(), b"\t")
    if not raw.strip():
        raise ValueError(f"{source}: no ratings in the file")
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            sep="\t",
            header=None,
            names=list(COLUMNS),
            engine="c",
            encoding="latin-1",
            skip_blank_lines=True,
        )
    except pd.errors.ParserError as error:
        raise ValueError(f"{source}: malformed line ({error})") from error
    arrays = {}
    for column in COLUMNS:
        if column == "rating":
            values = frame[column]
            numbers = (
                values
                if pd.api.types.is_numeric_dtype(values)
                else pd.to_numeric(values, errors="coerce")
            )
            if numbers.isna().any():
                line = int(np.flatnonzero(numbers.isna().to_numpy())[0])
                raise ValueError(
                    f"{source}, line {line + 1}: expected a number rating, got "
                    f"{values.iloc[line]!r}"
                )
            arrays[column] = numbers.to_numpy().astype(np.float32)
        else:
            arrays[column] = _integer_column(frame[column], raw, column, source)
    if (arrays["item_id"] == 0).any():
        line = int(np.flatnonzero(arrays["item_id"] == 0)[0])
        raise ValueError(
            f"{source}, line {line + 1}: item_id 0, which pads sequences; item ids must start at 1"
        )
    return arrays


def _integer_column(values: pd.Series, raw: bytes, column: str, source: str) -> np.ndarray:
    """A column of non-negative integers within ``LIMITS[column]``, or a ValueError naming
    the first bad line and its text as written."""
    limit = LIMITS[column]
    if pd.api.types.is_integer_dtype(values):
        array = values.to_numpy().astype(np.int64)
        bad = (array < 0) | (array > limit)
        if bad.any():
            line = int(np.flatnonzero(bad)[0])
            if array[line] < 0:
                raise ValueError(f"{source}, line {line + 1}: negative {column} {array[line]}")
            raise ValueError(
                f"{source}, line {line + 1}: {column} {array[line]} is over the largest id, {limit}"
            )
        return array
    # Not all integers as pandas reads them (196.0, 23 digits, text, a missing field):
    # read the column again as text, to name the first bad line with what it holds.
    text = pd.read_csv(
        io.BytesIO(raw),
        sep="\t",
        header=None,
        names=list(COLUMNS),
        dtype=str,
        engine="c",
        encoding="latin-1",
        skip_blank_lines=True,
        keep_default_na=False,
    )[column]
    text = text.fillna("").str.strip()  # a missing field: empty
    digits = text.str.fullmatch(r"\d+").to_numpy(dtype=bool)
    long = text.str.len().to_numpy() > len(str(limit))
    for line in np.flatnonzero(~digits | long):
        if not digits[line]:
            negative = re.fullmatch(r"-\d+", text.iloc[line])
            raise ValueError(
                f"{source}, line {line + 1}: "
                + (
                    f"negative {column} {text.iloc[line]}"
                    if negative
                    else f"expected an integer {column}, got {text.iloc[line]!r}"
                )
            )
        if int(text.iloc[line]) > limit:
            raise ValueError(
                f"{source}, line {line + 1}: {column} {text.iloc[line]} is over the largest "
                f"id, {limit}"
            )
    array = text.to_numpy().astype(np.int64)
    if (array > limit).any():
        line = int(np.flatnonzero(array > limit)[0])
        raise ValueError(
            f"{source}, line {line + 1}: {column} {array[line]} is over the largest id, {limit}"
        )
    return array
