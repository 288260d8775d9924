"""Epoch and evaluation times on MovieLens 1M with the 2018 protocol and best
hyperparameters, LSTM vs mLSTM, batched vs one-at-a-time evaluation, in one run.

    MLSTM4RECO_DATA=../shared/data python benchmarks/training.py [--epochs 3] [--device cpu]

Issue targets (CPU, 2 threads): mLSTM epoch <= 1.5x LSTM epoch; batched evaluation of the
test split >= 20x faster than scoring one sequence at a time (Spotlight's loop). With
--small both train at dim 32, batch 160 (issue 34: the mLSTM within 1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from gpu import BEST  # the study's best ML-1M configurations, from configs/
from scipy.stats import rankdata

from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets import get_movielens_dataset
from mlstm4reco.evaluation import FLOAT_MAX, sequence_mrr_score
from mlstm4reco.sequence_model import ImplicitSequenceModel


def spotlight_loop_mrr(model, test) -> np.ndarray:
    """Spotlight's evaluation: predict one sequence at a time, rank with scipy."""
    scores = []
    for sequence in test.sequences:
        costs = -model.predict(sequence[:-1])
        costs[sequence[:-1]] = FLOAT_MAX
        scores.append(1.0 / rankdata(costs)[sequence[-1]])
    return np.array(scores)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--small",
        action="store_true",
        help="both models at dim 32, batch 160 (the search space's small end) instead of "
        "the study's best",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = get_movielens_dataset("1M", data_dir=args.data_dir)
    state = np.random.RandomState(72)
    train, rest = user_based_train_test_split(data, 0.2, state)
    test, _ = user_based_train_test_split(rest, 0.5, state)
    train, test = train.to_sequence(100, 20, 100), test.to_sequence(100, 20, 100)
    print(
        f"ML-1M: {len(train)} train / {len(test)} test sequences, device {args.device}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )

    def arguments(name: str) -> dict:
        if args.small:  # the search space's small end, the study's learning rate
            return dict(embedding_dim=32, batch_size=160, learning_rate=BEST[name]["learning_rate"])
        return BEST[name]

    models = {
        name: ImplicitSequenceModel(
            loss="adaptive_hinge",
            representation=name,
            n_iter=1,
            random_state=72,
            device=args.device,
            **arguments(name),
        )
        for name in BEST
    }
    times = {name: [] for name in models}
    for _ in range(args.epochs):  # alternate the models so that drift hits both alike
        for name, model in models.items():
            times[name].append(timed(lambda: model.fit(train))[0])
    epoch = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(
            f"{name:<6} epoch {epoch[name]:7.2f} s (median of {args.epochs}: "
            f"{', '.join(f'{t:.2f}' for t in values)})"
        )
    print(f"mLSTM / LSTM epoch ratio: {epoch['mlstm'] / epoch['lstm']:.2f}x")

    model = models["mlstm"]
    batched = [
        timed(lambda: sequence_mrr_score(model, test, exclude_preceding=True)) for _ in range(5)
    ]
    batched_time = statistics.median(t for t, _ in batched)
    loop_time, loop_mrr = timed(lambda: spotlight_loop_mrr(model, test))
    np.testing.assert_allclose(batched[0][1], loop_mrr, rtol=1e-6)
    print(
        f"evaluation of the test split: batched {batched_time * 1e3:.0f} ms (median of 5), "
        f"one at a time {loop_time * 1e3:.0f} ms; speed-up {loop_time / batched_time:.1f}x "
        f"(same MRR {loop_mrr.mean():.4f})"
    )


if __name__ == "__main__":
    main()
