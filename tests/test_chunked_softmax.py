"""The full softmax over items in chunks: the same loss and gradients as all at once, and
both equal to a plain loop over positions."""

import numpy as np
import pytest
import torch

from mlstm4reco.losses import LOSSES, LossInput, preceding_items, preceding_pairs
from mlstm4reco.representations import REPRESENTATIONS
from mlstm4reco.sequence_model import ImplicitSequenceModel

NUM_ITEMS = 23


def _sequences(seed=0, batch=5, length=9):
    rng = np.random.default_rng(seed)
    sequences = rng.integers(1, 6, size=(batch, length))  # few items: many repeats
    sequences[rng.random((batch, length)) < 0.3] = rng.integers(6, NUM_ITEMS, size=1)
    for row, pad in enumerate(rng.integers(0, length - 1, size=batch)):
        sequences[row, :pad] = 0  # left padding, as the windows
    return torch.from_numpy(sequences)


def _loop_preceding(sequences, num_items):
    batch, length = sequences.shape
    seen = np.zeros((batch, length, num_items), dtype=bool)
    for b in range(batch):
        for t in range(length):
            for item in sequences[b, :t].tolist():
                if item != 0 and item != sequences[b, t]:
                    seen[b, t, item] = True
    return seen


@pytest.mark.parametrize("items", [None, slice(0, 4), slice(3, 11), slice(20, 23), slice(1, 2)])
def test_preceding_items_of_a_slice_match_a_loop(items):
    sequences = _sequences()
    expected = _loop_preceding(sequences, NUM_ITEMS)
    if items is not None:
        expected = expected[:, :, items]
    assert np.array_equal(preceding_items(sequences, NUM_ITEMS, items).numpy(), expected)


def test_preceding_pairs_are_the_preceding_items_of_the_masked_positions():
    sequences = _sequences(2)
    mask = sequences != 0
    rows, items = preceding_pairs(sequences, mask)
    seen = np.zeros((int(mask.sum()), NUM_ITEMS), dtype=bool)
    seen[rows.numpy(), items.numpy()] = True
    assert np.array_equal(seen, _loop_preceding(sequences, NUM_ITEMS)[mask.numpy()])


def _batch(net, sequences, exclude, chunk):
    user_representation, _ = net.user_representation(sequences)
    return LossInput(
        net=net,
        sequences=sequences,
        user_representation=user_representation,
        num_items=NUM_ITEMS,
        num_negative_samples=1,
        negatives=None,
        random_state=np.random.RandomState(0),
        exclude_preceding=exclude,
        item_chunk_size=chunk,
    )


def _loop_loss(net, sequences, exclude):
    """The mean over non-padded positions of -log softmax of the target among the
    candidates (every real item, less the preceding ones when ``exclude``)."""
    user_representation, _ = net.user_representation(sequences)
    states = net.position_states(user_representation)
    losses = []
    for b in range(sequences.shape[0]):
        for t in range(sequences.shape[1]):
            target = int(sequences[b, t])
            if target == 0:
                continue
            earlier = set(sequences[b, :t].tolist()) - {0, target}
            candidates = [i for i in range(1, NUM_ITEMS) if not (exclude and i in earlier)]
            scores = net.score_items(states[b, t], torch.tensor(candidates))
            losses.append(torch.logsumexp(scores, 0) - scores[candidates.index(target)])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("representation", ["lstm", "mlstm", "mixture", "sasrec"])
@pytest.mark.parametrize("exclude", [False, True])
def test_chunks_give_the_loss_and_gradients_of_all_items_at_once(representation, exclude):
    torch.manual_seed(0)
    net = REPRESENTATIONS[representation](NUM_ITEMS, embedding_dim=8)
    net.eval()  # no dropout draws between the passes compared
    sequences = _sequences(1)
    results = []
    for chunk in (None, 1, 5, NUM_ITEMS - 2):
        net.zero_grad()
        loss = LOSSES["softmax"].compute(_batch(net, sequences, exclude, chunk))
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in net.parameters()]))
    expected = _loop_loss(net, sequences, exclude).item()
    for loss, grads in results:
        assert loss == pytest.approx(expected, rel=1e-5)
        for grad, reference in zip(grads, results[0][1]):
            torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-6)


def test_a_model_trains_the_same_in_chunks(tmp_path):
    from mlstm4reco.datasets import get_synthetic_dataset

    sequences = get_synthetic_dataset(
        num_users=40, num_items=30, num_interactions=2_000, random_state=0
    ).to_sequence(max_sequence_length=10, min_sequence_length=3, step_size=10)
    losses = []
    for chunk in (None, 7):
        model = ImplicitSequenceModel(
            loss="softmax",
            representation="mlstm",
            embedding_dim=8,
            n_iter=2,
            batch_size=16,
            random_state=3,
            exclude_preceding=True,
            item_chunk_size=chunk,
        )
        losses.append(model.fit(sequences))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_a_bad_chunk_size_is_refused(bad):
    with pytest.raises(ValueError, match="item_chunk_size must be a positive integer or None"):
        ImplicitSequenceModel(loss="softmax", item_chunk_size=bad)


def test_chunks_need_the_full_softmax():
    with pytest.raises(ValueError, match="item_chunk_size needs loss 'softmax', not 'bpr'"):
        ImplicitSequenceModel(loss="bpr", item_chunk_size=8)
