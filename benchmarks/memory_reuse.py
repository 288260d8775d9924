"""Training batches with freed memory kept for reuse (mlstm4reco.allocator, what
experiments/run.py turns on) against malloc's defaults, on ML-1M's leave-one-out windows
of 200 with the full softmax, in one run.

    MLSTM4RECO_DATA=../shared/data python benchmarks/memory_reuse.py [--batches 6]
        [--threads 1] [--repeats 2] [--models sasrec mlstm gru]

The setting is process-wide, so each (model, setting) trains in a process of its own
(``MLSTM4RECO_KEEP_MEMORY=1`` or ``0``), the two settings in turn, ``--repeats`` times.
Each process builds the model on one batch, then times ``--batches`` more; printed are
the medians over all timed batches of the wall seconds, the process's CPU seconds (user
and system) and its minor page faults a batch, and the ratios of kept to default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from softmax import MODELS  # the configs' best arguments

from mlstm4reco import allocator, protocols
from mlstm4reco.datasets import get_movielens_dataset
from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.sequence_model import ImplicitSequenceModel


def child(model: str, batches: int, threads: int, data_dir) -> None:
    """Train ``batches`` + 1 batches of ``model`` in this process; print one JSON line of
    each timed batch's wall, user and system seconds and minor faults."""
    kept = allocator.keep_freed_memory()
    torch.set_num_threads(threads)
    data = get_movielens_dataset("1M", data_dir=data_dir)
    train = protocols.split(
        data, "leave_one_out", max_sequence_length=200, min_sequence_length=1, step_size=200
    ).train
    arguments = MODELS[model]
    size = arguments["batch_size"]
    order = np.random.RandomState(0).permutation(len(train))
    net = ImplicitSequenceModel(
        loss="softmax", exclude_preceding=True, n_iter=1, random_state=0, **arguments
    )
    rows = []
    for index in range(batches + 1):
        batch = SequenceInteractions(
            train.sequences[order[index * size : (index + 1) * size]], num_items=train.num_items
        )
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        net.fit(batch)
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
        if index:  # the first builds the net
            rows.append(
                dict(
                    wall=wall,
                    user=after.ru_utime - before.ru_utime,
                    system=after.ru_stime - before.ru_stime,
                    faults=after.ru_minflt - before.ru_minflt,
                )
            )
    print(json.dumps(dict(kept=kept, rows=rows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6, help="timed batches per process")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="processes per setting")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--child", choices=list(MODELS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batches, args.threads, args.data_dir)
        return
    print(
        f"ML-1M leave-one-out, windows of 200, full softmax; {args.threads} threads, "
        f"{args.batches} batches x {args.repeats} processes per setting, torch "
        f"{torch.__version__}"
    )
    command = [sys.executable, __file__, "--batches", str(args.batches)]
    command += ["--threads", str(args.threads)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    for model in args.models:
        rows = {"0": [], "1": []}
        for _ in range(args.repeats):
            for keep in rows:  # the settings in turn
                done = subprocess.run(
                    [*command, "--child", model],
                    env={**os.environ, "MLSTM4RECO_KEEP_MEMORY": keep},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(done.stdout.splitlines()[-1])
                if result["kept"] != (keep == "1"):
                    raise RuntimeError(f"MLSTM4RECO_KEEP_MEMORY={keep} was not taken up")
                rows[keep] += result["rows"]
        medians = {
            keep: {k: statistics.median(r[k] for r in values) for k in values[0]}
            for keep, values in rows.items()
        }
        base = medians["0"]
        for keep, label in (("0", "malloc's defaults"), ("1", "freed memory kept")):
            m = medians[keep]
            cpu = (m["user"] + m["system"]) / (base["user"] + base["system"])
            print(
                f"{model:<7}{label:<19} {m['wall'] * 1e3:6.0f} ms a batch "
                f"({m['wall'] / base['wall']:.2f}x), CPU {m['user'] * 1e3:5.0f} + "
                f"{m['system'] * 1e3:4.0f} ms ({cpu:.2f}x), {m['faults']:8.0f} faults"
            )


if __name__ == "__main__":
    main()
