"""mlstm4reco.matmul: the products oneDNN takes against float64 torch.mm, the same numbers
on every call, and the fused mLSTM and full softmax at sizes where oneDNN runs, with it
and without it."""

import pytest
import torch

from mlstm4reco import loop_extension, matmul
from mlstm4reco.full_softmax import full_softmax_cross_entropy
from mlstm4reco.layers import MLSTM

pytestmark = pytest.mark.skipif(
    not matmul.use_onednn(), reason="no oneDNN matmul here (no extension, or no oneDNN)"
)


@pytest.fixture
def aten_only():
    """Every product to torch.mm for the test's body, oneDNN back on after it."""

    def switch(enable):
        return matmul.use_onednn(enable)

    yield switch
    matmul.use_onednn(True)


def reference(a, b, out=None, beta=0.0):
    product = a.double() @ b.double()
    return product if out is None else beta * out.double() + product


def close(got, want, scale):
    """float32 products of length-K sums: within a few ulp of the float64 result."""
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_products_equal_float64_and_keep_their_layout(beta):
    torch.manual_seed(0)
    a = torch.randn(300, 256)
    weight = torch.randn(1024, 256)
    b = weight.t()  # a transposed view, as the layers pass their weights
    buffer = torch.randn(3, 300, 5 * 256)
    out = buffer[1].narrow(1, 256, 1024)  # rows of stride 5H: the gates of one step
    before = buffer.clone()
    want = reference(a, b, out, beta)
    if beta == 0:
        out.fill_(float("nan"))  # ignored at beta 0
    matmul.mm(a, b, out, beta=beta)
    close(out, want, scale=256**0.5 * 4)
    outside = torch.ones_like(buffer, dtype=torch.bool)
    outside[1, :, 256:] = False
    assert torch.equal(buffer[outside], before[outside])  # nothing written outside the view


def test_a_transposed_left_factor_and_a_long_inner_dimension():
    """The weight gradients' shape: (5H, T*B) @ (T*B, I) with T*B = 20,000."""
    torch.manual_seed(1)
    grads, inputs = torch.randn(20000, 320), torch.randn(20000, 48)
    got = matmul.mm(grads[:, 64:].t(), inputs)
    close(got, reference(grads[:, 64:].t(), inputs), scale=20000**0.5 * 4)


def test_the_same_inputs_give_the_same_numbers(aten_only):
    torch.manual_seed(2)
    a, b = torch.randn(240, 256), torch.randn(256, 1024)
    first, second = matmul.mm(a, b), matmul.mm(a, b)
    assert torch.equal(first, second)
    assert aten_only(False) is False
    assert torch.equal(matmul.mm(a, b), torch.mm(a, b))  # switched off: torch.mm itself
    assert aten_only(True) is True


def test_shapes_are_checked():
    with pytest.raises(RuntimeError, match=r"matmul: shapes \[4, 5\] @ \[6, 7\] into \[4, 7\]"):
        loop_extension.loops().matmul(torch.ones(4, 5), torch.ones(6, 7), torch.ones(4, 7), 0.0)


def run_layer(layer, x):
    layer.zero_grad()
    x = x.clone().requires_grad_()
    hs, (h_n, c_n) = layer(x)
    weights = torch.linspace(-1, 1, hs.numel()).view_as(hs)
    ((hs * weights).sum() + c_n.sum()).backward()
    return [hs.detach(), c_n.detach(), x.grad, *(p.grad.clone() for p in layer.parameters())]


def test_the_fused_layer_with_onednn_gives_its_float64_numbers(aten_only):
    """Hidden 128, batch 64: every per-step product (64 x 128 x 512) and the weight
    gradients go to oneDNN; against the same layer in float64 and with torch.mm."""
    torch.manual_seed(3)
    layer = MLSTM(48, 128)
    x = torch.randn(64, 12, 48)
    with_onednn = run_layer(layer, x)
    aten_only(False)
    with_aten = run_layer(layer, x)
    in_float64 = run_layer(layer.double(), x.double())
    for got, aten, want in zip(with_onednn, with_aten, in_float64):
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5 * scale)
        torch.testing.assert_close(aten.double(), want, rtol=0, atol=2e-5 * scale)


def test_the_full_softmax_with_onednn_gives_its_float64_numbers(aten_only):
    """2,048 positions x 64 dims x 3,000 items (both chunked and whole): the loss and the
    gradients against the float64 composite of torch.cross_entropy."""
    torch.manual_seed(4)
    states = torch.randn(2048, 64)
    embeddings, biases = torch.randn(3000, 64) * 0.3, torch.randn(3000) * 0.1
    targets = torch.randint(0, 3000, (2048,))

    def run(chunk, dtype):
        leaves = [t.to(dtype).clone().requires_grad_() for t in (states, embeddings, biases)]
        loss = full_softmax_cross_entropy(*leaves, targets, chunk_size=chunk)
        loss.backward()
        return [loss.detach(), *(leaf.grad for leaf in leaves)]

    leaves = [t.double().requires_grad_() for t in (states, embeddings, biases)]
    loss = torch.nn.functional.cross_entropy(leaves[0] @ leaves[1].t() + leaves[2], targets)
    loss.backward()
    want = [loss.detach(), *(leaf.grad for leaf in leaves)]
    for chunk in (None, 1024):
        for got, expected in zip(run(chunk, torch.float32), want):
            scale = expected.abs().max().item()
            torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5 * scale)


def test_evaluation_scores_with_onednn_equal_float64_and_training_keeps_autograd():
    """score_items outside autograd (evaluation) takes oneDNN; under autograd the same
    scores, differentiable."""
    from mlstm4reco.representations import REPRESENTATIONS

    torch.manual_seed(5)
    net = REPRESENTATIONS["pooling"](4000, embedding_dim=64)
    states = torch.randn(600, 64)
    embeddings = net.scoring_embeddings.weight.double()
    want = states.double() @ embeddings.t() + net.item_biases.weight.double().squeeze(1)
    with torch.no_grad():
        got = net.score_items(states)
    close(got, want, scale=8)
    trained = net.score_items(states.requires_grad_())
    assert trained.requires_grad
    close(trained.detach(), want, scale=8)
