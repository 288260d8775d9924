"""The fused mLSTM's C++ time loops against its Python loops, and the fallback when they
cannot be built."""

import warnings

import pytest
import torch

from mlstm4reco import fused, loop_extension
from mlstm4reco.layers import MLSTM


def _run(layer, x, hx, python: bool, touch: str):
    """Outputs, states and every gradient of ``layer``, with the C++ loops or, when
    ``python``, the Python ones."""
    compiled = fused._compiled_loops
    if python:
        fused._compiled_loops = lambda like: None
    try:
        layer.zero_grad()
        x.grad = None
        out, (h_n, c_n) = layer(x, hx)
        hidden, cells = layer.states(x, hx)
        loss = {"outputs": out.pow(2).sum(), "cells": cells.sum(), "both": out.sum() + cells.sum()}
        (loss[touch] + 0.5 * h_n.sum()).backward()
        return [out, hidden, cells, x.grad] + [p.grad for p in layer.parameters()]
    finally:
        fused._compiled_loops = compiled


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("multiplicative_bias", [True, False])
@pytest.mark.parametrize("touch", ["outputs", "cells", "both"])
@pytest.mark.parametrize("rowwise", [True, False], ids=["rowwise", "batch-matmuls"])
@pytest.mark.parametrize("hidden", [40, 48])
def test_compiled_loops_give_the_python_loops_numbers(
    dtype, tol, multiplicative_bias, touch, rowwise, hidden, monkeypatch
):
    """Both C++ strategies against the Python loops. Hidden 40 and 48: with 32-byte
    vectors two or three 16-column blocks of the row-wise kernels and 8 columns past
    them; with 64-byte ones a 32-column block, then 8 single columns or one 16-column
    vector; batch 33: eight 4-row groups and one row, and uneven shares between threads."""
    if loop_extension.loops() is None:
        pytest.skip("the C++ loops could not be built here")
    monkeypatch.setattr(fused, "ROWWISE_MAX_HIDDEN", 10**6 if rowwise else 0)
    torch.manual_seed(5)
    layer = MLSTM(6, hidden, num_layers=2, multiplicative_bias=multiplicative_bias).to(dtype)
    x = torch.randn(33, 11, 6, dtype=dtype, requires_grad=True)
    hx = tuple(torch.randn(2, 33, hidden, dtype=dtype) for _ in range(2))
    compiled = _run(layer, x, hx, False, touch)
    python = _run(layer, x, hx, True, touch)
    for a, b in zip(compiled, python):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("rowwise", [True, False], ids=["rowwise", "batch-matmuls"])
def test_compiled_loops_match_torch_on_saturated_gates(rowwise, monkeypatch):
    """Gate pre-activations far outside the exp's clamped range (|z| up to ~1e3): the
    float32 C++ activations stay finite and give torch's sigmoid and tanh."""
    if loop_extension.loops() is None:
        pytest.skip("the C++ loops could not be built here")
    monkeypatch.setattr(fused, "ROWWISE_MAX_HIDDEN", 10**6 if rowwise else 0)
    torch.manual_seed(6)
    layer = MLSTM(4, 16)
    with torch.no_grad():
        for weight in layer.parameters():
            weight.mul_(60)
    x = torch.randn(9, 7, 4) * 10
    compiled = _run(layer, x.clone().requires_grad_(), None, False, "both")
    python = _run(layer, x.clone().requires_grad_(), None, True, "both")
    assert all(torch.isfinite(a).all() for a in compiled)
    for a, b in zip(compiled[:3], python[:3]):  # the states; their gradients may be huge
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_loops_run_on_torchs_threads(two_threads):
    """The build has OpenMP where torch runs on it: without it ATen's parallel_for, a
    header template, runs every row group on one thread, whatever torch's thread count."""
    loops = loop_extension.loops()
    if loops is None:
        pytest.skip("the C++ loops could not be built here")
    expected = 2 if loop_extension.openmp_flags() else 1
    assert loops.threads_used(8) == expected
    assert loops.threads_used(1) == 1
    torch.set_num_threads(1)
    assert loops.threads_used(8) == 1


