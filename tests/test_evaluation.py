import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from mlstm4reco.evaluation import (
    FLOAT_MAX,
    METRICS,
    evaluate,
    parse_metric,
    sequence_hit_rate_score,
    sequence_mrr_score,
    sequence_ndcg_score,
    sequence_precision_recall_score,
)
from mlstm4reco.interactions import SequenceInteractions
from mlstm4reco.sequence_model import ImplicitSequenceModel


def random_model(representation, num_items=30, seed=0, ties=False):
    model = ImplicitSequenceModel(representation=representation, embedding_dim=8, random_state=seed)
    model._initialize(num_items)
    with torch.no_grad():
        model.net.item_biases.weight.normal_()
        if ties:  # identical embeddings and biases: exact ties among several items
            model.net.item_embeddings.weight[10:20] = model.net.item_embeddings.weight[10]
            model.net.item_biases.weight[10:20] = model.net.item_biases.weight[10]
    return model


def make_test_sequences(num_items=30, n=70, length=8, seed=0):
    rng = np.random.RandomState(seed)
    sequences = rng.randint(1, num_items, (n, length))
    for row in range(0, n, 3):  # left padding on some rows
        sequences[row, : rng.randint(1, length - 1)] = 0
    sequences[1, -1] = 12  # targets inside the tie block
    sequences[2, -2:] = [15, 15]  # a target that also precedes (excluded, tied at the bottom)
    return SequenceInteractions(sequences, num_items=num_items)


def reference_ranks(model, test, exclude_preceding):
    """Each target's rank among all item ids, by pandas: one sequence at a time, scores
    ranked highest first with ties given their average rank, the input's items (padding id
    0 among them) moved below every real score when excluded, as Spotlight does."""
    ranks = []
    for sequence in test.sequences:
        scores = pd.Series(model.predict(sequence[:-1]).astype(np.float64))
        if exclude_preceding:
            scores[np.unique(sequence[:-1])] = -np.inf
        ranks.append(scores.rank(method="average", ascending=False)[sequence[-1]])
    return np.array(ranks)


def spotlight_mrr(model, test, exclude_preceding):
    return 1.0 / reference_ranks(model, test, exclude_preceding)


