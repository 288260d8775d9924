import numpy as np
import pytest
import torch

from mlstm4reco import fused, loop_extension
from mlstm4reco.layers import MLSTM, MLSTMCell


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_step(cell, x, h, c):
    """The mLSTM equations written out in float64 numpy, one weight matrix per term."""
    H = cell.hidden_size
    W = {k: v.detach().double().numpy() for k, v in cell.named_parameters()}
    W_x = {name: W["weight_ih"][k * H : (k + 1) * H] for k, name in enumerate("mifgo")}
    W_m = {name: W["weight_mh"][k * H : (k + 1) * H] for k, name in enumerate("ifgo")}
    b = {name: np.zeros(H) for name in "ifgo"}
    if "bias" in W:
        b = {name: W["bias"][k * H : (k + 1) * H] for k, name in enumerate("ifgo")}
    b_mx = W.get("bias_mx", np.zeros(H))
    b_mh = W.get("bias_mh", np.zeros(H))
    m = (x @ W_x["m"].T + b_mx) * (h @ W["weight_hm"].T + b_mh)
    i = sigmoid(x @ W_x["i"].T + m @ W_m["i"].T + b["i"])
    f = sigmoid(x @ W_x["f"].T + m @ W_m["f"].T + b["f"])
    g = np.tanh(x @ W_x["g"].T + m @ W_m["g"].T + b["g"])
    o = sigmoid(x @ W_x["o"].T + m @ W_m["o"].T + b["o"])
    c = f * c + i * g
    return o * np.tanh(c), c


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("multiplicative_bias", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_numpy_equations(multiplicative_bias, bias, layer_norm):
    torch.manual_seed(5 if layer_norm else 0)
    cell = MLSTMCell(
        4, 6, bias=bias, multiplicative_bias=multiplicative_bias, layer_norm=layer_norm
    ).double()
    if layer_norm:
        with torch.no_grad():  # gains and shifts away from their initial 1 and 0
            for name in ("ln_weight", "ln_cell_weight", "ln_cell_bias"):
                getattr(cell, name).uniform_(0.5, 1.5)
    rng = np.random.default_rng(1 if layer_norm else 0)
    x, h, c = rng.normal(size=(3, 4)), rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    h_t, c_t = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    h_ref, c_ref = (numpy_step_layer_norm if layer_norm else numpy_step)(cell, x, h, c)
    rtol = 1e-10 if layer_norm else 1e-12
    np.testing.assert_allclose(h_t.detach().numpy(), h_ref, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(c_t.detach().numpy(), c_ref, rtol=rtol, atol=1e-12)


def test_layer_runs_the_numpy_equations_over_time():
    torch.manual_seed(1)
    layer = MLSTM(3, 5, implementation="fused").double()
    x = torch.randn(2, 7, 3, dtype=torch.double)
    hidden, cell_states = layer.states(x)
    h, c = np.zeros((2, 5)), np.zeros((2, 5))
    for t in range(7):
        h, c = numpy_step(layer.cells[0], x[:, t].numpy(), h, c)
        np.testing.assert_allclose(hidden[:, t].detach().numpy(), h, atol=1e-12)
        np.testing.assert_allclose(cell_states[:, t].detach().numpy(), c, atol=1e-12)


def run_both(layer, x, hx, dtype):
    results = {}
    for impl in ("reference", "fused"):
        layer.implementation = impl
        inputs = [x, *hx]
        for tensor in inputs:
            tensor.grad = None
        layer.zero_grad()
        hidden, cells = layer.states(x, hx)
        out, (h_n, c_n) = layer(x, hx)
        # A loss that touches hidden states, cell states and final states.
        weights = torch.linspace(-1, 1, hidden.shape[-1], dtype=dtype)
        loss = (hidden * weights).sum() + (cells**2).sum() + h_n.sum() + (c_n * 0.5).sum()
        loss = loss + out.pow(3).sum()
        loss.backward()
        grads = [t.grad.clone() for t in inputs] + [p.grad.clone() for p in layer.parameters()]
        results[impl] = [hidden, cells, out, h_n, c_n], grads
    return results


@pytest.fixture(params=["compiled", "python"])
def loops(request, monkeypatch):
    """The fused path with its C++ time loops (where they build) and with its Python ones."""
    if request.param == "python":
        monkeypatch.setattr(fused, "_compiled_loops", lambda like: None)
    elif loop_extension.loops() is None:
        pytest.skip("the C++ loops could not be built here")
    return request.param


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("multiplicative_bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_fused_equals_reference(dtype, tol, multiplicative_bias, batch_first, loops):
    torch.manual_seed(2)
    layer = MLSTM(
        5, 8, num_layers=2, multiplicative_bias=multiplicative_bias, batch_first=batch_first
    ).to(dtype)
    shape = (3, 9, 5) if batch_first else (9, 3, 5)  # batch 3, time 9
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    hx = tuple(torch.randn(2, 3, 8, dtype=dtype, requires_grad=True) for _ in range(2))
    results = run_both(layer, x, hx, dtype)
    (out_r, grads_r), (out_f, grads_f) = results["reference"], results["fused"]
    for a, b in zip(out_r, out_f):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert len(grads_r) == len(grads_f) == 3 + len(list(layer.parameters()))
    for a, b in zip(grads_r, grads_f):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


class States(torch.nn.Module):
    """Exposes MLSTM.states as forward, for torch.func.functional_call."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, hx):
        return self.layer.states(x, hx)


@pytest.mark.parametrize("implementation", ["fused", "reference"])
@pytest.mark.parametrize("multiplicative_bias", [True, False])
def test_gradcheck(implementation, multiplicative_bias, loops):
    torch.manual_seed(3)
    layer = MLSTM(
        3, 4, multiplicative_bias=multiplicative_bias, implementation=implementation
    ).double()
    x = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(1, 2, 4, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(1, 2, 4, dtype=torch.double, requires_grad=True)
    params = list(layer.parameters())
    names = ["layer." + n for n, _ in layer.named_parameters()]

    def fn(x, h0, c0, *weights):
        values = dict(zip(names, weights))
        hidden, cells = torch.func.functional_call(States(layer), values, (x, (h0, c0)))
        return hidden, cells

    inputs = (x, h0, c0, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_autocast_keeps_the_recurrence_in_float32(implementation):
    """Under bfloat16 autocast the layer gives exactly its float32 outputs and gradients,
    also for a bfloat16 input (upcast, not rounded further)."""
    torch.manual_seed(0)
    layer = MLSTM(6, 5, num_layers=2, implementation=implementation)
    x = torch.randn(3, 7, 6).to(torch.bfloat16).float()  # representable in bfloat16
    outputs = []
    for autocast, given in ((False, x), (True, x), (True, x.to(torch.bfloat16))):
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            hs, (h_n, c_n) = layer(given)
        assert hs.dtype == torch.float32 and c_n.dtype == torch.float32
        (hs.sum() + c_n.sum()).backward()
        outputs.append((hs.detach(), c_n.detach(), [p.grad.clone() for p in layer.parameters()]))
    for hs, c_n, grads in outputs[1:]:
        torch.testing.assert_close(hs, outputs[0][0], rtol=0, atol=0)
        torch.testing.assert_close(c_n, outputs[0][1], rtol=0, atol=0)
        for grad, expected in zip(grads, outputs[0][2]):
            torch.testing.assert_close(grad, expected, rtol=0, atol=0)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(4)
    for mb in (True, False):
        layer = MLSTM(3, 4, num_layers=2, multiplicative_bias=mb)
        out, (h_n, c_n) = layer(torch.randn(2, 5, 3))
        (out.sum() + c_n.sum()).backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name
        # weight_ih (5H x I) per layer, then weight_hm, weight_mh, bias, bias_mx + bias_mh.
        per_layer_recurrent = 4 * 4 + 16 * 4 + 16 + (8 if mb else 0)
        expected = 5 * 4 * 3 + 5 * 4 * 4 + 2 * per_layer_recurrent
        assert sum(p.numel() for p in layer.parameters()) == expected


def test_initialisation_and_repr():
    cell = MLSTMCell(3, 16, forget_bias=1.0)
    bound = 1 / 4
    assert cell.weight_hm.abs().max() <= bound
    assert (cell.bias[16:32] >= 1 - bound).all() and (cell.bias[16:32] <= 1 + bound).all()
    assert cell.bias[:16].abs().max() <= bound
    assert "forget_bias=1.0" in repr(cell)
    assert "multiplicative_bias=False" in repr(MLSTMCell(3, 4, multiplicative_bias=False))
    assert "num_layers=2" in repr(MLSTM(3, 4, num_layers=2))


def test_bad_input_is_rejected_with_the_shapes():
    layer = MLSTM(3, 4)
    with pytest.raises(ValueError, match="expected a 3-D input, got 2-D"):
        layer(torch.randn(5, 3))
    with pytest.raises(ValueError, match="expected input feature size 3, got 7"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"expected h0 of shape \(1, 2, 4\), got \(2, 4\)"):
        layer(torch.randn(2, 5, 3), (torch.zeros(2, 4), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="expected a 2-D input, got 3-D"):
        MLSTMCell(3, 4)(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="implementation must be one of"):
        MLSTM(3, 4, implementation="cudnn")
    with pytest.raises(ValueError, match="floating point"):
        layer(torch.ones(2, 5, 3, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    torch.manual_seed(5)
    layer = MLSTM(6, 8)
    x = torch.randn(4, 10, 6)
    out_cpu, _ = layer(x)
    out_gpu, _ = layer.cuda()(x.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-4, atol=1e-4)


def numpy_layer_norm(a, gain, shift=0.0, eps=1e-5):
    mean = a.mean(axis=-1, keepdims=True)
    var = a.var(axis=-1, keepdims=True)  # biased, as layer normalisation
    return (a - mean) / np.sqrt(var + eps) * gain + shift


def numpy_step_layer_norm(cell, x, h, c):
    """The layer-normalised mLSTM step in float64 numpy: each gate's pre-activation
    normalised on its own, then scaled and shifted by its bias; c normalised before tanh."""
    H = cell.hidden_size
    W = {k: v.detach().double().numpy() for k, v in cell.named_parameters()}
    b_mx = W.get("bias_mx", np.zeros(H))
    b_mh = W.get("bias_mh", np.zeros(H))
    m = (x @ W["weight_ih"][:H].T + b_mx) * (h @ W["weight_hm"].T + b_mh)
    act = {"i": sigmoid, "f": sigmoid, "g": np.tanh, "o": sigmoid}
    gate = {}
    for k, name in enumerate("ifgo"):
        rows = slice(k * H, (k + 1) * H)
        a = x @ W["weight_ih"][H:][rows].T + m @ W["weight_mh"][rows].T
        bias = W["bias"][rows] if "bias" in W else 0.0
        gate[name] = act[name](numpy_layer_norm(a, W["ln_weight"][rows], bias))
    c = gate["f"] * c + gate["i"] * gate["g"]
    normalised = numpy_layer_norm(c, W["ln_cell_weight"], W["ln_cell_bias"])
    return gate["o"] * np.tanh(normalised), c


def test_layer_norm_layer_initialisation_gradients_and_paths():
    torch.manual_seed(6)
    layer = MLSTM(3, 4, num_layers=2, layer_norm=True, forget_bias=1.0)
    cell = layer.cells[0]
    assert (
        (cell.ln_weight == 1).all()
        and (cell.ln_cell_weight == 1).all()
        and (cell.ln_cell_bias == 0).all()
    )
    assert (cell.bias[4:8] > 0.4).all()  # forget_bias still lands on the gate bias
    assert "layer_norm=True" in repr(layer) and "layer_norm=True" in repr(cell)
    x = torch.randn(2, 5, 3)
    out, (h_n, c_n) = layer(x)
    (out.sum() + c_n.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    h, c = torch.zeros(2, 4), torch.zeros(2, 4)  # 'auto' runs the cell step by step
    for t in range(5):
        h, c = cell(x[:, t], (h, c))
    first = MLSTM(3, 4, layer_norm=True)
    first.cells[0].load_state_dict(cell.state_dict())
    torch.testing.assert_close(first.states(x)[1][:, -1], c)
    with pytest.raises(ValueError, match="layer_norm=True needs implementation"):
        MLSTM(3, 4, layer_norm=True, implementation="fused")


def test_layer_norm_gradcheck():
    torch.manual_seed(7)
    layer = MLSTM(3, 4, layer_norm=True).double()
    x = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
    names = ["layer." + n for n, _ in layer.named_parameters()]

    def fn(x, *weights):
        return torch.func.functional_call(States(layer), dict(zip(names, weights)), (x, None))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in layer.parameters()])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)
