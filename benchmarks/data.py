"""Load + split + window time of MovieLens 1M with the 2018 protocol.

    MLSTM4RECO_DATA=../shared/data python benchmarks/data.py [--variant 1M] [--repeats 5]

Each repeat parses the zip from scratch (nothing is cached between repeats). Prints the
median of each stage and of the total; issue target: total under 5 s on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets import get_movielens_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="1M")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    stages = {"load": [], "split": [], "window": [], "total": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        data = get_movielens_dataset(args.variant, data_dir=args.data_dir)
        t1 = time.perf_counter()
        state = np.random.RandomState(72)
        train, rest = user_based_train_test_split(data, 0.2, state)
        test, valid = user_based_train_test_split(rest, 0.5, state)
        t2 = time.perf_counter()
        sizes = [len(p.to_sequence(100, 20, 100)) for p in (train, valid, test)]
        t3 = time.perf_counter()
        for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            stages[name].append(value)
    print(f"MovieLens {args.variant}: {len(data):,} ratings; train/valid/test sequences {sizes}")
    for name, values in stages.items():
        print(f"{name:<8}{statistics.median(values) * 1e3:>10.1f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
