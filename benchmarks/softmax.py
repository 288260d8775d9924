"""Training batches with the full softmax loss: the fused cross-entropy
(mlstm4reco/full_softmax.py) against the composite of scores, masking and
``cross_entropy``, on ML-1M's leave-one-out windows of 200, in one run.

    MLSTM4RECO_DATA=../shared/data python benchmarks/softmax.py [--batches 8] [--threads 2]
        [--item-chunk-size C] [--reuse [--epoch-batches 4]]

For each model (SASRec and the mLSTM at their configs' best arguments, the input's items
excluded as in the comparison of issue 33) the same batches are trained with each loss
path in turn, batch by batch, so that drift hits both alike; the median seconds a batch,
the ratio to the composite, and the epoch that extrapolates to. The paths must give the
same loss on the same batch (checked).

With ``--reuse`` the fused path is timed with its CPU buffers from the pool
(``full_softmax.reuse_buffers``, the default) against fresh allocations every batch:
epochs of ``--epoch-batches`` batches, the two settings in turn epoch by epoch (the pool
is emptied at each epoch's end, as in training, so the first batch of each epoch
allocates); the median seconds a batch and the process's system seconds a batch.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from mlstm4reco import full_softmax, protocols
from mlstm4reco.datasets import get_movielens_dataset
from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.sequence_model import ImplicitSequenceModel

MODELS = {  # the configs' best arguments (configs/ml1m_sasrec.yaml, ml1m_mlstm_softmax_dropout)
    "sasrec": dict(
        representation="sasrec",
        embedding_dim=50,
        batch_size=128,
        learning_rate=1e-3,
        representation_kwargs=dict(num_blocks=2, num_heads=1, max_length=200, dropout=0.2),
    ),
    "mlstm": dict(
        representation="mlstm",
        embedding_dim=120,
        batch_size=240,
        learning_rate=0.0125,
        l2=5.9e-6,
        representation_kwargs=dict(dropout=0.25),
    ),
}


def equal_models(paths, arguments: dict, item_chunk_size) -> dict:
    """One model a path, each trained with the full softmax from the same seed."""
    return {
        path: ImplicitSequenceModel(
            loss="softmax",
            exclude_preceding=True,
            n_iter=1,
            random_state=0,
            item_chunk_size=item_chunk_size,
            **arguments,
        )
        for path in paths
    }


def composite(net):
    """``net`` with the fused loss switched off: the softmax loss then scores items through
    ``score_items`` and takes ``cross_entropy`` over the masked scores (in chunks: the
    checkpointed log-sum-exp of each chunk)."""
    net.linear_scoring = lambda: None
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--item-chunk-size", type=int, default=None, help="both paths in chunks of this many items"
    )
    parser.add_argument("--reuse", action="store_true", help="pooled buffers against fresh")
    parser.add_argument("--epoch-batches", type=int, default=4, help="with --reuse")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = get_movielens_dataset("1M", data_dir=args.data_dir)
    split = protocols.split(
        data, "leave_one_out", max_sequence_length=200, min_sequence_length=1, step_size=200
    )
    train = split.train
    print(
        f"ML-1M leave-one-out: {len(train)} windows of 200, {train.num_items} item ids, "
        f"{args.threads} threads, torch {torch.__version__}, chunks of "
        f"{args.item_chunk_size or 'all'} items"
    )
    if args.reuse:
        for name in args.models:
            compare_reuse(name, train, args)
        return
    for name in args.models:
        arguments = MODELS[name]
        size = arguments["batch_size"]
        order = np.random.RandomState(0).permutation(len(train))
        batches = [
            SequenceInteractions(
                train.sequences[order[i * size : (i + 1) * size]], num_items=train.num_items
            )
            for i in range(args.batches + 1)
        ]
        models = equal_models(("composite", "fused"), arguments, args.item_chunk_size)
        times = {path: [] for path in models}
        losses = {path: [] for path in models}
        for index, batch in enumerate(batches):
            for path, model in models.items():
                start = time.perf_counter()
                losses[path] += model.fit(batch)  # one batch: an epoch of one
                elapsed = time.perf_counter() - start
                if index == 0:  # builds the net (the same one: the same seed), not timed
                    if path == "composite":
                        composite(model.net)
                else:
                    times[path].append(elapsed)
        # From equal nets and draws, the first batch after the switch gives equal losses.
        np.testing.assert_allclose(losses["fused"][1], losses["composite"][1], rtol=1e-5)
        medians = {path: statistics.median(values) for path, values in times.items()}
        batches_per_epoch = -(-len(train) // size)
        for path, seconds in medians.items():
            print(
                f"{name:<7}{path:<10} {seconds * 1e3:7.0f} ms a batch (median of "
                f"{args.batches}), {seconds / medians['composite']:.2f}x, "
                f"epoch ~{seconds * batches_per_epoch:.0f} s"
            )


def compare_reuse(name: str, train: SequenceInteractions, args) -> None:
    """The fused path with buffers from the pool against fresh ones (``--reuse``)."""
    arguments = MODELS[name]
    size, per_epoch = arguments["batch_size"], args.epoch_batches
    order = np.random.RandomState(0).permutation(len(train))
    rounds = max(1, args.batches // per_epoch)

    def epoch(index: int) -> SequenceInteractions:
        rows = order[index * size * per_epoch : (index + 1) * size * per_epoch]
        return SequenceInteractions(train.sequences[rows], num_items=train.num_items)

    models = equal_models(("fresh", "reused"), arguments, args.item_chunk_size)
    times = {path: [] for path in models}
    system = {path: [] for path in models}
    losses = {path: [] for path in models}
    for index in range(rounds + 1):
        data = epoch(index % (len(train) // (size * per_epoch)))
        for path, model in models.items():
            full_softmax.reuse_buffers(path == "reused")
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            losses[path] += model.fit(data)
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            if index:  # the first epoch builds the nets
                times[path].append(elapsed / per_epoch)
                system[path].append((after.ru_stime - before.ru_stime) / per_epoch)
    full_softmax.reuse_buffers(True)
    # equal nets and draws, the same batches: the buffers' memory changes no number
    assert losses["fresh"] == losses["reused"], (losses["fresh"], losses["reused"])
    batches_per_epoch = -(-len(train) // size)
    medians = {path: statistics.median(values) for path, values in times.items()}
    for path, seconds in medians.items():
        print(
            f"{name:<7}{path:<8} {seconds * 1e3:7.0f} ms a batch (median of {rounds} epochs of "
            f"{per_epoch}), {seconds / medians['fresh']:.2f}x, system "
            f"{statistics.median(system[path]) * 1e3:5.0f} ms a batch, "
            f"epoch ~{seconds * batches_per_epoch:.0f} s"
        )


if __name__ == "__main__":
    main()
