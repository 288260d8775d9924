import os
import pathlib
import random
import zlib

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir() -> pathlib.Path | None:
    """The folder of real GroupLens archives named by MLSTM4RECO_DATA (relative paths
    are taken from the project root), or None."""
    value = os.environ.get("MLSTM4RECO_DATA")
    if not value:
        return None
    path = pathlib.Path(value)
    return path if path.is_absolute() else (ROOT / path).resolve()


def require_archive(name: str) -> pathlib.Path:
    folder = shared_data_dir()
    if folder is None:
        pytest.skip(f"{name}: set MLSTM4RECO_DATA to a folder holding it (e.g. ../shared/data)")
    if not (folder / name).is_file():
        pytest.skip(f"{name} is not in MLSTM4RECO_DATA={folder}")
    return folder


@pytest.fixture(scope="session")
def extensions_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("torch_extensions")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch, extensions_dir):
    """No test reads or writes the user's real cache folder; the C++ loops are built once
    a session (into one folder the tests and their subprocesses share)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions_dir))


@pytest.fixture(autouse=True)
def seeded(request):
    """Each test starts from its own fixed seed (from its name) for torch, numpy and
    random: torch seeds its default generator at random in each process, so a test that
    draws unseeded data would see different data on every run."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
