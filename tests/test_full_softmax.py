"""The fused full softmax cross-entropy: the loss and gradients of the composite of
scores, -inf for the left-out items and ``torch.nn.functional.cross_entropy``."""

import pytest
import torch

from mlstm4reco import full_softmax
from mlstm4reco.full_softmax import full_softmax_cross_entropy
from mlstm4reco.representations import REPRESENTATIONS


def _inputs(dtype, seed=0, rows=11, candidates=17, dim=5):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(rows, dim, generator=generator, dtype=dtype, requires_grad=True)
    embeddings = torch.randn(candidates, dim, generator=generator, dtype=dtype, requires_grad=True)
    biases = torch.randn(candidates, generator=generator, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, candidates, (rows,), generator=generator)
    mask = torch.rand(rows, candidates, generator=generator) < 0.4
    mask[torch.arange(rows), targets] = False  # a target is never left out
    mask[3] = True  # a row with its target alone
    mask[3, targets[3]] = False
    rows_, columns = mask.nonzero(as_tuple=True)
    # every pair twice, in another order: repeats must not matter
    pairs = (torch.cat([rows_, rows_.flip(0)]), torch.cat([columns, columns.flip(0)]))
    return states, embeddings, biases, targets, mask, pairs


def _composite(states, embeddings, biases, targets, mask):
    scores = states @ embeddings.t() + biases
    if mask is not None:
        scores = scores.masked_fill(mask, -torch.inf)
    return torch.nn.functional.cross_entropy(scores, targets)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("left_out", [False, True])
def test_loss_and_gradients_match_cross_entropy_of_masked_scores(dtype, tolerance, left_out):
    states, embeddings, biases, targets, mask, pairs = _inputs(dtype)
    results = []
    for fused in (True, False):
        for tensor in (states, embeddings, biases):
            tensor.grad = None
        if fused:
            loss = full_softmax_cross_entropy(
                states, embeddings, biases, targets, pairs if left_out else None
            )
        else:
            loss = _composite(states, embeddings, biases, targets, mask if left_out else None)
        (3.0 * loss).backward()  # an outside factor reaches every gradient
        results.append([loss.detach()] + [t.grad.clone() for t in (states, embeddings, biases)])
    for fused, composite in zip(*results):
        assert fused.dtype == composite.dtype
        torch.testing.assert_close(fused, composite, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("chunk_size", [1, 4, 16, 17, 40])
@pytest.mark.parametrize("left_out", [False, True])
def test_chunks_give_the_loss_and_gradients_of_all_candidates_at_once(chunk_size, left_out):
    states, embeddings, biases, targets, mask, pairs = _inputs(torch.float64)
    results = []
    for chunk in (chunk_size, None):
        for tensor in (states, embeddings, biases):
            tensor.grad = None
        loss = full_softmax_cross_entropy(
            states, embeddings, biases, targets, pairs if left_out else None, chunk
        )
        loss.backward()
        results.append([loss.detach()] + [t.grad.clone() for t in (states, embeddings, biases)])
    expected = _composite(states, embeddings, biases, targets, mask if left_out else None)
    torch.testing.assert_close(results[0][0], expected.detach(), rtol=1e-12, atol=1e-12)
    for chunked, at_once in zip(*results):
        torch.testing.assert_close(chunked, at_once, rtol=1e-12, atol=1e-12)


def test_a_chunk_of_left_out_candidates_only_counts_for_nothing():
    states, embeddings, biases, _, _, _ = _inputs(torch.float64, candidates=6)
    states = states[:2].detach().requires_grad_()
    targets = torch.tensor([0, 1])
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 2:] = True  # chunks of 2: the second and third all left out
    pairs = mask.nonzero(as_tuple=True)
    loss = full_softmax_cross_entropy(states, embeddings, biases, targets, pairs, chunk_size=2)
    loss.backward()
    expected = _composite(states, embeddings, biases, targets, mask)
    torch.testing.assert_close(loss, expected)
    assert torch.isfinite(states.grad).all()
    assert (embeddings.grad[2:] == 0).all() and (biases.grad[2:] == 0).all()


