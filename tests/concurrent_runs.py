"""A search or reproduction run in a process of its own, for the tests of two processes
sharing one results folder: ``python concurrent_runs.py search|reproduce CONFIG... OUT
NAME TOGETHER`` where every process, before its first trial ends, waits until
``TOGETHER/<name>`` files of all processes exist, so that their trials overlap in time."""

import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlstm4reco import search  # noqa: E402


def wait_for_all(together: pathlib.Path, expected: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(together.iterdir())) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sorted(p.name for p in together.iterdir())} in {together}")
        time.sleep(0.05)


def overlapping_train(arguments, **kwargs):
    """A stand-in for training: waits for the other process, then a moment, and scores
    the point by its learning rate; it records which process ran it."""
    wait_for_all(TOGETHER, EXPECTED)
    time.sleep(0.2)
    return dict(
        valid_mrr=arguments["learning_rate"],
        test_mrr=0.0,
        final_loss=1.0,
        fit_seconds=0.0,
        device="cpu",
        pid=os.getpid(),
    )


if __name__ == "__main__":
    command, *configs, out, name, together, expected = sys.argv[1:]
    TOGETHER, EXPECTED = pathlib.Path(together), int(expected)
    (TOGETHER / name).touch()
    if command == "search":
        config = search.load_config(configs[0])
        search.run_search(config, 6, out, seed=int(name), progress=False, train=overlapping_train)
    else:
        loaded = [search.load_config(path) for path in configs]
        search.run_reproduce(loaded, 3, out, progress=False, train=overlapping_train)
