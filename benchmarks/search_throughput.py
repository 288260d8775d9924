"""Trials per minute of the main job (a TPE search) with several search processes sharing
one machine or one GPU, and the study's 200 trials extrapolated from it.

    MLSTM4RECO_DATA=../shared/data python benchmarks/search_throughput.py \
        [--dataset ml1m] [--model mlstm] [--workers 1 4 8] [--trials-per-worker 2] \
        [--device cuda] [--threads 1] [--out DIR]

For each W of --workers, in a fresh results folder: W processes of
``run.py search --trials W * k`` on the same folder (they claim trial numbers, so each
trial runs once), timed from the first start to the last exit, start-up and data loading
included. Prints trials per minute, its ratio to the first W, and the minutes 200 trials
would take at that rate; with --out, ``throughput.json`` (the rows and every trial's
record seconds).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "experiments" / "run.py")]


def measure(workers: int, trials: int, argv: list[str], folder: pathlib.Path) -> dict:
    """W search processes on one folder until it holds ``trials`` trials."""
    command = [*RUN, "search", *argv, "--trials", str(trials), "--out", str(folder), "--quiet"]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    errors = [p.communicate()[1] for p in processes]
    seconds = time.perf_counter() - start
    failed = [e for p, e in zip(processes, errors) if p.returncode != 0]
    if failed:
        raise SystemExit(f"a search process failed:\n{failed[0][-2000:]}")
    (records_file,) = folder.glob("*/trials.json")
    records = json.loads(records_file.read_text())["records"]
    per_minute = len(records) * 60 / seconds
    return dict(
        workers=workers,
        trials=len(records),
        failed_trials=sum(r["status"] != "ok" for r in records),
        seconds=seconds,
        trials_per_minute=per_minute,
        minutes_for_200=200 / per_minute,
        trial_seconds=[r["seconds"] for r in records],
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml1m")
    parser.add_argument("--model", default="mlstm")
    parser.add_argument("--config", default=None, help="a config file instead of configs/'s")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    search = ["--dataset", args.dataset, "--model", args.model, "--device", args.device]
    search += ["--threads", str(args.threads)]
    if args.config:
        search += ["--config", args.config]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for workers in args.workers:
            folder = pathlib.Path(scratch) / f"workers{workers}"
            row = measure(workers, workers * args.trials_per_worker, search, folder)
            rows.append(row)
            print(
                f"{workers} at a time: {row['trials']} trials in {row['seconds']:.0f} s, "
                f"{row['trials_per_minute']:.2f} trials/min "
                f"({row['trials_per_minute'] / rows[0]['trials_per_minute']:.2f}x the first), "
                f"200 trials in {row['minutes_for_200']:.1f} min",
                flush=True,
            )
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.json").write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))
    return rows


if __name__ == "__main__":
    main()
