"""Writing files so that a reader never sees half of one: atomic writes, a group of files
replaced together, and a check that a folder can be written before work starts.

A write goes to a temporary file beside its target (``.NAME.XXXXXXXX.part``) and is renamed
onto it only when complete, so a kill or a full disk leaves the old file whole.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager

__all__ = ["atomic_path", "write_together", "check_writable", "leftover_parts", "describe_os_error"]


def _temporary_beside(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual mode
    return pathlib.Path(tmp)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, delete
    it on failure."""
    path = pathlib.Path(path)
    tmp = _temporary_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_together(contents: Mapping[pathlib.Path, bytes | str]) -> None:
    """Write several files so that either all of them are new or none is: every one is
    written to its temporary file first, and only when all are complete are they renamed
    into place (a rename needs no space, so a full disk leaves the old set whole)."""
    written: dict[pathlib.Path, pathlib.Path] = {}
    try:
        for path, content in contents.items():
            path = pathlib.Path(path)
            written[path] = tmp = _temporary_beside(path)
            if isinstance(content, str):
                tmp.write_text(content, encoding="utf-8")
            else:
                tmp.write_bytes(content)
        for path, tmp in written.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in written.values():
            tmp.unlink(missing_ok=True)
        raise


def leftover_parts(path) -> list[pathlib.Path]:
    """Temporary files of :func:`atomic_path` for ``path`` that a killed writer left."""
    path = pathlib.Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.part"))


def describe_os_error(error: OSError) -> str:
    """An OSError's reason in words, without the path (the caller names the file)."""
    return error.strerror or str(error) or type(error).__name__


def check_writable(folder) -> pathlib.Path:
    """Create ``folder`` (and its parents) and write and remove a probe file in it, so
    that a folder that cannot keep results is found before any work is done.

    Raises
    ------
    OSError (NotADirectoryError, PermissionError, a full disk's ENOSPC, ...) as the
    system raised it.
    """
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(20, "exists and is not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    probe = _temporary_beside(
        folder / ".write-probe"
    )  # a name of its own: processes may probe at once
    try:
        probe.write_bytes(b"0" * 4096)  # a full disk refuses a block, not an empty file
    finally:
        probe.unlink(missing_ok=True)
    return folder
