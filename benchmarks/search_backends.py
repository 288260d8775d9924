"""Wall time of the same search with the local backend and with Ray, and what ASHA saves.

    MLSTM4RECO_DATA=../shared/data python benchmarks/search_backends.py \
        [--dataset ml100k] [--model mlstm] [--trials 8] [--asha-trials 16] [--workers 2]

Runs, one after the other, in fresh folders (under --out, default a temporary folder):
(1) the local backend, ``--trials`` trials; (2) Ray with ``--workers`` workers, the same
trials; (3) Ray, ``--asha-trials`` trials without early stopping; (4) the same with ASHA.
Prints each one's wall time (from the start of the call, Ray's start-up included), the
ratio to its baseline, and the best validation MRR with that trial's test MRR.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlstm4reco import search  # noqa: E402
from mlstm4reco.ray_search import run_ray_search  # noqa: E402


def best(records: list[dict]) -> dict:
    finished = [r for r in records if r["status"] == "ok"]
    return max(finished, key=lambda r: r["valid_mrr"])


def timed(label: str, function, out: pathlib.Path) -> dict:
    start = time.perf_counter()
    records = function(out)
    seconds = time.perf_counter() - start
    top = best(records)
    row = dict(
        run=label,
        trials=len(records),
        seconds=seconds,
        stopped=sum(r["status"] == "stopped" for r in records),
        failed=sum(r["status"] == "failed" for r in records),
        epochs=sum(r.get("epochs") or 0 for r in records),
        best_valid_mrr=top["valid_mrr"],
        its_test_mrr=top["test_mrr"],
    )
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml100k")
    parser.add_argument("--model", default="mlstm")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--asha-trials", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grace-period", type=int, default=10)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    config = search.load_config(search.config_path(args.dataset, args.model))
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="search_backends_"))
    common = dict(device="cpu", data_dir=args.data_dir, progress=False)
    ray = dict(common, workers=args.workers)
    asha = dict(
        every=args.every, grace_period=args.grace_period, reduction_factor=args.reduction_factor
    )
    print(f"{config.name}: results under {out}", flush=True)
    rows = [
        timed(
            f"local, {args.trials} trials",
            lambda o: search.run_search(config, args.trials, o, **common),
            out / "local",
        ),
        timed(
            f"ray x{args.workers}, {args.trials} trials",
            lambda o: run_ray_search(config, args.trials, o, **ray),
            out / "ray",
        ),
        timed(
            f"ray x{args.workers}, {args.asha_trials} trials",
            lambda o: run_ray_search(config, args.asha_trials, o, **ray),
            out / "ray_plain",
        ),
        timed(
            f"ray x{args.workers} + ASHA, {args.asha_trials} trials",
            lambda o: run_ray_search(config, args.asha_trials, o, asha=asha, **ray),
            out / "ray_asha",
        ),
    ]
    print(
        f"\n{'run':<32}{'seconds':>9}{'ratio':>8}{'epochs':>8}{'stopped':>9}"
        f"{'best valid':>12}{'its test':>10}"
    )
    for index, row in enumerate(rows):
        base = rows[0 if index < 2 else 2]["seconds"]
        print(
            f"{row['run']:<32}{row['seconds']:>9.0f}{row['seconds'] / base:>7.2f}x"
            f"{row['epochs']:>8}"
            f"{row['stopped']:>9}{row['best_valid_mrr']:>12.4f}{row['its_test_mrr']:>10.4f}"
        )


if __name__ == "__main__":
    main()
