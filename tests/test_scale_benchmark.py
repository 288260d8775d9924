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
