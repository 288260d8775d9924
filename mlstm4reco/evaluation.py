"""Ranking metrics for sequence models, batched on the model's device and equal to
Spotlight's ``spotlight.evaluation`` numbers.

Spotlight scores one sequence at a time: ``-model.predict(sequence)`` ranked by
``scipy.stats.rankdata`` (ties get their average rank), with the sequence's own items,
padding id 0 included, pushed to the bottom (set to the largest float32) when
``exclude_preceding``. Here whole batches are scored at once and the same average rank is
counted directly: rank = #(better) + (#(tied) + 1) / 2.

Metrics of one held-out item per sequence are functions of that rank, by name in
:data:`METRICS`: ``mrr`` (1 / rank), ``hit_rate@k`` (1 when rank <= k), ``ndcg@k``
(1 / log2(1 + rank) when rank <= k), ``recall@k`` (the held-out item found in the top k:
with one relevant item, hit_rate@k); ``mrr@k`` is the reciprocal rank cut at k. All of
them take the tied items' average rank, so a target tied with others is neither first nor
last among them. :func:`evaluate` ranks once and reports each metric asked for.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from mlstm4reco.interactions import SequenceInteractions

__all__ = [
    "METRICS",
    "Metric",
    "parse_metric",
    "metric_values",
    "evaluate",
    "sequence_ranks",
    "sequence_mrr_score",
    "sequence_precision_recall_score",
    "sequence_hit_rate_score",
    "sequence_ndcg_score",
]

FLOAT_MAX = float(np.finfo(np.float32).max)


def _positive_integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check(test: SequenceInteractions, holdout: int, batch_size: int) -> np.ndarray:
    _positive_integer("batch_size", batch_size)
    if not isinstance(test, SequenceInteractions):
        raise ValueError(f"test must be SequenceInteractions, got {type(test).__name__}")
    if len(test) == 0:
        raise ValueError("test has no sequences")
    if test.sequences.shape[1] <= holdout:
        raise ValueError(
            f"sequences of length {test.sequences.shape[1]} leave no input after holding out "
            f"{holdout} items"
        )
    return test.sequences.astype(np.int64)


def _batched_costs(model, inputs: torch.Tensor, exclude_preceding: bool) -> torch.Tensor:
    """Spotlight's ranking costs: negated scores, the inputs' items set to FLOAT_MAX."""
    costs = -model.score_sequences(inputs).float()  # (B, N)
    if exclude_preceding:
        costs.scatter_(1, inputs, FLOAT_MAX)
    return costs


def _batches(model, sequences: np.ndarray, batch_size: int):
    device = getattr(model, "device", torch.device("cpu"))
    for start in range(0, len(sequences), batch_size):
        yield torch.from_numpy(sequences[start : start + batch_size]).to(device)


def sequence_ranks(
    model, test: SequenceInteractions, exclude_preceding: bool = False, batch_size: int = 256
) -> np.ndarray:
    """The rank (1 = best, ties averaged) of each test sequence's last item among all
    item ids, given the sequence without that item."""
    sequences = _check(test, 1, batch_size)
    if not hasattr(model, "score_sequences"):  # e.g. a real Spotlight model
        return _ranks_one_at_a_time(model, sequences, exclude_preceding)
    ranks = []
    for batch in _batches(model, sequences, batch_size):
        inputs, targets = batch[:, :-1], batch[:, -1:]
        costs = _batched_costs(model, inputs, exclude_preceding)
        target_cost = costs.gather(1, targets)  # (B, 1)
        better = (costs < target_cost).sum(1)
        tied = (costs == target_cost).sum(1)
        ranks.append((better.double() + (tied.double() + 1) / 2).cpu())
    return torch.cat(ranks).numpy()


def _ranks_one_at_a_time(model, sequences: np.ndarray, exclude_preceding: bool) -> np.ndarray:
    from scipy.stats import rankdata

    ranks = np.empty(len(sequences))
    for row, sequence in enumerate(sequences):
        costs = -model.predict(sequence[:-1])
        if exclude_preceding:
            costs[sequence[:-1]] = FLOAT_MAX
        ranks[row] = rankdata(costs)[sequence[-1]]
    return ranks


def sequence_mrr_score(
    model, test: SequenceInteractions, exclude_preceding: bool = False, batch_size: int = 256
) -> np.ndarray:
    """Reciprocal rank of each test sequence's last item (Spotlight's
    ``sequence_mrr_score``). Take ``.mean()`` for the MRR."""
    return 1.0 / sequence_ranks(model, test, exclude_preceding, batch_size)


def sequence_hit_rate_score(
    model,
    test: SequenceInteractions,
    k: int = 10,
    exclude_preceding: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """1 where the last item ranks within the top ``k`` (average rank of ties), else 0."""
    k = _positive_integer("k", k)
    return _hit_rate(sequence_ranks(model, test, exclude_preceding, batch_size), k)


def sequence_ndcg_score(
    model,
    test: SequenceInteractions,
    k: int = 10,
    exclude_preceding: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """NDCG@k of the single relevant last item: 1 / log2(1 + rank) within the top k."""
    k = _positive_integer("k", k)
    return _ndcg(sequence_ranks(model, test, exclude_preceding, batch_size), k)


# ---------------------------------------------------------------- metrics by name


def _reciprocal_rank(ranks: np.ndarray, k: int | None) -> np.ndarray:
    values = 1.0 / ranks
    return values if k is None else np.where(ranks <= k, values, 0.0)


def _hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    return (ranks <= k).astype(np.float64)


def _ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    return np.where(ranks <= k, 1.0 / np.log2(1.0 + ranks), 0.0)


class Metric(NamedTuple):
    """A metric of each held-out item's rank: ``of_ranks(ranks, k)`` -> one value per
    sequence; ``cutoff`` is ``'required'`` (``name@k`` only), ``'optional'`` or ``'none'``."""

    of_ranks: Callable[[np.ndarray, int | None], np.ndarray]
    cutoff: str = "required"


METRICS = {
    "mrr": Metric(_reciprocal_rank, cutoff="optional"),
    "hit_rate": Metric(_hit_rate),
    "ndcg": Metric(_ndcg),
    "recall": Metric(_hit_rate),  # one relevant item: the share of it found in the top k
}
"""Rank metrics by name: ``mrr`` or ``mrr@k``, ``hit_rate@k``, ``ndcg@k``, ``recall@k``
(with one held-out item a sequence, recall@k is hit_rate@k). A new one: a function of
(ranks, k) and a line here. Sampled metrics (the rank among a few sampled negatives)
are left out on purpose: they disagree with full ranking, even in the order of models
(Krichene and Rendle, KDD 2020)."""


def parse_metric(name) -> tuple[Metric, int | None]:
    """The metric and cutoff a name such as ``'ndcg@10'`` or ``'mrr'`` stands for; a
    ValueError naming the name and the known metrics otherwise."""
    base, at, cutoff = name.partition("@") if isinstance(name, str) else ("", "", "")
    metric = METRICS.get(base)
    known = ", ".join(f"{n}@k" if m.cutoff == "required" else n for n, m in METRICS.items())
    if metric is None:
        raise ValueError(f"unknown metric {name!r}; the metrics are {known} (k a positive integer)")
    if not at:
        if metric.cutoff == "required":
            raise ValueError(f"metric {name!r} needs a cutoff, e.g. {base}@10")
        return metric, None
    if (
        metric.cutoff == "none"
        or not cutoff.isdigit()
        or int(cutoff) < 1
        or cutoff != str(int(cutoff))
    ):
        raise ValueError(
            f"metric {name!r}: the cutoff after '@' must be a positive integer (known: {known})"
        )
    return metric, int(cutoff)


def metric_values(ranks: np.ndarray, name: str) -> np.ndarray:
    """Metric ``name`` (see :data:`METRICS`) of each rank."""
    metric, k = parse_metric(name)
    return metric.of_ranks(np.asarray(ranks, dtype=np.float64), k)


def evaluate(
    model,
    test: SequenceInteractions,
    metrics=("mrr",),
    exclude_preceding: bool = False,
    batch_size: int = 256,
) -> dict[str, float]:
    """The mean of each metric named in ``metrics`` (see :data:`METRICS`) over the test
    sequences' last items, from one ranking of all items (:func:`sequence_ranks`)."""
    metrics = list(metrics)
    for name in metrics:
        parse_metric(name)
    ranks = sequence_ranks(model, test, exclude_preceding, batch_size)
    return {name: float(metric_values(ranks, name).mean()) for name in metrics}