def test_only_the_inputs_that_need_it_get_a_gradient():
    states, embeddings, biases, targets, _, pairs = _inputs(torch.float64)
    frozen = embeddings.detach()
    full_softmax_cross_entropy(states, frozen, biases, targets, pairs).backward()
    assert states.grad is not None and biases.grad is not None and frozen.grad is None


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_a_second_backward_is_refused(chunk_size):
    states, embeddings, biases, targets, _, pairs = _inputs(torch.float64)
    loss = full_softmax_cross_entropy(states, embeddings, biases, targets, pairs, chunk_size)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_linear_scoring_gives_score_items_scores(name):
    """A net that declares linear scoring is scored by the fused loss with those weights:
    they must give its own score_items's scores (None where they could not)."""
    torch.manual_seed(0)
    net = REPRESENTATIONS[name](13, embedding_dim=6)
    with torch.no_grad():  # biases start at zero: make them count
        net.item_biases.weight.normal_()
    scoring = net.linear_scoring()
    if scoring is None:
        assert "mixture" in name
        return
    embeddings, biases = scoring
    states = torch.randn(4, 6)
    items = torch.tensor([1, 5, 12])
    expected = net.score_items(states, items)
    torch.testing.assert_close(states @ embeddings[items].t() + biases[items], expected)


def _losses_and_gradients(inputs, left_out, chunk, overlap=False):
    """Loss and gradients of each of ``inputs`` ((states, embeddings, biases, targets,
    pairs) tuples); with ``overlap`` every forward runs before any backward."""
    losses = []
    for states, embeddings, biases, targets, pairs in inputs:
        for tensor in (states, embeddings, biases):
            tensor.grad = None
        losses.append(
            full_softmax_cross_entropy(
                states, embeddings, biases, targets, pairs if left_out else None, chunk
            )
        )
        if not overlap:
            losses[-1].backward()
    if overlap:
        for loss in reversed(losses):  # the later forward's backward first
            loss.backward()
    return [loss.detach() for loss in losses], [
        [t.grad.clone() for t in case[:3]] for case in inputs
    ]


@pytest.mark.parametrize("chunk", [None, 5])
@pytest.mark.parametrize("left_out", [False, True])
def test_overlapping_forwards_each_get_a_buffer_of_their_own(chunk, left_out):
    """Two losses' forwards, then their backwards in the other order: the second forward
    must not write into the first's buffer (taken from the pool, not yet given back)."""
    full_softmax.release_buffers()
    cases = [_inputs(torch.float64, seed=seed) for seed in (1, 2)]
    inputs = [(s, e, b, t, p) for s, e, b, t, _, p in cases]
    alone = _losses_and_gradients(inputs, left_out, chunk)
    together = _losses_and_gradients(inputs, left_out, chunk, overlap=True)
    for case, (states, embeddings, biases, targets, mask, _) in enumerate(cases):
        expected = _composite(states, embeddings, biases, targets, mask if left_out else None)
        torch.testing.assert_close(alone[0][case], expected.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(together[0][case], alone[0][case], rtol=0, atol=0)
        for a, b in zip(together[1][case], alone[1][case]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_batch_writes_into_the_buffer_the_batch_before_gave_back():
    full_softmax.release_buffers()
    states, embeddings, biases, targets, _, pairs = _inputs(torch.float32)
    addresses = []
    for _ in range(3):
        full_softmax_cross_entropy(states, embeddings, biases, targets, pairs).backward()
        (buffer,) = full_softmax._pool.free.values()
        addresses.append(buffer.data_ptr())
    assert addresses[0] == addresses[1] == addresses[2]
    full_softmax.release_buffers()
    assert not getattr(full_softmax._pool, "free", {})


def test_with_reuse_off_no_buffer_is_kept():
    states, embeddings, biases, targets, _, pairs = _inputs(torch.float32)
    try:
        assert full_softmax.reuse_buffers(False) is False
        full_softmax_cross_entropy(states, embeddings, biases, targets, pairs).backward()
        assert not getattr(full_softmax._pool, "free", {})
    finally:
        assert full_softmax.reuse_buffers(True) is True


def test_fit_gives_the_buffers_back_when_it_ends(monkeypatch):
    import numpy as np

    from mlstm4reco.interactions import SequenceInteractions
    from mlstm4reco.sequence_model import ImplicitSequenceModel

    full_softmax.release_buffers()
    given = []
    give = full_softmax._give
    monkeypatch.setattr(full_softmax, "_give", lambda buffer: given.append(give(buffer)))
    sequences = np.random.RandomState(0).randint(1, 20, size=(16, 6)).astype(np.int32)
    seen = []
    model = ImplicitSequenceModel(
        loss="softmax", representation="pooling", n_iter=2, batch_size=8, random_state=0
    )
    model.fit(
        SequenceInteractions(sequences, num_items=20),
        callback=lambda epoch, loss: seen.append(dict(getattr(full_softmax._pool, "free", {}))),
    )
    assert len(given) == 4  # a buffer each batch: the pool was used
    assert seen == [{}, {}]  # released before each epoch's callback
    assert not getattr(full_softmax._pool, "free", {})
