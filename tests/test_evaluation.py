import re

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from mlstm4reco.evaluation import (
    FLOAT_MAX,
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


def spotlight_mrr(model, test, exclude_preceding):
    """Spotlight's loop, written independently: one sequence at a time, scipy ranks."""
    scores = []
    for sequence in test.sequences:
        costs = -model.predict(sequence[:-1])
        if exclude_preceding:
            costs[sequence[:-1]] = FLOAT_MAX
        scores.append(1.0 / rankdata(costs)[sequence[-1]])
    return np.array(scores)


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
        np.testing.assert_array_equal(foreign, sequence_precision_recall_score(model, test, 3, exclude))
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
            with pytest.raises(ValueError, match=re.escape(f"k must be a positive integer, got {k!r}")):
                metric(model, test, k)
        metric(model, test, np.int64(2))  # numpy integers are integers
    for metric in (*metrics, sequence_mrr_score):
        with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
            metric(model, test, batch_size=0)
    with pytest.raises(ValueError, match="k = 31 is more than the model's 30 items"):
        sequence_precision_recall_score(model, test, 31)
