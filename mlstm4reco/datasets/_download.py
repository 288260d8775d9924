"""Finding dataset files on disk, and downloading them when absent.

A file is looked for in (1) the ``data_dir`` argument, (2) the folder named by the
``MLSTM4RECO_DATA`` environment variable, (3) the user cache folder
(``$XDG_CACHE_HOME/mlstm4reco``, default ``~/.cache/mlstm4reco``). Only when it is in none
of them is it downloaded, into ``data_dir`` if given, else the cache: to a temporary file
with a progress bar, checked against the official MD5, then renamed into place, so a
failed or corrupt download never replaces or leaves behind a file.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.error
import urllib.request

from tqdm.auto import tqdm

from mlstm4reco.files import atomic_path

ENV_VAR = "MLSTM4RECO_DATA"


def cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "mlstm4reco"


def search_dirs(data_dir=None) -> list[pathlib.Path]:
    """The folders looked in, in order."""
    dirs = []
    if data_dir is not None:
        dirs.append(pathlib.Path(data_dir))
    if os.environ.get(ENV_VAR):
        dirs.append(pathlib.Path(os.environ[ENV_VAR]))
    dirs.append(cache_dir())
    return dirs


def md5sum(path: pathlib.Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: pathlib.Path, md5: str | None) -> pathlib.Path:
    """Download ``url`` to ``destination`` atomically, checking ``md5``."""
    destination = pathlib.Path(destination)
    with atomic_path(destination) as tmp:
        try:
            response = urllib.request.urlopen(url, timeout=60)
        except (urllib.error.URLError, OSError) as error:
            raise FileNotFoundError(
                f"{destination.name} is not on disk and could not be downloaded from {url} "
                f"({error}). Download it by hand and put it in {destination.parent}, or in a "
                f"folder named by {ENV_VAR}."
            ) from error
        with response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        if md5 is not None:
            actual = md5sum(tmp)
            if actual != md5:
                raise ValueError(
                    f"checksum mismatch for {url}: expected MD5 {md5}, got {actual}; "
                    "the partial download was deleted"
                )
    return destination


def find_or_download(filename: str, url: str, md5: str | None, data_dir=None) -> pathlib.Path:
    """The path of ``filename`` from the first folder that has it, downloading it when
    none does. A file found on disk is returned as it is: callers validate it by
    parsing."""
    for folder in search_dirs(data_dir):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
        if candidate.exists():  # a folder of that name: not downloaded over, nor passed by
            kind = "a folder" if candidate.is_dir() else "not a regular file"
            raise ValueError(
                f"{candidate}: {kind}, where the file {filename} was looked for; "
                f"put the file itself there (or remove it to download {filename})"
            )
    target = pathlib.Path(data_dir) if data_dir is not None else cache_dir()
    return download(url, target / filename, md5)
