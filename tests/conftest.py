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


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def seeded(request):
    """Each test starts from its own fixed seed (from its name) for torch, numpy and
    random: torch seeds its default generator at random in each process, so a test that
    draws unseeded data would see different data on every run."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# Tests marked ``early(start=f)`` wait for a subprocess that ``f()`` begins and returns as
# (process, log file). It is begun as soon as the tests are collected and the test itself
# runs last, so that the subprocess runs beside the rest of the suite (on a second core).
_started: dict[str, tuple] = {}


def _skipped(item) -> bool:
    """Whether a boolean ``skipif`` marks the item (string conditions count as not)."""
    return any(mark.args and mark.args[0] is True for mark in item.iter_markers("skipif"))


def _start(item) -> tuple:
    return item.get_closest_marker("early").kwargs["start"]()


def _stop(process, log) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("early") is not None)  # stable: the rest keep their order


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    for item in session.items:
        if item.get_closest_marker("early") is not None and not _skipped(item):
            _started[item.nodeid] = _start(item)


def pytest_sessionfinish(session):
    """What a stopped run (``-x``, Ctrl-C) left running is stopped too."""
    for started in _started.values():
        _stop(*started)
    _started.clear()


@pytest.fixture
def early(request):
    """(process, log file) that the test's ``early`` marker started when the tests were
    collected (or starts now); the log is read from its start."""
    started = _started.pop(request.node.nodeid, None) or _start(request.node)
    yield started
    _stop(*started)