@pytest.mark.parametrize("representation", ["lstm", "mlstm"])
@pytest.mark.parametrize("exclude_preceding", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_mrr_equals_one_at_a_time_scipy(representation, exclude_preceding, ties):
    model = random_model(representation, ties=ties)
    test = make_test_sequences()
    batched = sequence_mrr_score(model, test, exclude_preceding=exclude_preceding, batch_size=16)
    expected = spotlight_mrr(model, test, exclude_preceding)
    np.testing.assert_allclose(batched, expected, rtol=1e-12)
    assert len(batched) == len(test)


def test_foreign_model_is_scored_one_at_a_time():
    model = random_model("lstm")

    class PredictOnly:  # the interface of a real Spotlight model
        predict = staticmethod(model.predict)

    test = make_test_sequences()
    np.testing.assert_allclose(
        sequence_mrr_score(PredictOnly(), test, True), sequence_mrr_score(model, test, True)
    )
    for exclude in (False, True):
        foreign = sequence_precision_recall_score(PredictOnly(), test, 3, exclude)
        np.testing.assert_array_equal(
            foreign, sequence_precision_recall_score(model, test, 3, exclude)
        )
        assert foreign[0].sum() > 0


def test_hit_rate_and_ndcg_follow_the_ranks():
    model = random_model("mlstm", ties=True)
    test = make_test_sequences()
    ranks = 1.0 / spotlight_mrr(model, test, True)
    np.testing.assert_allclose(sequence_hit_rate_score(model, test, 5, True), ranks <= 5)
    expected = np.where(ranks <= 5, 1 / np.log2(1 + ranks), 0)
    np.testing.assert_allclose(sequence_ndcg_score(model, test, 5, True), expected)


@pytest.mark.parametrize("exclude_preceding", [False, True])
def test_precision_recall_equals_spotlights_loop(exclude_preceding):
    model = random_model("lstm", seed=3)
    test = make_test_sequences()
    k = 3
    precision, recall = sequence_precision_recall_score(model, test, k, exclude_preceding)
    for row, sequence in enumerate(test.sequences):
        costs = -model.predict(sequence[:-k])
        if exclude_preceding:
            costs[sequence[:-k]] = FLOAT_MAX
        top = costs.argsort(kind="stable")[:k]
        hits = len(set(top.tolist()) & set(sequence[-k:].tolist()))
        assert precision[row] == hits / k and recall[row] == hits / k


def test_bad_test_sets():
    model = random_model("lstm")
    with pytest.raises(ValueError, match="SequenceInteractions"):
        sequence_mrr_score(model, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="leave no input after holding out 5"):
        sequence_precision_recall_score(model, SequenceInteractions(np.ones((2, 5), int)), k=5)
    with pytest.raises(ValueError, match=r"item ids in \[0, 30\), got ids from 31"):
        sequence_mrr_score(model, SequenceInteractions(np.full((2, 5), 31)))


def test_bad_k_and_batch_size_are_refused():
    """k = 0 used to slice the whole sequence away (a message about its shape), a negative
    k gave hit rates of 0 everywhere; each metric now names the bad argument."""
    model = random_model("lstm")
    test = make_test_sequences(length=40)
    metrics = (sequence_hit_rate_score, sequence_ndcg_score, sequence_precision_recall_score)
    for metric in metrics:
        for k in (0, -1, 1.5, True, [1, 5], "3"):
            with pytest.raises(
                ValueError, match=re.escape(f"k must be a positive integer, got {k!r}")
            ):
                metric(model, test, k)
        metric(model, test, np.int64(2))  # numpy integers are integers
    for metric in (*metrics, sequence_mrr_score):
        with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
            metric(model, test, batch_size=0)
    with pytest.raises(ValueError, match="k = 31 is more than the model's 30 items"):
        sequence_precision_recall_score(model, test, 31)


@pytest.mark.parametrize("exclude_preceding", [False, True])
def test_evaluate_gives_every_metric_of_one_ranking(exclude_preceding):
    """evaluate's means, ties included (average ranks), against a plain loop over the
    reference ranks: MRR, MRR@k (0 beyond k), HR@k (rank <= k), NDCG@k (1 / log2(1 + rank)
    within k)."""
    model = random_model("mlstm", ties=True)
    test = make_test_sequences()
    ranks = reference_ranks(model, test, exclude_preceding)
    assert any(rank != int(rank) for rank in ranks)  # some targets are tied with others
    expected = {
        "mrr": [1 / r for r in ranks],
        "mrr@5": [1 / r if r <= 5 else 0 for r in ranks],
        "hit_rate@5": [float(r <= 5) for r in ranks],
        "hit_rate@1": [float(r <= 1) for r in ranks],
        "recall@3": [float(r <= 3) for r in ranks],
        "ndcg@5": [1 / math.log2(1 + r) if r <= 5 else 0 for r in ranks],
    }
    got = evaluate(model, test, list(expected), exclude_preceding=exclude_preceding, batch_size=16)
    assert list(got) == list(expected)
    for name, values in expected.items():
        assert got[name] == pytest.approx(sum(values) / len(values), rel=1e-12), name


@pytest.mark.parametrize(
    "name, message",
    [
        ("precision@10", "unknown metric 'precision@10'"),
        ("ndcg", "metric 'ndcg' needs a cutoff, e.g. ndcg@10"),
        ("hit_rate@0", "the cutoff after '@' must be a positive integer"),
        ("ndcg@ten", "must be a positive integer"),
        ("mrr@05", "must be a positive integer"),
        ("ndcg@-1", "must be a positive integer"),
        (3, "unknown metric 3"),
    ],
)
def test_bad_metric_names_are_refused(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_metric(name)
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(random_model("lstm"), make_test_sequences(), ["mrr", name])


def test_metric_names_parse():
    assert parse_metric("mrr") == (METRICS["mrr"], None)
    assert parse_metric("mrr@20") == (METRICS["mrr"], 20)
    assert parse_metric("ndcg@10") == (METRICS["ndcg"], 10)


@pytest.mark.parametrize("exclude_preceding", [False, True])
def test_popularity_baseline_ranks_by_training_counts(exclude_preceding):
    """PopularityModel through evaluate() against pandas: counts of the training windows'
    items (ties among equally popular items at their average rank)."""
    from mlstm4reco.baselines import PopularityModel

    train = make_test_sequences(seed=1, n=200)
    test = make_test_sequences(seed=2)
    counts = pd.Series(train.sequences.ravel()).value_counts()
    scores = pd.Series(0.0, index=range(train.num_items))
    scores.update(counts.astype(float))
    scores[0] = 0.0  # padding: never an item seen
    expected = []
    for sequence in test.sequences:
        row = scores.copy()
        if exclude_preceding:
            row[np.unique(sequence[:-1])] = -np.inf
        expected.append(1 / row.rank(method="average", ascending=False)[sequence[-1]])
    model = PopularityModel().fit(train)
    got = evaluate(model, test, ["mrr"], exclude_preceding=exclude_preceding)["mrr"]
    assert got == pytest.approx(np.mean(expected), rel=1e-12)
    batched = sequence_mrr_score(model, test, exclude_preceding).mean()
    assert got == pytest.approx(batched, rel=1e-12)
