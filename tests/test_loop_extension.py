"""The fused mLSTM's C++ time loops against its Python loops, and the fallback when they
cannot be built."""

import warnings

import pytest
import torch

from mlstm4reco import fused, loop_extension
from mlstm4reco.layers import MLSTM


def _run(layer, x, hx, python: bool, monkeypatch, touch: str):
    if python:
        monkeypatch.setattr(fused, "_compiled_loops", lambda like: None)
    try:
        layer.zero_grad()
        x.grad = None
        out, (h_n, c_n) = layer(x, hx)
        hidden, cells = layer.states(x, hx)
        loss = {"outputs": out.pow(2).sum(), "cells": cells.sum(), "both": out.sum() + cells.sum()}
        (loss[touch] + 0.5 * h_n.sum()).backward()
        return [out, hidden, cells, x.grad] + [p.grad for p in layer.parameters()]
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("multiplicative_bias", [True, False])
@pytest.mark.parametrize("touch", ["outputs", "cells", "both"])
def test_compiled_loops_give_the_python_loops_numbers(
    dtype, tol, multiplicative_bias, touch, monkeypatch
):
    if loop_extension.loops() is None:
        pytest.skip("the C++ loops could not be built here")
    torch.manual_seed(5)
    layer = MLSTM(6, 40, num_layers=2, multiplicative_bias=multiplicative_bias).to(dtype)
    x = torch.randn(33, 11, 6, dtype=dtype, requires_grad=True)  # batch 33: uneven shares
    hx = tuple(torch.randn(2, 33, 40, dtype=dtype) for _ in range(2))
    compiled = _run(layer, x, hx, False, monkeypatch, touch)
    python = _run(layer, x, hx, True, monkeypatch, touch)
    for a, b in zip(compiled, python):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_a_failed_build_warns_once_and_falls_back(monkeypatch):
    import torch.utils.cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'mlstm4reco_loop': no c++ here")

    loop_extension.loops.cache_clear()
    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*no c\\+\\+ here"):
            assert loop_extension.loops() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert loop_extension.loops() is None  # cached: no second warning
        layer = MLSTM(3, 4)
        out, _ = layer(torch.randn(2, 5, 3))
        assert out.shape == (2, 5, 4)
    finally:
        loop_extension.loops.cache_clear()


def test_the_loops_can_be_turned_off(monkeypatch):
    loop_extension.loops.cache_clear()
    monkeypatch.setenv("MLSTM4RECO_NO_EXTENSION", "1")
    try:
        assert loop_extension.loops() is None
    finally:
        loop_extension.loops.cache_clear()
