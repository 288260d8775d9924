"""Reading delimited rating files with clear errors: file, line and value."""

from __future__ import annotations

import io
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


def parse_ratings(raw: bytes, sep: str, source: str) -> dict[str, np.ndarray]:
    """Parse ``user, item, rating, timestamp`` lines separated by ``sep``.

    Returns int64 ``user_id``, ``item_id``, ``timestamp`` and float32 ``rating`` arrays.
    ``source`` names the file in error messages, which also give the line number.
    """
    if sep != "\t":
        raw = raw.replace(sep.encode(), b"\t")
    if not raw.strip():
        raise ValueError(f"{source}: no ratings in the file")
    try:
        frame = pd.read_csv(
            io.BytesIO(raw), sep="\t", header=None, names=list(COLUMNS), engine="c",
            encoding="latin-1", skip_blank_lines=True,
        )
    except pd.errors.ParserError as error:
        raise ValueError(f"{source}: malformed line ({error})") from error
    arrays = {}
    for column in COLUMNS:
        values = frame[column]
        is_id = column != "rating"
        ok = pd.api.types.is_integer_dtype(values) if is_id else pd.api.types.is_numeric_dtype(values)
        if ok and not values.isna().any():
            array = values.to_numpy()
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() | (is_id & (numbers != np.floor(numbers)))
            line = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{source}, line {line + 1}: expected {'an integer' if is_id else 'a number'} "
                f"{column}, got {values.iloc[line]!r}"
            )
        if is_id and (array < 0).any():
            line = int(np.flatnonzero(array < 0)[0])
            raise ValueError(f"{source}, line {line + 1}: negative {column} {array[line]}")
        arrays[column] = array.astype(np.float32 if column == "rating" else np.int64)
    return arrays
