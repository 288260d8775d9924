"""benchmarks/search_throughput.py on a tiny search: W processes share one folder and
run W * k trials between them, each once."""

import json
import sys

from conftest import ROOT
from test_experiments import tiny_config

sys.path.insert(0, str(ROOT / "benchmarks"))
import search_throughput  # noqa: E402  (benchmarks/search_throughput.py)


def test_processes_share_the_trials_and_the_rate_is_what_they_ran(tmp_path):
    config = tiny_config(tmp_path / "configs")
    argv = ["--dataset", "synthetic", "--config", str(config), "--workers", "1", "2"]
    argv += ["--trials-per-worker", "1", "--device", "cpu", "--out", str(tmp_path / "out")]
    rows = search_throughput.main(argv)
    assert [(r["workers"], r["trials"], r["failed_trials"]) for r in rows] == [(1, 1, 0), (2, 2, 0)]
    for row in rows:
        assert row["trials_per_minute"] == row["trials"] * 60 / row["seconds"]
        assert row["minutes_for_200"] == 200 / row["trials_per_minute"]
        assert len(row["trial_seconds"]) == row["trials"]
    saved = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert saved["rows"] == rows
