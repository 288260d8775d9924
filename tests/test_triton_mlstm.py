"""The Triton kernels of the mLSTM, checked on the CPU in Triton's interpreter
(TRITON_INTERPRET=1, tiny sizes) against the reference path; on a GPU, compiled.
Skipped when Triton is not installed."""

import contextlib
import inspect
import os
import pathlib
import random
import re
import subprocess
import sys
import threading
import time
import types
import warnings

import pytest
import torch

pytest.importorskip("triton")

from conftest import ROOT  # noqa: E402

from mlstm4reco import fused, triton_launch, triton_mlstm  # noqa: E402
from mlstm4reco.layers import MLSTM, MLSTMCell  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import kernel_build  # noqa: E402  (benchmarks/kernel_build.py: compile for sm_90 without a GPU)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
kernels = pytest.mark.skipif(
    DEVICE == "cpu" and not INTERPRETED,
    reason="run by test_kernels_in_the_interpreter in a process with TRITON_INTERPRET=1",
)


def _ptxas() -> str | None:
    """The ``ptxas`` of Triton's NVIDIA backend, or None."""
    path = (
        pathlib.Path(triton_mlstm.triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    )
    return str(path) if path.exists() else None


def sm90(test):
    """For tests that compile the kernels for sm_90 with the ``ptxas`` Triton ships, on any
    machine but not in the interpreter; marked ``sm90``, so that a run on a lent GPU may
    leave them out (``-m 'not sm90'``, as benchmarks/gpu_check.sh does: CI runs them). A
    compiler failure fails the test; only a Triton without its NVIDIA backend skips it."""
    skip = pytest.mark.skipif(
        INTERPRETED, reason="compiles the kernels for a GPU, not for the interpreter"
    )
    no_backend = pytest.mark.skipif(
        _ptxas() is None, reason="this Triton has no NVIDIA backend (ptxas)"
    )
    return pytest.mark.sm90(no_backend(skip(test)))


@pytest.mark.skipif(DEVICE == "cuda" or INTERPRETED, reason="the kernels run compiled here")
def test_kernels_in_the_interpreter():
    """This module's kernel tests again in a fresh process where TRITON_INTERPRET=1 (Triton
    reads it when the kernels are defined): all that ran there passed."""
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=dict(os.environ, TRITON_INTERPRET="1"),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    assert re.search(r"\b[1-9][0-9]* passed\b", summary) and "failed" not in summary, summary


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


def assert_same(actual, expected):
    """States, input gradients and every parameter gradient agree to fp32 tolerance."""
    for got, want in zip(actual[:5], expected[:5]):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    for name, want in expected[5].items():
        torch.testing.assert_close(actual[5][name], want, rtol=2e-5, atol=2e-5, msg=name)


# the interpreter computes every dot in fp32 whatever the precision: one is enough there
PRECISIONS = ("tf32x3", "ieee") if DEVICE == "cuda" else ("tf32x3",)


@kernels
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("multiplicative_bias", [True, False])
@pytest.mark.parametrize("use_cells", [True, False])
@pytest.mark.parametrize("variant", [{}, {"RESIDENT": 1}, {"PREFETCH": 0, "STATIC_H": 0}])
def test_triton_equals_reference(multiplicative_bias, use_cells, precision, variant):
    """Both kernels (the defaults, or with the weights loaded once, or with each step's
    inputs loaded in that step and H an argument; unsplit here, so no program waits for
    another) with every optional input present or absent."""
    torch.manual_seed(0)
    # 19 sequences: two tiles of 16, the second partly masked; H = 12 pads to 16
    layer = MLSTM(
        5, 12, num_layers=2, multiplicative_bias=multiplicative_bias, batch_first=False
    ).to(DEVICE)
    x = torch.randn(4, 19, 5, device=DEVICE)
    hx = (torch.randn(2, 19, 12, device=DEVICE), torch.randn(2, 19, 12, device=DEVICE))
    expected = outputs_and_gradients(layer, "reference", x, hx, use_cells)
    with triton_mlstm.dot_precision(precision), triton_mlstm.launch_options(**variant):
        actual = outputs_and_gradients(layer, "triton", x, hx, use_cells)
    assert_same(actual, expected)


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
@pytest.mark.parametrize(
    "launch",
    [
        {},
        {"K_STAGES": 1},
        {"BLOCK_B": 32, "KC": 32, "K_STAGES": 3},
        {"STATIC_H": 1},
        {"RESIDENT": 1, "STATIC_H": 1},
        {"PREFETCH": 0, "BLOCK_B": 32, "K_STAGES": 1},
        {"RESIDENT": 1, "BATCHED": 1},
        {"RESIDENT": 1, "BATCHED": 1, "BLOCK_B": 32},
        {"RESIDENT": 1, "X3": 1},
        {"RESIDENT": 1, "X3": 1, "BATCHED": 1},
    ],
)
def test_triton_over_several_chunks_and_tile_sizes(launch):
    """H = 40: the products take three chunks of 16 columns (default, the next chunk
    prefetched; or not) or two of 32, the last partly masked; 19 sequences fill part of
    one tile of 32. The same with H compiled in, with the weights loaded once, with
    the inputs loaded in their step rather than a step ahead, with the backward's gate
    products batched (over two halves of the 64 padded units, the second partly
    padding), and with tf32x3 by hand (X3; in the interpreter the TF32 products are fp32,
    so only the sum of the three parts is checked here: the parts by
    test_tf32_split_rounds_to_nearest_tf32, the whole on a GPU)."""
    torch.manual_seed(2)
    layer = MLSTM(6, 40, batch_first=False).to(DEVICE)
    x = torch.randn(3, 19, 6, device=DEVICE)
    hx = (torch.randn(1, 19, 40, device=DEVICE), torch.randn(1, 19, 40, device=DEVICE))
    expected = outputs_and_gradients(layer, "reference", x, hx, True)
    with triton_mlstm.launch_options(**launch):
        actual = outputs_and_gradients(layer, "triton", x, hx, True)
    assert_same(actual, expected)


def test_launch_options_are_checked_and_restored():
    with pytest.raises(ValueError, match="'BLOCK_H'"):
        with triton_mlstm.launch_options(BLOCK_H=64):
            pass
    for bad in (
        dict(SPLIT=3),
        dict(KC=8),
        dict(BLOCK_B=48),
        dict(num_warps=0),
        dict(K_STAGES=0),
        dict(SPLIT=2.0),
        dict(SPLIT=True),
        dict(PREFETCH=3),
        dict(PREFETCH=True),
        dict(WAIT=2),
        dict(WAIT=1.0),
    ):
        ((name, value),) = bad.items()
        with pytest.raises(ValueError, match=rf"{name} must be .* got {re.escape(repr(value))}"):
            with triton_mlstm.launch_options(**bad):
                pass
    with pytest.raises(
        ValueError, match=r"takes .* got \['BARRIERS'\]"
    ):  # the one-barrier kernels are gone
        with triton_mlstm.launch_options(BARRIERS=1):
            pass
    with triton_mlstm.launch_options(SPLIT=4, K_STAGES=3, PREFETCH=0, WAIT=0):  # valid ones pass
        assert {
            k: triton_mlstm._launch(120)[k] for k in ("SPLIT", "K_STAGES", "PREFETCH", "WAIT")
        } == dict(SPLIT=4, K_STAGES=3, PREFETCH=0, WAIT=0)
    with pytest.raises(
        ValueError, match="SPLIT=4 leaves fewer than 16 of the 32 padded hidden units"
    ):
        with triton_mlstm.launch_options(SPLIT=4):
            triton_mlstm._launch(20)
    default = triton_mlstm._launch(120)
    with triton_mlstm.launch_options(KC=64):
        with pytest.raises(ValueError, match="KC=64 is wider than the padded hidden size 32"):
            triton_mlstm._launch(20)
        assert triton_mlstm._launch(120) == {**default, "KC": 64}
    assert triton_mlstm._launch(120) == default
    assert triton_mlstm._launch(120, kernel="backward") == default


@sm90
@pytest.mark.parametrize("products", ["tf32x3", "tf32"])
def test_batched_backward_takes_the_gate_products_in_one_batched_product(products):
    """Compiled for sm_90 (H = 120, batch 240): by default the backward's products for
    the gradient of m_t are four (times three in tf32x3) 2-D products chained on one
    accumulator; BATCHED=1 makes them products over (4, 16, 64) x (4, 64, 32), one per
    half of the units: the gates are the batch."""

    def products_of(**options):
        with triton_mlstm.launch_options(SPLIT=4, **options), triton_mlstm.dot_precision(products):
            ttgir = kernel_build.compile_for("backward", 120, 90, 240, 132).asm["ttgir"]
        return re.findall(r"tt\.dot [^\n]*-> tensor<([0-9x]+)xf32", ttgir)

    chained, batched = products_of(), products_of(BATCHED=1)
    per_product = 3 if products == "tf32x3" else 1
    assert chained == ["16x32"] * (5 * per_product), chained  # four gates, then W_hm
    assert batched == ["4x16x32"] * (2 * per_product) + ["16x32"] * per_product, batched


@pytest.mark.parametrize(
    "option, kernel",
    [
        ("POLL", "forward"),
        ("POLL", "backward"),
        ("BATCHED", "backward"),
        ("X3", "forward"),
        ("X3", "backward"),
    ],
)
def test_opt_in_variants_need_resident_weights(option, kernel):
    """POLL, BATCHED and X3 work on the kernels' resident weights: set where those are
    (H = 120, batch 240 on an H100: split 4), a ValueError naming what is set elsewhere;
    off by default."""
    h100 = kernel_build.SHARED_MEMORY[90]
    with triton_mlstm.launch_options(**{option: 1}):
        assert triton_mlstm._launch(120, 240, 132, kernel, h100)[option] == 1
        with pytest.raises(ValueError, match=f"{option}=1 needs .* got RESIDENT=0 at H=120"):
            triton_mlstm._launch(120, 240, 132, kernel, 0)  # no shared memory figure: not resident
        with triton_mlstm.launch_options(RESIDENT=0):
            with pytest.raises(ValueError, match=f"{option}=1 needs .* got RESIDENT=0 at H=120"):
                triton_mlstm._launch(120, 240, 132, kernel, h100)
    assert triton_mlstm._launch(120, 240, 132, kernel, h100)[option] == 0


def test_opt_in_variants_are_off_where_they_do_nothing():
    """POLL with the hidden units unsplit (no program reads another's writes), BATCHED in
    the forward (its gate products have an accumulator each), X3 in a precision other
    than tf32x3: off, even where the weights are not resident; BATCHED refuses H under 17
    (its products go over halves of the units, at least 16 each)."""
    h100 = kernel_build.SHARED_MEMORY[90]
    with triton_mlstm.launch_options(POLL=1):
        assert triton_mlstm._launch(120, 10_000, 132, "backward", h100)["POLL"] == 0
    with triton_mlstm.launch_options(BATCHED=1):
        assert triton_mlstm._launch(120, 240, 132, "forward", 0)["BATCHED"] == 0
        with pytest.raises(
            ValueError, match="at least 32 padded hidden units, got RESIDENT=1 at H=12"
        ):
            triton_mlstm._launch(12, 240, 132, "backward", h100)
    for other in ("tf32", "ieee"):
        with triton_mlstm.launch_options(X3=1), triton_mlstm.dot_precision(other):
            assert triton_mlstm._launch(120, 240, 132, "backward", 0)["X3"] == 0
    with pytest.raises(ValueError, match=r"POLL must be one of \(0, 1\), got 2"):
        with triton_mlstm.launch_options(POLL=2):
            pass


@kernels
def test_tf32_split_rounds_to_nearest_tf32():
    """X3's split of x into high + low: high is x rounded to TF32 (11 significant bits, to
    nearest, ties away from zero: ``cvt.rna.tf32.f32``), computed here with numpy's frexp,
    and low is exactly x - high; over normal numbers of every magnitude and sign, and
    values exactly halfway between two TF32 numbers."""
    import numpy as np
    import triton
    import triton.language as tl

    @triton.jit
    def split(x_ptr, high_ptr, low_ptr, N: tl.constexpr):
        at = tl.arange(0, N)
        high, low = triton_mlstm.triton_kernels._tf32_split(tl.load(x_ptr + at))
        tl.store(high_ptr + at, high)
        tl.store(low_ptr + at, low)

    rng = np.random.default_rng(0)
    values = rng.standard_normal(384) * 10.0 ** rng.integers(-30, 30, 384)
    ties = (1 + np.arange(128) * 2.0**-10 + 2.0**-11) * 2.0 ** rng.integers(
        -20, 20, 128
    )  # 12th bit only
    x_np = np.concatenate([values, -values, ties, -ties]).astype(np.float32)
    x = torch.from_numpy(x_np).to(DEVICE)
    high, low = torch.empty_like(x), torch.empty_like(x)
    split[(1,)](x, high, low, N=1024)
    mantissa, exponent = np.frexp(x_np.astype(np.float64))
    expected = (
        np.sign(mantissa) * np.floor(np.abs(mantissa) * 2.0**11 + 0.5) * 2.0 ** (exponent - 11)
    )
    np.testing.assert_array_equal(high.cpu().numpy(), expected.astype(np.float32))
    np.testing.assert_array_equal(low.cpu().numpy(), (x_np - high.cpu().numpy()).astype(np.float32))
    assert (high.cpu().view(torch.int32) & 0x1FFF == 0).all()


@sm90
@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_x3_takes_tf32_products_each_on_its_own_accumulator(kernel):
    """Compiled for sm_90 (H = 120, batch 240): by default every product is Triton's
    tf32x3, which it lowers to TF32 products chained (at least one of each three takes
    another's result as its accumulator); with X3 all are
    TF32, three for each of the five, and none accumulates onto another's result."""

    def dots(stage, **options):
        with triton_mlstm.launch_options(**options):
            ir = kernel_build.compile_for(kernel, 120, 90, 240, 132).asm[stage]
        return re.findall(
            r"(%[\w#]+) = tt\.dot %[\w#]+, %[\w#]+, (%[\w#]+)[^\n]*inputPrecision = (\w+)", ir
        )

    def chained(found):
        results = {result for result, _, _ in found}
        return sum(accumulator in results for _, accumulator, _ in found)

    default, by_hand = dots("ttir"), dots("ttir", X3=1)
    lowered, lowered_by_hand = dots("ttgir"), dots("ttgir", X3=1)
    assert [precision for *_, precision in default] == ["tf32x3"] * 5, default
    assert [precision for *_, precision in by_hand] == ["tf32"] * 15, by_hand
    assert chained(lowered) >= 5 and chained(lowered_by_hand) == 0, (lowered, lowered_by_hand)


def test_poll_marks_what_the_programs_exchange_as_unwritten(monkeypatch):
    """Under POLL the buffers the programs poll hold UNWRITTEN's bits when each kernel is
    launched (h_1.. but not h_0, and m_t in the forward; the gate gradients and that of
    W_mh h_{t-1} in the backward); without it nothing is filled. The kernels are not run
    here (recorded at their launch)."""
    seen, filled = {}, []

    def recording(name, launch, B, H, device, *args, **flags):
        if name == "forward":  # hs[1:], ms, hs[0]
            seen[name] = (args[4][1:].clone(), args[9].clone(), args[4][0].clone())
        else:  # grad_xp's gate blocks, grad_mh
            seen[name] = (args[9][..., H:].clone(), args[10].clone())

    unwritten_fill = triton_mlstm._unwritten
    monkeypatch.setattr(triton_mlstm, "_run", recording)
    monkeypatch.setattr(
        triton_mlstm,
        "_unwritten",
        lambda *buffers: (filled.append(len(buffers)), unwritten_fill(*buffers)),
    )
    monkeypatch.setattr(
        triton_mlstm, "_multiprocessors", lambda device: 132
    )  # 2 tiles of 16: split 2
    monkeypatch.setattr(
        triton_mlstm, "_shared_memory", lambda device: kernel_build.SHARED_MEMORY[90]
    )
    layer = MLSTM(3, 40).cells[0]
    x, h0 = torch.randn(4, 32, 3), torch.randn(32, 40)
    unwritten = triton_mlstm.triton_kernels.UNWRITTEN.value

    def run(poll):
        filled.clear()
        with triton_mlstm.launch_options(POLL=poll):
            hs, _ = triton_mlstm.TritonMLSTM.apply(
                x,
                layer.weight_ih,
                layer.bias_ih,
                h0,
                h0,
                layer.weight_hm,
                layer.bias_mh,
                layer.weight_mh,
            )
        hs.sum().backward()
        return list(filled)

    assert run(0) == []
    assert run(1) == [2, 2]
    for name in ("forward", "backward"):
        for polled in seen[name][:2]:
            assert (polled.view(torch.int32) == unwritten).all(), name
    assert torch.equal(seen["forward"][2], h0)


def test_each_kernel_takes_its_own_launch_options():
    """forward= and backward= set one kernel's options, over those for both, inner blocks
    over outer ones; each is checked, and named in the error."""
    with pytest.raises(ValueError, match=r"launch_options\(backward=...\): SPLIT must be .* got 3"):
        with triton_mlstm.launch_options(backward=dict(SPLIT=3)):
            pass
    with pytest.raises(
        ValueError, match=r"launch_options\(forward=...\) takes .* got \['BLOCK_H'\]"
    ):
        with triton_mlstm.launch_options(forward=dict(BLOCK_H=64)):
            pass
    for bad in (1, 0, [("SPLIT", 2)]):
        with pytest.raises(
            ValueError, match=re.escape(f"forward must be a dict of options, got {bad!r}")
        ):
            with triton_mlstm.launch_options(forward=bad):
                pass
    before = triton_mlstm.overrides_key()

    def options(kernel, *names):
        launch = triton_mlstm._launch(120, 240, 132, kernel)
        return tuple(launch[name] for name in names)

    with triton_mlstm.launch_options(
        K_STAGES=3, forward=dict(PREFETCH=0), backward=dict(K_STAGES=1, SPLIT=4)
    ):
        assert options("forward", "PREFETCH", "K_STAGES", "SPLIT") == (0, 3, 4)
        assert options("backward", "PREFETCH", "K_STAGES", "SPLIT") == (1, 1, 4)
        with triton_mlstm.launch_options(K_STAGES=2, backward=dict(PREFETCH=0)):  # inner over outer
            assert options("forward", "PREFETCH", "K_STAGES") == (0, 2)
            assert options("backward", "PREFETCH", "K_STAGES", "SPLIT") == (0, 2, 4)
        assert triton_mlstm.overrides_key() != before
    assert triton_mlstm.overrides_key() == before


@kernels
def test_the_backward_launches_as_set_at_the_forward(monkeypatch):
    """Each kernel is launched with its own options, and the backward with those in force
    when its forward ran (not when backward() is called)."""
    launched = []
    run = triton_mlstm._run

    def recording(name, launch, *args, **flags):
        launched.append((name, launch["PREFETCH"], launch["K_STAGES"]))
        return run(name, launch, *args, **flags)

    monkeypatch.setattr(triton_mlstm, "_run", recording)
    layer = MLSTM(3, 16, implementation="triton").to(DEVICE)
    x = torch.randn(2, 4, 3, device=DEVICE, requires_grad=True)
    with triton_mlstm.launch_options(forward=dict(PREFETCH=0), backward=dict(K_STAGES=1)):
        out, _ = layer(x)
    with triton_mlstm.launch_options(K_STAGES=3, PREFETCH=0):
        out.sum().backward()
    assert launched == [("forward", 0, 2), ("backward", 1, 1)]


@kernels
def test_triton_refuses_what_it_cannot_run():
    layer = MLSTM(3, 4, implementation="triton")
    with pytest.raises(ValueError, match="float32"):
        layer.double()(torch.randn(2, 3, 3, dtype=torch.double, device=DEVICE))
    with pytest.raises(ValueError, match="no layer normalisation"):
        MLSTM(3, 4, layer_norm=True, implementation="triton")
    zeros = torch.zeros(
        2, 4, device=DEVICE
    )  # the layer refuses no steps too; the function on its own:
    with pytest.raises(ValueError, match=r"at least one time step, got x of shape \(0, 2, 3\)"):
        triton_mlstm.layer(
            layer.float().to(DEVICE).cells[0], torch.randn(0, 2, 3, device=DEVICE), zeros, zeros
        )


def test_auto_uses_triton_only_on_cuda_float32(monkeypatch):
    layer = MLSTM(3, 4)
    x = torch.randn(2, 3, 3)
    assert layer._layer_function(x.transpose(0, 1)) is fused.layer
    if DEVICE == "cuda":
        assert (
            layer._layer_function(x.cuda().transpose(0, 1)) is triton_mlstm.checked_layer_or_fused
        )


@sm90
def test_kernels_fit_an_h100():
    """Compiled for sm_90 (H100/H200, 132 multiprocessors), with the hidden units split as
    for the benchmark's batch of 240 or unsplit (a batch too large to split), neither
    kernel asks for more than the 227 KiB of shared memory a block may have or 255
    registers, and at most a few words per thread spill (to L1; these defaults were the
    fastest measured on an H200, runs 6-8: weights resident, inputs a step ahead, H compiled
    in, 4 programs a tile) at the benchmark's hidden size, and with the split at the
    largest one 'auto' takes (256). The same for the variants the sweep times, at the
    benchmark's size. The first version
    of the kernels asked for 664 KiB and spilled about 20 KB per thread."""
    both = (120, triton_mlstm.MAX_AUTO_HIDDEN)
    before = {"PREFETCH": 0, "STATIC_H": 0, "RESIDENT": 0, "SPLIT": 8}  # the earlier defaults
    configurations = [
        ({}, 240, both, "tf32x3"),
        ({}, 10_000, both, "tf32x3"),  # the defaults
        ({}, 240, (64, 32), "tf32x3"),
        (before, 240, both, "tf32x3"),  # the variants the sweep times
        ({"RESIDENT": 1, "PREFETCH": 0, "SPLIT": 8}, 240, (120,), "tf32x3"),
        ({"RESIDENT": 0}, 240, (120,), "tf32x3"),
        ({"X3": 1, "BATCHED": 1, "POLL": 1}, 240, (120,), "tf32x3"),
        ({}, 240, (120,), "tf32"),
        ({}, 1024, (120,), "tf32"),
    ]  # split 8; split 2 resident
    usage = {}
    for options, batch, sizes, precision in configurations:
        with triton_mlstm.launch_options(**options), triton_mlstm.dot_precision(precision):
            for H in sizes:
                usage[H, batch, f"{options} {precision}"] = kernel_build.resource_usage(
                    H, 90, batch, 132
                )
    assert (
        triton_mlstm._launch(120, 240, 132)["SPLIT"] == 4
        and triton_mlstm._launch(120, 10_000, 132)["SPLIT"] == 1
    )
    for (H, batch, label), kernels_usage in usage.items():
        for kernel, resources in kernels_usage.items():
            assert resources["shared"] <= 227 * 1024, (H, kernel, resources)
            assert resources["registers"] <= 255, (H, kernel, resources)
            if H <= 128 or batch == 240:
                assert resources["spilled"] <= 128, (H, batch, label, kernel, resources)


def test_split_gives_every_program_a_multiprocessor():
    """The hidden units are split across as many programs as keep at least 32 units each
    (16 with one TF32 product) and one multiprocessor per program of the grid (all
    resident: they wait for each other), compared with a search over every split; unsplit
    without a GPU. _launch takes the fewest units of the precision in force."""
    for fewest in (16, 32):
        for block_h in (16, 32, 64, 128, 256):
            for tiles in (1, 2, 15, 16, 33, 66, 67, 132, 500):
                for multiprocessors in (0, 1, 108, 132):
                    fits = [
                        s
                        for s in (2, 4, 8, 16, 32)
                        if block_h // s >= fewest and tiles * s <= multiprocessors
                    ]
                    assert triton_mlstm._split(block_h, tiles, multiprocessors, fewest) == max(
                        [1] + fits
                    )
    splits = {}
    for products in ("tf32x3", "ieee", "tf32"):
        with triton_mlstm.dot_precision(products):
            splits[products] = triton_mlstm._launch(120, 240, 132)["SPLIT"]
    assert splits == {"tf32x3": 4, "ieee": 4, "tf32": 8}


def test_weights_are_resident_by_default_where_they_fit():
    """RESIDENT's default: the weights loaded once where :func:`resident_bytes` fits the
    GPU's shared memory, with H up to 128; never in the
    interpreter (no shared memory figure) nor where an option says otherwise."""
    h100, a100 = kernel_build.SHARED_MEMORY[90], kernel_build.SHARED_MEMORY[80]

    def resident(H, B, shared_memory, **options):
        with triton_mlstm.launch_options(**options):
            return triton_mlstm._launch(H, B, 132, "backward", shared_memory)["RESIDENT"]

    for products, copies in (("tf32x3", 2), ("ieee", 2), ("tf32", 1)):
        with triton_mlstm.dot_precision(products):
            for H in (16, 32, 64, 120, 128, 256):
                for B in (19, 240, 1024, 10_000):
                    for shared_memory in (0, 101376, a100, h100):
                        launch = triton_mlstm._launch(H, B, 132, "forward", shared_memory)
                        need = (
                            copies
                            * 5
                            * launch["BLOCK_H"]
                            * (launch["BLOCK_H"] // launch["SPLIT"])
                            * 4
                            + 16384
                        )
                        assert launch["RESIDENT"] == int(H <= 128 and need <= shared_memory), (
                            products,
                            H,
                            B,
                            shared_memory,
                        )
    assert resident(120, 240, h100) == 1 and resident(120, 240, a100) == 0  # split 4: 176 KiB
    assert resident(120, 1024, h100) == 0  # split 2: 336 KiB
    assert resident(120, 240, h100, RESIDENT=0) == 0 and resident(120, 240, 0, RESIDENT=1) == 1
    with triton_mlstm.dot_precision("tf32"):  # the weights laid out once
        assert resident(120, 1024, h100) == 1 and resident(120, 1024, a100) == 0  # split 2: 176 KiB


@sm90
@pytest.mark.parametrize(
    "hidden, split, products",
    [(120, 4, "tf32x3"), (64, 1, "tf32x3"), (120, 8, "tf32"), (120, 2, "tf32")],
)
def test_resident_weights_take_what_resident_bytes_says(hidden, split, products):
    """Compiled for sm_90 with the weights resident, neither kernel asks for more shared
    memory than :func:`resident_bytes` (the default's rule) says in that precision, nor
    for less than the weights take once (five blocks of BLOCK_H x BLOCK_H / SPLIT floats:
    they are there)."""
    with triton_mlstm.launch_options(RESIDENT=1, SPLIT=split), triton_mlstm.dot_precision(products):
        usage = kernel_build.resource_usage(hidden, 90, 240, 132)
    block_h = max(16, triton_mlstm.triton.next_power_of_2(hidden))
    estimate = triton_mlstm.resident_bytes(block_h, block_h // split, products)
    for kernel, resources in usage.items():
        assert 5 * block_h * block_h // split * 4 <= resources["shared"] <= estimate, (
            kernel,
            resources,
            estimate,
        )


#: the kernels' variants the split tests run
VARIANTS = ({}, {"STATIC_H": 0}, {"RESIDENT": 1, "STATIC_H": 0}, {"RESIDENT": 1})
#: the opt-in variants not yet timed on a GPU: polling instead of barriers, the backward's
#: gate products batched, tf32x3 by hand (X3: in the interpreter its TF32 products are fp32,
#: so its split is checked on a GPU)
OPT_IN = (
    {"RESIDENT": 1, "POLL": 1},
    {"RESIDENT": 1, "BATCHED": 1, "POLL": 1},
    {"RESIDENT": 1, "X3": 1},
    {"RESIDENT": 1, "X3": 1, "BATCHED": 1, "POLL": 1},
)
#: the inputs loaded in their step, not a step ahead (H an argument, the weights re-read; and
#: the weights resident)
UNPREFETCHED = ({"PREFETCH": 0, "STATIC_H": 0, "RESIDENT": 0}, {"PREFETCH": 0, "RESIDENT": 1})
#: forward and backward kernels launched differently in one layer: the forward's weights
#: resident, the backward's not; and a forward unsplit with a backward split, H an argument
MIXED = (
    {"forward": {"RESIDENT": 1}, "backward": {"RESIDENT": 0}},
    {"forward": {"SPLIT": 1}, "backward": {"STATIC_H": 0}},
)


@pytest.mark.skipif(
    DEVICE != "cuda",
    reason="compiled on a GPU; in the interpreter, test_split_kernels_in_the_interpreter",
)
@pytest.mark.parametrize("hidden, split", [(120, 8), (120, 2), (40, 4), (256, 16)])
@pytest.mark.parametrize("variant", VARIANTS + MIXED + UNPREFETCHED + OPT_IN)
def test_split_kernels_equal_reference(hidden, split, variant):
    """Hidden units split across programs that meet at a barrier twice a step (with the
    weights loaded once or not; with the inputs loaded a step ahead; forward and
    backward kernels launched differently; or polling the data instead, with the backward's
    gate products batched, with tf32x3 by hand): outputs and every gradient as the
    reference path's (2e-5: one TF32 product instead of tf32x3 would not pass), with a
    masked second tile and padded units."""
    if variant.get("RESIDENT"):  # the weights a program needs must fit in its shared memory
        major, minor = torch.cuda.get_device_capability()
        with triton_mlstm.launch_options(SPLIT=split, **variant):
            needs = max(
                r["shared"]
                for r in kernel_build.resource_usage(hidden, 10 * major + minor, 19).values()
            )
        limit = torch.cuda.get_device_properties(0).shared_memory_per_block_optin
        if needs > limit:
            pytest.skip(
                f"resident weights at H = {hidden}, split {split}: {needs} B of shared memory, "
                f"more than the {limit} B a block may have"
            )
    torch.manual_seed(3)
    layer = MLSTM(7, hidden, batch_first=False).to(DEVICE)
    x = torch.randn(5, 19, 7, device=DEVICE)
    hx = (torch.randn(1, 19, hidden, device=DEVICE), torch.randn(1, 19, hidden, device=DEVICE))
    expected = outputs_and_gradients(layer, "reference", x, hx, True)
    with triton_mlstm.launch_options(SPLIT=split, **variant):
        assert triton_mlstm._launch(hidden, 19, 132, "backward")["SPLIT"] == split
        actual = outputs_and_gradients(layer, "triton", x, hx, True)
    assert_same(actual, expected)


@contextlib.contextmanager
def programs_at_once():
    """Triton's interpreter runs a grid's programs one after another, so programs that
    wait for each other at a barrier (the split kernels) would wait in vain. Within this
    block it collects the grid's programs as it goes through them and, at the last,
    runs them all at once, each in a thread of its own with its own program id (threads
    take turns under the GIL; the barrier's counter is a real atomic in the interpreter,
    and every program sees the others' stores at once, as after a barrier on a GPU)."""
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    if not all(callable(getattr(builder, name, None)) for name in ("set_grid_idx", "set_grid_dim")):
        pytest.skip("this Triton's interpreter is not the one programs_at_once knows")
    ids = threading.local()

    class ThreadedBuilder(type(builder)):
        grid_idx = property(
            lambda self: getattr(ids, "grid_idx", None),
            lambda self, value: setattr(ids, "grid_idx", value),
        )

        def create_masked_load(self, *args, **kwargs):  # some programs' loads lag: races show
            if getattr(ids, "lag", None) is not None and ids.lag.random() < 0.1:
                time.sleep(0.05)
            return super().create_masked_load(*args, **kwargs)

    original_call = interpreter.GridExecutor.__call__

    def call(executor, *args, **kwargs):
        kernel, programs, errors = executor.fn, [], []

        def run(grid_idx, kwargs_):
            ids.grid_idx = grid_idx
            ids.lag = random.Random(str(grid_idx)) if sum(grid_idx) % 2 else None
            try:
                kernel(**kwargs_)
            except BaseException as error:  # noqa: BLE001 - raised in the caller's thread below
                errors.append(error)

        def run_all():
            threads = [threading.Thread(target=run, args=program) for program in programs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]

        def collect(**kwargs_):
            programs.append((builder.grid_idx, kwargs_))
            if builder.grid_idx == tuple(n - 1 for n in builder.grid_dim):  # the last: run them all
                run_all()

        # the interpreter reads the kernel's signature and its module's globals (triton.language)
        stand_in = types.FunctionType(
            collect.__code__, kernel.__globals__, kernel.__name__, None, collect.__closure__
        )
        stand_in.__signature__ = inspect.signature(kernel)
        executor.fn = stand_in
        try:
            return original_call(executor, *args, **kwargs)
        finally:
            executor.fn = kernel

    previous_class, switch = builder.__class__, sys.getswitchinterval()
    builder.__class__ = ThreadedBuilder
    interpreter.GridExecutor.__call__ = call
    sys.setswitchinterval(1e-4)  # waiting programs give the others their turn sooner
    try:
        yield
    finally:
        interpreter.GridExecutor.__call__ = original_call
        builder.__class__ = previous_class
        sys.setswitchinterval(switch)


@pytest.mark.skipif(
    not INTERPRETED, reason="runs the split kernels' programs as threads in Triton's interpreter"
)
@pytest.mark.parametrize(
    "split, variant",
    [(split, variant) for variant in VARIANTS for split in (2, 4)]
    + [(2, variant) for variant in MIXED + UNPREFETCHED]  # these at one split
    + [(4, variant) for variant in OPT_IN if variant != {"RESIDENT": 1, "X3": 1}],
)
def test_split_kernels_in_the_interpreter(split, variant):
    """The split kernels (hidden units across programs that meet at barriers) on the CPU,
    their programs run at once as threads (:func:`programs_at_once`): outputs and every
    gradient as the reference path's; 19 sequences, two tiles, the second partly masked;
    H = 40 pads to 64 (the last program's units partly padding)."""
    torch.manual_seed(5)
    layer = MLSTM(6, 40, batch_first=False)
    x = torch.randn(3, 19, 6)
    hx = (torch.randn(1, 19, 40), torch.randn(1, 19, 40))
    expected = outputs_and_gradients(layer, "reference", x, hx, True)
    with programs_at_once(), triton_mlstm.launch_options(SPLIT=split, **variant):
        actual = outputs_and_gradients(layer, "triton", x, hx, True)
    assert_same(actual, expected)


def test_precision_follows_pytorchs_float32_matmul_setting(monkeypatch):
    """Outside dot_precision, the kernels take their products as PyTorch's float32 matmuls
    may: fp32-accurate tf32x3 at 'highest' (the default), one TF32 product at 'high' or
    'medium'; a dot_precision block wins, and the backward launches in its forward's
    precision (recorded at the launches; the kernels themselves are not run here)."""
    launched = []
    monkeypatch.setattr(
        triton_mlstm,
        "_run",
        lambda name, launch, *args, **flags: launched.append((name, flags["PRECISION"])),
    )
    layer = MLSTM(3, 16).cells[0]
    x, state = torch.randn(2, 5, 3), torch.zeros(5, 16)

    def launch(setting, block=None):
        monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: setting)
        launched.clear()
        with triton_mlstm.dot_precision(block) if block else contextlib.nullcontext():
            hs, _ = triton_mlstm.TritonMLSTM.apply(
                x,
                layer.weight_ih,
                layer.bias_ih,
                state,
                state,
                layer.weight_hm,
                layer.bias_mh,
                layer.weight_mh,
            )
        monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
        hs.sum().backward()
        return launched

    assert launch("highest") == [("forward", "tf32x3"), ("backward", "tf32x3")]
    assert launch("high") == [("forward", "tf32"), ("backward", "tf32")]
    assert launch("medium") == [("forward", "tf32"), ("backward", "tf32")]
    assert launch("high", "ieee") == [("forward", "ieee"), ("backward", "ieee")]
    assert triton_mlstm.precision() == "tf32x3"


def test_dot_precision_is_checked_and_restored():
    before = triton_launch._precision
    with pytest.raises(ValueError, match="'fp16'"):
        with triton_mlstm.dot_precision("fp16"):
            pass
    with triton_mlstm.dot_precision("ieee"):
        assert triton_launch._precision == "ieee"
    assert triton_launch._precision == before


@kernels
@pytest.mark.parametrize("multiplicative_bias", [True, False])
def test_check_passes_the_kernels(multiplicative_bias):
    cell = MLSTMCell(5, 12, multiplicative_bias=multiplicative_bias).to(DEVICE)
    assert triton_mlstm.check(cell, torch.device(DEVICE)) is None


def _wrong_kernel(cell, x_tm, h, c):
    hs, cs = fused.layer(cell, x_tm, h, c)
    return hs * 1.01, cs


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("out of resource: shared memory")


def _kernel_failing_backward(cell, x_tm, h, c):
    hs, cs = fused.layer(cell, x_tm, h, c)
    return _FailingBackward.apply(hs), cs


@pytest.mark.parametrize(
    "kernel, reason",
    [
        (_wrong_kernel, "differ from the fused path by"),
        (_kernel_failing_backward, "RuntimeError: out of resource"),
    ],
)
def test_auto_falls_back_to_fused_when_the_kernels_fail_their_check(monkeypatch, kernel, reason):
    """'auto' on a GPU runs the kernels through triton_mlstm.check first; a kernel that computes
    wrongly, or whose backward fails, is not used: one warning, then the fused path."""
    torch.manual_seed(4)
    monkeypatch.setattr(triton_mlstm, "verdicts", {})
    monkeypatch.setattr(triton_mlstm, "layer", kernel)
    cell = MLSTMCell(5, 12)
    x, h, c = torch.randn(4, 7, 5), torch.randn(7, 12), torch.randn(7, 12)
    with pytest.warns(RuntimeWarning, match=reason):
        hs, cs = triton_mlstm.checked_layer_or_fused(cell, x, h, c)
    expected = fused.layer(cell, x, h, c)
    torch.testing.assert_close(hs, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(cs, expected[1], rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the verdict is kept: no second check, no second warning
        triton_mlstm.checked_layer_or_fused(cell, x, h, c)
    (verdict,) = triton_mlstm.verdicts.values()
    assert reason in verdict
    if kernel is _wrong_kernel:  # its states are 1% off: at least 1% of some tensor's largest value
        assert float(re.search(r"by ([0-9.e+-]+) of", verdict).group(1)) >= 1e-2 * (1 - 1e-6), (
            verdict
        )


def test_auto_uses_kernels_that_pass_their_check(monkeypatch):
    calls = []

    def kernel(cell, x_tm, h, c):
        calls.append(x_tm.shape)
        return fused.layer(cell, x_tm, h, c)

    monkeypatch.setattr(triton_mlstm, "verdicts", {})
    monkeypatch.setattr(triton_mlstm, "layer", kernel)
    cell = MLSTMCell(5, 12)
    x = torch.randn(4, 7, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        triton_mlstm.checked_layer_or_fused(cell, x, torch.zeros(7, 12), torch.zeros(7, 12))
        triton_mlstm.checked_layer_or_fused(cell, x, torch.zeros(7, 12), torch.zeros(7, 12))
        assert calls == [
            (3, 19, 5),
            (4, 7, 5),
            (4, 7, 5),
        ]  # the check's problem once, then each call
        with triton_mlstm.launch_options(
            PREFETCH=0
        ):  # other kernels: checked before their first use
            triton_mlstm.checked_layer_or_fused(cell, x, torch.zeros(7, 12), torch.zeros(7, 12))
        triton_mlstm.checked_layer_or_fused(cell, x, torch.zeros(7, 12), torch.zeros(7, 12))
    assert calls[3:] == [(3, 19, 5), (4, 7, 5), (4, 7, 5)]


def test_kernels_index_with_int32_only_where_it_reaches():
    assert triton_mlstm.indexable(100, 240, 120)
    assert triton_mlstm.indexable(1, 1, (2**31 - 1) // 5)
    assert not triton_mlstm.indexable(256, 4096, 512)  # 2.7e9 elements of input projections


@sm90
@pytest.mark.parametrize(
    "kernel, flags",
    [
        ("forward", {"HAS_B_MH": False}),
        ("backward", {"HAS_GRAD_HS": False}),
        ("backward", {"HAS_GRAD_CS": False}),
    ],
)
@pytest.mark.parametrize(
    "launch", [{}, {"WAIT": 0}, {"PREFETCH": 0}, {"POLL": 1, "BATCHED": 1, "X3": 1}]
)
def test_every_variant_of_the_kernels_compiles_for_sm90(kernel, flags, launch):
    """The interpreter runs every branch as Python; here each variant (an optional input
    absent; the timing-only barrier that does not wait; the inputs
    loaded in their step; the data polled instead of barriers, with the backward's gate
    products batched and tf32x3 by hand) goes through Triton's GPU compiler down to sm_90
    machine code, split as for 32 sequences on an H100, within the shared memory a block may have.
    The barriers' atomics are there unless the programs do not wait or poll; polling
    reads 16 bytes at a time, past L1 (``ld.volatile``)."""
    with triton_mlstm.launch_options(**launch):
        compiled = kernel_build.compile_for(kernel, 64, 90, 32, 132, **flags)  # split 2
    assert compiled.asm["cubin"] and compiled.metadata.shared <= 227 * 1024
    ptx = compiled.asm["ptx"]
    barrier = (
        re.search(r"(?:red|atom)\.global\.gpu\.release\.add", ptx)  # red: Triton 3.9; atom: 3.6
        and re.search(r"ld\.global\.gpu\.acquire", ptx)
    )
    assert bool(barrier) == (launch.get("WAIT", 1) == 1 and not launch.get("POLL")), (
        "the programs wait at the barriers unless WAIT=0 or POLL=1"
    )
    assert not launch.get("POLL") or not re.search(r"\b(?:atom|red)\.", ptx), (
        "POLL: no atomics at all"
    )
    polls = re.findall(r"ld\.volatile\.global(?:\.[a-z0-9]+)*", ptx)
    assert set(polls) == ({"ld.volatile.global.v4.b32"} if launch.get("POLL") else set()), polls


@sm90
def test_static_hidden_size_gives_16_byte_accesses():
    """H = 120 is not a multiple of 16, so Triton's launcher does not tell the compiler that
    rows of H floats stay 16-byte aligned: as an argument (STATIC_H=0), every access is 4
    bytes. Compiled in (STATIC_H=1, the default), the chunk copies become 16-byte
    ``cp.async.cg`` and the state loads and stores vectors; at H = 128 the launcher's
    specialisation gives that already."""

    def accesses(H, **options):
        with triton_mlstm.launch_options(RESIDENT=0, **options):
            ptx = kernel_build.compile_for("forward", H, 90, 240, 132).asm["ptx"]
        return (
            len(re.findall(r"cp\.async\.cg\.shared\.global \[[^]]*\], \[[^]]*\], 0x10", ptx)),
            len(re.findall(r"\b(?:ld|st)\.global(?:\.[a-z]+)*\.v[24]\.", ptx)),
        )

    runtime, static, multiple = accesses(120, STATIC_H=0), accesses(120), accesses(128, STATIC_H=0)
    assert runtime == (0, 0), runtime
    assert static[0] > 0 and static[1] > 0, static
    assert multiple[0] > 0 and multiple[1] > 0, multiple


@sm90
def test_prefetch_carries_the_next_steps_inputs_across_the_time_loop():
    """With PREFETCH=1 (the default) what a step reads that no barrier guards is loaded in the step
    before, so the compiled time loop (the kernel's first ``scf.for``) carries it from one
    iteration to the next: the forward's five input projections, the backward's upstream
    gradients, gates, tanh c_t and c_{t-1} and m_t's two factors."""
    carried = {"forward": 5, "backward": 10}

    def carried_tensors(kernel, **options):
        with triton_mlstm.launch_options(RESIDENT=0, **options):
            ttir = kernel_build.compile_for(kernel, 120, 90, 240, 132).asm["ttir"]
        time_loop = re.search(r"scf\.for [^\n]* -> \(([^)]*)\)", ttir).group(1)
        return time_loop.count("tensor<")

    counts = {
        kernel: (carried_tensors(kernel, PREFETCH=0), carried_tensors(kernel)) for kernel in carried
    }
    assert {kernel: after - before for kernel, (before, after) in counts.items()} == carried, counts