def test_the_row_wise_loops_give_the_same_numbers_on_one_thread_and_two():
    """Each batch row's arithmetic does not depend on which thread takes it (the row-wise
    kernels' sums run in the same order in a group of rows and alone): bit for bit, for
    batches that split into uneven shares."""
    loops = loop_extension.loops()
    if loops is None:
        pytest.skip("the C++ loops could not be built here")
    torch.manual_seed(7)
    T, H = 9, 24
    w_hm, w_mh, bias = torch.randn(H, H), torch.randn(4 * H, H), torch.randn(H)
    before = torch.get_num_threads()
    try:
        for B in (5, 37):
            xp0 = torch.randn(T, B, 5 * H)
            grad_hs = torch.randn(T, B, H)
            c0 = torch.randn(B, H)
            results = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                xp = xp0.clone()
                hs, cs = torch.zeros(T + 1, B, H), torch.zeros(T + 1, B, H)
                cs[0] = c0
                tanh_cs, mh, ms = (torch.empty(T, B, H) for _ in range(3))
                loops.forward_loop(xp, hs, cs, tanh_cs, mh, ms, w_hm.t(), bias, w_mh.t(), H)
                grad_xp, grad_m, grad_mh = torch.zeros(T, B, 5 * H), *torch.empty(2, T, B, H)
                dh, dc = loops.backward_loop(
                    xp, cs, tanh_cs, grad_hs, None, grad_xp, grad_m, grad_mh, w_hm, w_mh, H
                )
                results.append([xp, hs, cs, tanh_cs, mh, ms, grad_xp, grad_m, grad_mh, dh, dc])
            for a, b in zip(*results):
                assert torch.equal(a, b)
    finally:
        torch.set_num_threads(before)


def test_openmp_is_asked_for_where_gcc_builds_for_torchs_libgomp(monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setattr(loop_extension.sys, "platform", "linux")
    monkeypatch.setattr(torch.backends.openmp, "is_available", lambda: True)
    for gcc, flags in ((True, ["-fopenmp"]), (False, [])):
        monkeypatch.setattr(cpp_extension, "check_compiler_is_gcc", lambda compiler, g=gcc: g)
        assert loop_extension.openmp_flags() == flags
    monkeypatch.setattr(cpp_extension, "check_compiler_is_gcc", lambda compiler: True)
    monkeypatch.setattr(torch.backends.openmp, "is_available", lambda: False)
    assert loop_extension.openmp_flags() == []
    monkeypatch.setattr(torch.backends.openmp, "is_available", lambda: True)
    monkeypatch.setattr(loop_extension.sys, "platform", "darwin")
    assert loop_extension.openmp_flags() == []


def test_a_build_that_fails_with_openmp_is_retried_without(monkeypatch):
    import torch.utils.cpp_extension

    calls = []

    def load(**kwargs):
        calls.append(kwargs["extra_cflags"])
        if "-fopenmp" in kwargs["extra_cflags"]:
            raise RuntimeError("cannot find -lgomp")

    loop_extension.loops.cache_clear()
    monkeypatch.setattr(loop_extension, "_LOADED", {})
    monkeypatch.setattr(loop_extension, "openmp_flags", lambda: ["-fopenmp"])
    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    try:
        with pytest.warns(RuntimeWarning, match="with OpenMP .*cannot find -lgomp.*one thread"):
            assert loop_extension.loops() is not None
        assert ["-fopenmp" in flags for flags in calls] == [True, False]
    finally:
        loop_extension.loops.cache_clear()


def test_build_flags_follow_the_cpu_capability(monkeypatch):
    """AVX-512 and AVX2 flags only where the CPU has them (and an x86 one), and the
    build's name says which, so a shared cache never serves a build to a CPU without its
    instructions."""
    monkeypatch.setattr(loop_extension.platform, "machine", lambda: "x86_64")
    for capability, suffix in (("AVX512", "avx512"), ("AVX2", "avx2"), ("DEFAULT", "baseline")):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        name, flags = loop_extension.build_flags()
        assert name == suffix
        assert ("-mavx2" in flags) == (suffix != "baseline")
        assert ("-mavx512f" in flags) == ("-DMLSTM4RECO_VECTOR_BYTES=64" in flags)
        assert ("-mavx512f" in flags) == (suffix == "avx512")
    monkeypatch.setattr(loop_extension.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert loop_extension.build_flags() == ("baseline", [])


def test_a_failed_build_warns_once_and_falls_back(monkeypatch):
    import torch.utils.cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'mlstm4reco_loop': no c++ here")

    loop_extension.loops.cache_clear()
    monkeypatch.setattr(loop_extension, "_LOADED", {})  # as in a process that has not built it
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
