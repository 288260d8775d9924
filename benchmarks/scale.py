"""How the library's cost grows with the data: ML-1M- and ML-10M-shaped interactions
(parse, split, windows, a training epoch, an evaluation) and 100k- and 550k-item
catalogues (training with the sampled and the chunked full softmax, evaluation), with
the peak resident memory of each stage, in one run.

    python benchmarks/scale.py [--sizes ml1m ml10m] [--catalogues 100000 550000]
        [--batches 20] [--threads 2] [--out DIR]

The data are synthetic with the real datasets' shapes (mlstm4reco.datasets.shaped),
written in MovieLens 10M's format and read back by the real parser. A training epoch is
extrapolated from ``--batches`` batches (after one batch of warm-up) to the epoch's
number of windows, and says so. Peak memory is the largest resident set sampled every
5 ms during the stage (what the process holds then, earlier stages' data included).

Issue targets (2-core CPU): ML-10M-shaped parse + split + windows under 20 s and 4 GB;
its epoch cost / ML-1M's within 1.2x of the ratio of their training positions; a
550k-item catalogue trained and evaluated under 8 GB at batch 256, sequence 50, dim 128.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import statistics
import tempfile
import threading
import time

import numpy as np
import torch

from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets.movielens import read_movielens_archive
from mlstm4reco.datasets.shaped import shaped_interactions, shaped_like, write_movielens_ratings
from mlstm4reco.evaluation import evaluate
from mlstm4reco.files import atomic_path
from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.sequence_model import ImplicitSequenceModel

GB = 1 << 30


class PeakMemory:
    """The largest resident set size (bytes) seen while the block runs."""

    def __enter__(self):
        self.peak, self._done = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self.start = time.perf_counter()
        return self

    def _watch(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the process's peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _stage(rows: list, group: str, name: str, fn, note: str = "", repeats: int = 1):
    """Run ``fn`` ``repeats`` times: the median seconds and the highest peak."""
    seconds, peak = [], 0
    for _ in range(repeats):
        with PeakMemory() as probe:
            result = fn()
        seconds.append(probe.seconds)
        peak = max(peak, probe.peak)
    median = statistics.median(seconds)
    if repeats > 1:
        note = f"median of {repeats}" + (f"; {note}" if note else "")
    rows.append(dict(group=group, stage=name, seconds=median, peak_gb=peak / GB, note=note))
    print(f"{group:<10} {name:<28} {median:9.2f} s {peak / GB:7.2f} GB  {note}", flush=True)
    return result


def _epochs(rows, name, jobs: dict, batches: int, repeats: int = 1) -> dict[str, float]:
    """Each group's epoch seconds (group -> (model, training windows) in ``jobs``) from
    ``batches`` batches after one of warm-up, scaled to all its windows: the median of
    ``repeats`` timings, the groups timed in turn within each repeat, so that the
    process's drift (its allocator's state after the stages before, the machine's
    frequency) falls on all of them alike rather than on whichever ran later."""
    fits, notes = {}, {}
    for group, (model, train) in jobs.items():
        size = model._batch_size
        model.fit(_rows(train, range(size)))  # builds the net, warms the kernels
        measured = min(len(train), batches * size)
        part = _rows(train, range(size, size + measured))
        fits[group] = lambda model=model, part=part: model.fit(part)
        notes[group] = (measured, len(train))
    seconds = {group: [] for group in jobs}
    peaks = dict.fromkeys(jobs, 0)
    for _ in range(repeats):
        for group, fit in fits.items():
            with PeakMemory() as probe:
                fit()
            seconds[group].append(probe.seconds)
            peaks[group] = max(peaks[group], probe.peak)
    epochs = {}
    for group, (measured, windows) in notes.items():
        median = statistics.median(seconds[group])
        epochs[group] = median * windows / measured
        note = f"{measured} of {windows:,} windows; epoch extrapolated: {epochs[group]:.0f} s"
        if repeats > 1:
            note = f"median of {repeats}, sizes in turn; {note}"
        rows.append(
            dict(
                group=group,
                stage=name,
                seconds=median,
                peak_gb=peaks[group] / GB,
                note=note,
                epoch_seconds=epochs[group],
            )
        )
        print(
            f"{group:<10} {name:<28} {median:9.2f} s {peaks[group] / GB:7.2f} GB  {note}",
            flush=True,
        )
    return epochs


def _rows(sequences: SequenceInteractions, index) -> SequenceInteractions:
    index = np.asarray(index) % len(sequences)
    return SequenceInteractions(sequences.sequences[index], num_items=sequences.num_items)


def grow(rows: list, name: str, folder: pathlib.Path, repeats: int) -> tuple[dict, list]:
    """The interactions stages of an ML-shaped dataset ``name``: its training positions
    and windows, and its (train, valid, test) windows."""
    data = shaped_like(name, random_state=0)
    path = write_movielens_ratings(data, folder / f"{name}.zip")
    del data
    parsed = _stage(
        rows, name, "parse", lambda: read_movielens_archive(path, "10M"), repeats=repeats
    )

    def split():
        state = np.random.RandomState(72)
        train, rest = user_based_train_test_split(parsed, 0.2, state)
        return (train, *user_based_train_test_split(rest, 0.5, state)[::-1])

    train, valid, test = _stage(rows, name, "split (user, 2018)", split, repeats=repeats)
    windows = _stage(
        rows,
        name,
        "windows (100, 20, 100)",
        lambda: [p.to_sequence(100, 20, 100) for p in (train, valid, test)],
        repeats=repeats,
    )
    positions = int((windows[0].sequences > 0).sum())
    return dict(positions=positions, windows=len(windows[0])), windows


def train_and_evaluate(rows: list, grown: dict, windows: dict, batches: int, repeats: int) -> None:
    """The training epochs of the ML-shaped sizes in ``windows`` (name -> :func:`grow`'s
    windows), timed in turn (:func:`_epochs`), then each one's evaluation; adds each
    loss's epoch seconds to ``grown`` (name -> :func:`grow`'s summary)."""
    models = {}
    for loss in ("adaptive_hinge", "softmax"):
        models = {
            name: ImplicitSequenceModel(
                loss=loss,
                representation="mlstm",
                n_iter=1,
                embedding_dim=32,
                batch_size=160,
                random_state=0,
            )
            for name in windows
        }
        jobs = {name: (models[name], sets[0]) for name, sets in windows.items()}
        for name, seconds in _epochs(rows, f"epoch mlstm {loss}", jobs, batches, repeats).items():
            grown[name][loss] = seconds
    for name, (_, _, test) in windows.items():
        evaluated = _rows(test, range(min(1000, len(test))))
        _stage(
            rows,
            name,
            "evaluate 1,000 sequences",
            lambda model=models[name], evaluated=evaluated: evaluate(model, evaluated, ["mrr"]),
            repeats=repeats,
        )


def catalogue(rows: list, items: int, batches: int, chunk: int) -> None:
    """Training and evaluation at a catalogue of ``items`` items: batch 256, sequences
    of 50, dim 128."""
    group = f"{items // 1000}k items"
    data = shaped_interactions(20_000, items, 2_000_000, min_per_user=5, random_state=0)
    windows = data.to_sequence(50, 5, 50)
    for loss, options in (
        ("sampled_softmax", dict(num_negative_samples=1024)),
        ("softmax", dict(item_chunk_size=chunk)),
    ):
        model = ImplicitSequenceModel(
            loss=loss,
            representation="mlstm",
            n_iter=1,
            embedding_dim=128,
            batch_size=256,
            random_state=0,
            **options,
        )
        label = f"epoch mlstm {loss}" + (f" (chunks of {chunk:,})" if loss == "softmax" else "")
        _epochs(rows, label, {group: (model, windows)}, batches)
    evaluated = _rows(windows, range(1000))
    _stage(rows, group, "evaluate 1,000 sequences", lambda: evaluate(model, evaluated, ["mrr"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["ml1m", "ml10m"])
    parser.add_argument("--catalogues", nargs="*", type=int, default=[100_000, 550_000])
    parser.add_argument("--batches", type=int, default=20, help="batches timed per epoch")
    parser.add_argument("--catalogue-batches", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=16_384, help="items per softmax chunk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the quick stages")
    parser.add_argument("--out", default=None, help="folder for scale.json and scale.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, grown, windows = [], {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.sizes:
            grown[name], windows[name] = grow(rows, name, pathlib.Path(folder), args.repeats)
    train_and_evaluate(rows, grown, windows, args.batches, args.repeats)
    del windows
    for items in args.catalogues:
        catalogue(rows, items, args.catalogue_batches, args.chunk)
    lines = ["| group | stage | seconds | peak GB | note |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {r['group']} | {r['stage']} | {r.get('epoch_seconds', r['seconds']):.2f} | "
        f"{r['peak_gb']:.2f} | {r['note']} |"
        for r in rows
    ]
    if len(grown) == 2:
        (small, a), (large, b) = grown.items()
        ratio = b["positions"] / a["positions"]
        lines.append(f"\n{large} / {small}: training positions {ratio:.2f}x")
        for stage in ("parse", "split (user, 2018)", "windows (100, 20, 100)"):
            x, y = (
                next(r["seconds"] for r in rows if r["group"] == g and r["stage"] == stage)
                for g in (small, large)
            )
            lines.append(f"- {stage}: {y / x:.2f}x")
        for loss in ("adaptive_hinge", "softmax"):
            growth = b[loss] / a[loss]
            lines.append(
                f"- epoch {loss}: {growth:.2f}x ({growth / ratio:.2f}x the positions' ratio)"
            )
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        machine = dict(threads=args.threads, torch=torch.__version__, cpus=torch.get_num_threads())
        for target, text in (
            (
                out / "scale.json",
                json.dumps(dict(machine=machine, rows=rows, grown=grown), indent=1),
            ),
            (out / "scale.md", table),
        ):
            with atomic_path(target) as tmp:
                pathlib.Path(tmp).write_text(text)


if __name__ == "__main__":
    main()
