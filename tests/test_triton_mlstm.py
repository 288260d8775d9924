"""The Triton kernels of the mLSTM, checked on the CPU in Triton's interpreter
(TRITON_INTERPRET=1, tiny sizes) against the reference path; on a GPU, compiled.
Skipped when Triton is not installed."""

import os
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from mlstm4reco import triton_mlstm  # noqa: E402
from mlstm4reco.layers import MLSTM  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
kernels = pytest.mark.skipif(
    DEVICE == "cpu" and not INTERPRETED,
    reason="run by test_kernels_in_the_interpreter in a process with TRITON_INTERPRET=1")


@pytest.mark.skipif(DEVICE == "cuda" or INTERPRETED, reason="the kernels run compiled here")
def test_kernels_in_the_interpreter():
    """Triton reads TRITON_INTERPRET when the kernels are defined: this module's kernel
    tests run again in a fresh process where it is set."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b7 passed, 1 skipped\b", summary), summary  # all but this test ran


def outputs_and_gradients(layer, implementation, x, hx, use_cells):
    layer.implementation = implementation
    layer.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    hx = tuple(s.detach().clone().requires_grad_(True) for s in hx)
    hidden, cells = layer.states(x, hx)
    weights = torch.linspace(-1, 1, hidden.numel(), device=x.device).view_as(hidden)
    loss = (hidden * weights).sum() + ((cells * weights.flip(0)).sum() if use_cells else 0)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    return hidden, cells, x.grad, hx[0].grad, hx[1].grad, grads


@kernels
@pytest.mark.parametrize("multiplicative_bias", [True, False])
@pytest.mark.parametrize("use_cells", [True, False])
def test_triton_equals_reference(multiplicative_bias, use_cells):
    torch.manual_seed(0)
    # 19 sequences: two tiles of 16, the second partly masked; H = 12 pads to 16
    layer = MLSTM(5, 12, num_layers=2, multiplicative_bias=multiplicative_bias, batch_first=False).to(DEVICE)
    x = torch.randn(4, 19, 5, device=DEVICE)
    hx = (torch.randn(2, 19, 12, device=DEVICE), torch.randn(2, 19, 12, device=DEVICE))
    expected = outputs_and_gradients(layer, "reference", x, hx, use_cells)
    actual = outputs_and_gradients(layer, "triton", x, hx, use_cells)
    for got, want in zip(actual[:5], expected[:5]):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    for name, want in expected[5].items():
        torch.testing.assert_close(actual[5][name], want, rtol=2e-5, atol=2e-5, msg=name)


@kernels
def test_triton_without_gate_bias_and_with_full_tiles():
    torch.manual_seed(1)
    layer = MLSTM(16, 16, bias=False).to(DEVICE)
    x = torch.randn(32, 3, 16, device=DEVICE)
    zeros = torch.zeros(1, 32, 16, device=DEVICE)
    expected = outputs_and_gradients(layer, "reference", x, (zeros, zeros), True)
    actual = outputs_and_gradients(layer, "triton", x, (zeros, zeros), True)
    for got, want in zip(actual[:5], expected[:5]):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@kernels
def test_triton_refuses_what_it_cannot_run():
    layer = MLSTM(3, 4, implementation="triton")
    with pytest.raises(ValueError, match="float32"):
        layer.double()(torch.randn(2, 3, 3, dtype=torch.double, device=DEVICE))
    with pytest.raises(ValueError, match="no layer normalisation"):
        MLSTM(3, 4, layer_norm=True, implementation="triton")


def test_auto_uses_triton_only_on_cuda_float32(monkeypatch):
    layer = MLSTM(3, 4)
    x = torch.randn(2, 3, 3)
    assert layer._layer_function(x.transpose(0, 1)).__name__ == "_layer_fused"
    if DEVICE == "cuda":
        assert layer._layer_function(x.cuda().transpose(0, 1)).__name__ == "_layer_triton_or_fused"
