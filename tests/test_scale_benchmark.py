"""benchmarks/scale.py's measuring tools, on any machine (the benchmark itself runs
alone: docs/benchmarks.md)."""

import json
import sys
import time

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import scale  # noqa: E402  (benchmarks/scale.py)


def test_peak_memory_sees_an_allocation_inside_the_block():
    with scale.PeakMemory() as idle:
        time.sleep(0.05)
    with scale.PeakMemory() as busy:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        time.sleep(0.05)
        del block
    assert busy.peak - idle.peak > 250 * 2**20
    assert busy.seconds >= 0.05


def test_a_small_run_writes_its_table(tmp_path, monkeypatch):
    argv = ["scale.py", "--sizes", "--catalogues", "3000", "--catalogue-batches", "1"]
    argv += ["--threads", "1", "--chunk", "1000", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    scale.main()
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    assert [r["stage"] for r in rows] == [
        "epoch mlstm sampled_softmax",
        "epoch mlstm softmax (chunks of 1,000)",
        "evaluate 1,000 sequences",
    ]
    for row in rows[:2]:  # one batch of 256 timed, scaled to the epoch's windows
        windows = int(row["note"].split(" of ")[1].split(" ")[0].replace(",", ""))
        assert row["epoch_seconds"] == row["seconds"] * windows / 256
    assert "| 3k items | evaluate 1,000 sequences |" in (tmp_path / "scale.md").read_text()


class _Recorder:
    """A model stand-in: records which group's fit ran, and on how many windows."""

    def __init__(self, name, calls):
        self._batch_size, self.name, self.calls = 4, name, calls

    def fit(self, part):
        self.calls.append((self.name, len(part)))


def test_epochs_time_the_groups_in_turn_and_scale_to_all_windows():
    from mlstm4reco.interactions import SequenceInteractions

    calls, rows = [], []
    sets = {
        name: SequenceInteractions(np.ones((n, 5), dtype=np.int32), num_items=3)
        for name, n in (("small", 30), ("large", 300))
    }
    jobs = {name: (_Recorder(name, calls), windows) for name, windows in sets.items()}
    epochs = scale._epochs(rows, "epoch", jobs, batches=2, repeats=3)
    # one warm-up batch each, then the timed 2 batches of 4 windows, the groups alternating
    assert calls == [("small", 4), ("large", 4)] + [("small", 8), ("large", 8)] * 3
    assert [r["group"] for r in rows] == ["small", "large"]
    for row, windows in zip(rows, (30, 300)):
        assert row["epoch_seconds"] == row["seconds"] * windows / 8
        assert epochs[row["group"]] == row["epoch_seconds"]
        assert row["note"].startswith("median of 3, sizes in turn; 8 of ")