def sequence_precision_recall_score(
    model,
    test: SequenceInteractions,
    k: int = 10,
    exclude_preceding: bool = False,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at ``k`` of the last ``k`` items of each sequence given the
    items before them (Spotlight's ``sequence_precision_recall_score``: hits are the
    distinct top-k items found among the targets; both are divided by k). Ties at the
    k-th place may be broken differently from numpy's argsort. A model without
    ``score_sequences`` (a real Spotlight model) is scored one sequence at a time."""
    k = _positive_integer("k", k)
    sequences = _check(test, k, batch_size)
    if not hasattr(model, "score_sequences"):
        hits = _hits_one_at_a_time(model, sequences, k, exclude_preceding)
        return hits / k, hits / k
    hits = []
    for batch in _batches(model, sequences, batch_size):
        inputs, targets = batch[:, :-k], batch[:, -k:]
        costs = _batched_costs(model, inputs, exclude_preceding)
        _check_k_items(k, costs.shape[1])
        top = costs.topk(k, dim=1, largest=False).indices  # (B, k), distinct items
        found = (top.unsqueeze(2) == targets.unsqueeze(1)).any(2)  # (B, k)
        hits.append(found.sum(1).double().cpu())
    hits = torch.cat(hits).numpy()
    return hits / k, hits / k


def _check_k_items(k: int, num_items: int) -> None:
    if k > num_items:
        raise ValueError(f"k = {k} is more than the model's {num_items} items")


def _hits_one_at_a_time(
    model, sequences: np.ndarray, k: int, exclude_preceding: bool
) -> np.ndarray:
    hits = np.empty(len(sequences))
    for row, sequence in enumerate(sequences):
        costs = -np.asarray(model.predict(sequence[:-k]), dtype=np.float64)
        _check_k_items(k, len(costs))
        if exclude_preceding:
            costs[sequence[:-k]] = FLOAT_MAX
        top = np.argsort(costs, kind="stable")[:k]
        hits[row] = np.isin(top, sequence[-k:]).sum()
    return hits
