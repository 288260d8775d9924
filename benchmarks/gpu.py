"""The GPU benchmark of the mLSTM against cuDNN's LSTM, in one run (issue targets on an
H100: layer forward+backward <= 1.5x nn.LSTM; ML-1M epoch of MLSTMNet <= 1.5x LSTMNet's;
evaluation of ML-1M's test split under 0.2 s).

    MLSTM4RECO_DATA=../shared/data python benchmarks/gpu.py [--device cuda] [--epochs 3]

First the resources of the Triton kernels compiled for sm_90 (shared memory, registers,
spills; on any machine) and, on a GPU, the largest difference of the kernels from the
fused path in each of their precisions (tf32x3, the default; ieee; tf32). Then medians and
ratios to the LSTM measured in the same run: the layer at batch 240, seq 100, dim 120
(forward+backward and forward only; the kernels in each precision that ran), a full ML-1M
training epoch of MLSTMNet vs LSTMNet with the study's best configurations, and the
batched evaluation of the ML-1M test split. On a GPU, next: the MRR mLSTM reaches with the
Triton kernels and with the fused path (same seed, ``--mrr-epochs``); then the full-softmax
training (`loss='softmax'`) in float32 and in bfloat16 (``precision='bfloat16'``): epoch times, and
the validation/test MRR each precision reaches with the same seed and epochs; last, with
``--sweep``, the Triton layer's time under other tile sizes and launch options (each one
compiles; :data:`SWEEP`), or with ``--sweep-only`` the kernels' resources and check and
then the sweep alone. The issue's targets come before the sweep, so that a run cut short
still has them, except with ``--tune``: the sweep first, then every measurement (layer,
epoch, evaluation, MRR with the kernels) with the defaults and again with the sweep's
fastest configuration at fp32 accuracy, so that one run on a lent GPU both finds and
measures a better default. ``--shapes`` adds, after the rest (before a ``--sweep``
without ``--tune``), the Triton layer against cuDNN's LSTM at other batch and hidden sizes
(:data:`SHAPES`). It also runs on the CPU (slowly, the softmax part only with
``--softmax``; the targets are for a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import time
from typing import NamedTuple

import kernel_build  # benchmarks/kernel_build.py
import numpy as np
import torch
from layers import (
    compare_layers,
    layer_seconds,
    median_seconds,
    print_row,
    step,
)  # benchmarks/layers.py
from torch import nn

from mlstm4reco import triton_mlstm
from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets import get_movielens_dataset
from mlstm4reco.evaluation import sequence_mrr_score
from mlstm4reco.files import atomic_path
from mlstm4reco.layers import MLSTM
from mlstm4reco.search import (
    config_path,
    load_config,
    load_dataset,
    model_arguments,
    protocol_split,
)
from mlstm4reco.sequence_model import ImplicitSequenceModel


def best_arguments(model: str) -> dict:
    """The 2018 study's best ML-1M arguments of ``model`` (configs/ml1m_<model>.yaml),
    without the number of epochs (benchmarks time single epochs)."""
    best = load_config(config_path("ml1m", model)).best
    return {k: v for k, v in best.items() if k != "n_iter"}


BEST = {name: best_arguments(name) for name in ("lstm", "mlstm")}

#: the kernels' defaults: no launch options, products in tf32x3
DEFAULTS = ({}, "tf32x3")


class Results:
    """What the run measured, by part (seconds, differences, MRR), beside what it prints:
    with a ``path`` (``--json``), rewritten there atomically after each part, so that a
    run cut short keeps the parts it finished."""

    def __init__(self, path: pathlib.Path | None = None) -> None:
        self.path, self.parts = path, {}

    def add(self, part: str, value) -> None:
        self.parts[part] = value
        if self.path is not None:
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self.parts, indent=1) + "\n")


RESULTS = Results()


def training_benchmark(
    device: torch.device, epochs: int, data_dir, tuned: tuple | None = None
) -> None:
    """A full ML-1M training epoch of MLSTMNet against LSTMNet (study's best arguments) and
    the evaluation of the test split; with ``tuned`` (launch options and precision), MLSTMNet
    also with the kernels under them."""
    data = get_movielens_dataset("1M", data_dir=data_dir)
    state = np.random.RandomState(72)
    train, rest = user_based_train_test_split(data, 0.2, state)
    test, _ = user_based_train_test_split(rest, 0.5, state)
    train, test = train.to_sequence(100, 20, 100), test.to_sequence(100, 20, 100)
    models = {
        name: ImplicitSequenceModel(
            loss="adaptive_hinge",
            representation=name,
            n_iter=1,
            random_state=72,
            device=device,
            **params,
        )
        for name, params in BEST.items()
    }
    runs = {"LSTMNet": ("lstm", DEFAULTS), "MLSTMNet": ("mlstm", DEFAULTS)}
    if tuned:
        runs[f"MLSTMNet {describe(*tuned)}"] = ("mlstm", tuned)
    epoch = {}
    for label, (name, (options, precision)) in runs.items():
        with within(options, precision):
            epoch[label] = median_seconds(
                lambda m=models[name]: m.fit(train), device, epochs, warmup=1
            )
    print(
        f"ML-1M epoch ({len(train)} sequences): "
        + ", ".join(
            f"{label} {seconds:.2f} s ({seconds / epoch['LSTMNet']:.2f}x)"
            for label, seconds in epoch.items()
        )
    )
    RESULTS.add("epoch_seconds", epoch)
    evaluation = {}
    for label, (name, (options, precision)) in runs.items():
        if name == "mlstm":
            with within(options, precision):
                evaluation[label] = median_seconds(
                    lambda: sequence_mrr_score(models[name], test, exclude_preceding=True),
                    device,
                    5,
                )
            print(
                f"evaluation of the ML-1M test split ({len(test)} sequences x {test.num_items} "
                "items), "
                f"{label}: {evaluation[label] * 1e3:.0f} ms"
            )
    RESULTS.add("evaluation_seconds", evaluation)


def softmax_benchmark(device: torch.device, epochs: int, mrr_epochs: int, data_dir) -> None:
    """Full-softmax training (configs/ml1m_<model>_softmax_dropout.yaml) in float32 and
    bfloat16: epoch time of both models, then the MRR of mLSTM after ``mrr_epochs``."""
    configs = {
        name: load_config(config_path("ml1m", f"{name}_softmax_dropout"))
        for name in ("lstm", "mlstm")
    }
    train, valid, test = protocol_split(
        load_dataset(configs["lstm"], data_dir), configs["lstm"].protocol
    )

    def model(name, precision, n_iter):
        arguments = model_arguments(configs[name], {**configs[name].best, "n_iter": n_iter})
        return ImplicitSequenceModel(
            **arguments, precision=precision, random_state=0, device=device
        )

    times = {
        (name, precision): median_seconds(
            lambda m=model(name, precision, 1): m.fit(train), device, epochs, warmup=1
        )
        for name in ("lstm", "mlstm")
        for precision in ("float32", "bfloat16")
    }
    base = times["lstm", "float32"]
    print("ML-1M epoch, full softmax, dropout 0.25 (ratio to LSTMNet float32):")
    for (name, precision), seconds in times.items():
        print(f"  {name:6s} {precision:9s} {seconds:7.2f} s  {seconds / base:5.2f}x")
    RESULTS.add(
        "softmax_epoch_seconds",
        {f"{name} {precision}": seconds for (name, precision), seconds in times.items()},
    )
    reached = {}
    for precision in ("float32", "bfloat16"):
        trained = model("mlstm", precision, mrr_epochs)
        trained.fit(train)
        mrr = [
            sequence_mrr_score(trained, part, exclude_preceding=True).mean()
            for part in (valid, test)
        ]
        print(
            f"mLSTM, {mrr_epochs} epochs, {precision}: valid MRR {mrr[0]:.4f}, test MRR "
            f"{mrr[1]:.4f}"
        )
        reached[precision] = {
            "epochs": mrr_epochs,
            "valid_mrr": float(mrr[0]),
            "test_mrr": float(mrr[1]),
        }
        RESULTS.add("softmax_mrr", reached)


@contextlib.contextmanager
def cudnn_tf32(allowed: bool):
    """Within the block, cuDNN may (``allowed``) or may not use TF32 (PyTorch's
    ``torch.backends.cudnn.allow_tf32``, True by default: nn.LSTM's products in TF32)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


@contextlib.contextmanager
def within(options: dict, precision: str):
    """Within the block, the Triton kernels launch with ``options``
    (:func:`~mlstm4reco.triton_mlstm.launch_options`) and take their products in ``precision``."""
    with triton_mlstm.launch_options(**options), triton_mlstm.dot_precision(precision):
        yield


def kernel_options(options: dict, kernel: str) -> dict:
    """The launch options ``options`` (as :func:`~mlstm4reco.triton_mlstm.launch_options`
    takes them) give ``kernel``, ``'forward'`` or ``'backward'``."""
    common = {name: value for name, value in options.items() if name not in triton_mlstm.KERNELS}
    return {**common, **options.get(kernel, {})}


def describe(options: dict, precision: str) -> str:
    return f"{options or 'defaults'} {precision}"


class WithOptions(nn.Module):
    """``layer`` whose Triton kernels launch :func:`within` ``options`` and ``precision``."""

    def __init__(
        self, layer: nn.Module, precision: str = "tf32x3", options: dict | None = None
    ) -> None:
        super().__init__()
        self.layer, self.precision, self.options = layer, precision, options or {}

    def forward(self, x):
        with within(self.options, self.precision):
            return self.layer(x)


def lstm_without_tf32(
    measured: dict,
    device: torch.device,
    repeats: int,
    batch: int = 240,
    seq: int = 100,
    dim: int = 120,
) -> dict[str, float]:
    """A row under :func:`compare_layers`' table (``measured``): cuDNN's LSTM with TF32 off,
    in full fp32 as the kernels' default tf32x3 is (PyTorch lets cuDNN use TF32 by default:
    the first row), and each Triton row's fwd+bwd ratio to it. Returns its seconds."""
    x = torch.randn(batch, seq, dim, device=device, requires_grad=True)
    grad = torch.randn(batch, seq, dim, device=device)
    with cudnn_tf32(False):
        both, fwd = layer_seconds(
            nn.LSTM(dim, dim, batch_first=True).to(device), x, grad, device, repeats
        )
    row = {"seconds": both, "forward_seconds": fwd}
    print_row("nn.LSTM no TF32", row, next(iter(measured.values())))
    ratios = ", ".join(
        f"{name} {times['seconds'] / both:.2f}x"
        for name, times in measured.items()
        if "triton" in name
    )
    print(f"fwd+bwd against nn.LSTM without TF32: {ratios}")
    return row


def check_triton(device: torch.device) -> list[str]:
    """The largest difference between the Triton and the fused path at the benchmark's
    shape, outputs and every gradient (both fp32), in each precision of the kernels.
    Returns the precisions whose kernels ran (a failure is printed, not raised, so that
    the rest of the benchmark still runs)."""
    torch.manual_seed(0)
    layer = MLSTM(120, 120).to(device)
    x = torch.randn(240, 100, 120, device=device)
    grad = torch.randn(240, 100, 120, device=device)
    results = {}
    for implementation, precision in [("fused", None)] + [
        ("triton", p) for p in triton_mlstm.PRECISIONS
    ]:
        layer.implementation = implementation
        layer.zero_grad()
        inputs = x.clone().requires_grad_(True)
        try:
            out, _ = WithOptions(layer, precision or "tf32x3")(inputs)
            out.backward(grad)
        except Exception as error:  # noqa: BLE001 - reported; the benchmark goes on
            if precision is None:
                raise
            print(f"triton ({precision}) failed: {type(error).__name__}: {str(error)[:300]}")
            continue
        results[precision] = [out.detach(), inputs.grad] + [
            p.grad.clone() for p in layer.parameters()
        ]
    differences = {}
    for precision in [p for p in triton_mlstm.PRECISIONS if p in results]:
        worst = differences[precision] = triton_mlstm._largest_relative_difference(
            results[precision], results[None]
        )
        print(
            f"triton ({precision}) vs fused, largest difference relative to each tensor's "
            f"largest value: {worst:.2e}"
        )
    RESULTS.add("triton_vs_fused_difference", differences)
    return [p for p in triton_mlstm.PRECISIONS if p in results]


#: the sweep's configurations, the defaults first: launch options (triton_mlstm.launch_options),
#: the products' precision, and what the configuration tells
SWEEP = [
    (
        {},
        "tf32x3",
        "defaults (weights resident where they fit, inputs a step ahead, H compiled in)",
    ),
    (
        dict(WAIT=0),
        "tf32x3",
        "the programs do not wait at the barriers: wrong results, the barriers' cost",
    ),
    (
        dict(POLL=1),
        "tf32x3",
        "no barriers: the programs poll the data itself (no fences, no atomics)",
    ),
    (dict(POLL=1, SPLIT=8), "tf32x3", "polling, 8 programs a tile"),
    (dict(forward=dict(POLL=1)), "tf32x3", "polling in the forward only"),
    (dict(backward=dict(POLL=1)), "tf32x3", "polling in the backward only"),
    (
        dict(BATCHED=1),
        "tf32x3",
        "the backward's gate products batched (the step's MMA chain 59, not 168)",
    ),
    (dict(BATCHED=1, SPLIT=8), "tf32x3", "gate products batched, 8 programs a tile"),
    (dict(BATCHED=1, num_warps=8), "tf32x3", "gate products batched, 8 warps"),
    (dict(BATCHED=1, POLL=1), "tf32x3", "gate products batched, polling"),
    (dict(X3=1), "tf32x3", "tf32x3 by hand: three TF32 products on accumulators of their own"),
    (dict(X3=1, BATCHED=1), "tf32x3", "tf32x3 by hand, the backward's gate products batched"),
    (dict(X3=1, BATCHED=1, POLL=1), "tf32x3", "tf32x3 by hand, gate products batched, polling"),
    (dict(X3=1, SPLIT=8), "tf32x3", "tf32x3 by hand, 8 programs a tile"),
    (dict(PREFETCH=0, STATIC_H=0, RESIDENT=0, SPLIT=8), "tf32x3", "the earlier defaults"),
    (dict(RESIDENT=0), "tf32x3", "weights re-read each step, KC rows at a time"),
    (dict(RESIDENT=0, K_STAGES=3), "tf32x3", "weights re-read, two chunks ahead"),
    (dict(RESIDENT=0, KC=16), "tf32x3", "weights re-read, narrower chunks"),
    (dict(PREFETCH=0), "tf32x3", "each step's inputs loaded in that step"),
    (dict(STATIC_H=0), "tf32x3", "H a kernel argument (4-byte accesses at H = 120)"),
    (dict(SPLIT=8), "tf32x3", "8 programs a tile (16 x 16 products)"),
    (dict(SPLIT=8, RESIDENT=0), "tf32x3", "8 programs a tile, weights re-read"),
    (dict(SPLIT=2), "tf32x3", "2 programs a tile (the weights do not fit: re-read)"),
    (dict(SPLIT=1), "tf32x3", "each tile's program alone (no barriers)"),
    (dict(BLOCK_B=32), "tf32x3", "tiles of 32 sequences (half the programs)"),
    (dict(num_warps=8), "tf32x3", "8 warps a program"),
    (dict(num_warps=2), "tf32x3", "2 warps a program"),
    (dict(forward=dict(SPLIT=8)), "tf32x3", "forward 8 programs a tile, backward 4"),
    (dict(backward=dict(SPLIT=8)), "tf32x3", "forward 4 programs a tile, backward 8"),
    (
        {},
        "tf32",
        "one TF32 product (the precision cuDNN's LSTM runs in by default; 8 programs a tile)",
    ),
    (dict(RESIDENT=0), "tf32", "one TF32 product, weights re-read"),
    (dict(SPLIT=4), "tf32", "one TF32 product, 4 programs a tile (as tf32x3; 8 by default)"),
    (
        dict(SPLIT=2, RESIDENT=1),
        "tf32",
        "one TF32 product, 2 programs a tile, weights resident (tf32 fits)",
    ),
    (dict(POLL=1), "tf32", "one TF32 product, polling"),
    (dict(POLL=1, SPLIT=4), "tf32", "one TF32 product, polling, 4 programs a tile"),
    (dict(BATCHED=1), "tf32", "one TF32 product, the backward's gate products batched"),
    (dict(BATCHED=1, POLL=1), "tf32", "one TF32 product, gate products batched, polling"),
]


#: what a configuration must agree with the fused path to, to be a candidate default: fp32
#: accuracy (the defaults, tf32x3, agree to ~6e-7 at the benchmark's shape; one TF32 product
#: to ~1e-3, which 'auto' accepts but the README's float32 claim does not)
FP32_AGREEMENT = 1e-5


class Timed(NamedTuple):
    """A configuration the sweep timed (seconds) and its largest difference from fused."""

    both: float
    forward: float
    difference: float
    options: dict
    precision: str


#: a configuration whose forward+backward, once compiled, takes longer than this is not
#: timed further (the benchmark's layer takes ~3 ms): its programs wait at barriers or polls
#: that give up (2**16 reads each), which would take the sweep's time for nothing
TOO_SLOW_SECONDS = 0.5


def timed_against_fused(
    layer,
    x: torch.Tensor,
    grad: torch.Tensor,
    expected,
    options: dict,
    precision: str,
    device: torch.device,
    repeats: int,
) -> dict:
    """The Triton ``layer``'s forward+backward and forward-only seconds :func:`within`
    ``options`` and ``precision``, and the largest difference of its output and input
    gradient from the fused path's (``expected``); or, for a configuration that does not
    build or run, or runs slower than :data:`TOO_SLOW_SECONDS` once, why:
    ``{'failed': ...}``."""
    try:
        with within(options, precision):
            got = step(layer, x, grad)  # compiles the kernels
            once = median_seconds(lambda: step(layer, x, grad), device, 1, warmup=0)
            if once > TOO_SLOW_SECONDS:
                took = f"one forward+backward took {once:.2f} s (over {TOO_SLOW_SECONDS} s)"
                return {"failed": f"{took}: not timed"}
            both, fwd = layer_seconds(layer, x, grad, device, repeats)
    except Exception as error:  # noqa: BLE001 - reported by the caller; the benchmark goes on
        return {"failed": f"{type(error).__name__}: {str(error)[:300]}"}
    return {
        "seconds": both,
        "forward_seconds": fwd,
        "difference": triton_mlstm._largest_relative_difference(got, expected),
    }


def sweep_launch_options(
    device: torch.device, repeats: int, batch: int = 240, seq: int = 100, dim: int = 120
) -> tuple[dict, str] | None:
    """Forward+backward and forward-only time of the Triton layer at the benchmark's shape
    in each configuration of :data:`SWEEP`, against the defaults and cuDNN's LSTM measured
    in the same run, with the largest difference of the output and the input gradient
    from the fused path's (relative to their largest value): for tuning. Returns the
    fastest configuration (launch options, precision) that agrees with fused to
    :data:`FP32_AGREEMENT`, None if none does."""
    torch.manual_seed(0)
    layer = MLSTM(dim, dim).to(device)
    x = torch.randn(batch, seq, dim, device=device, requires_grad=True)
    grad = torch.randn(batch, seq, dim, device=device)
    lstm = nn.LSTM(dim, dim, batch_first=True).to(device)
    lstm_both, lstm_fwd = layer_seconds(lstm, x, grad, device, repeats)
    with cudnn_tf32(False):  # cuDNN in full fp32, as the kernels' tf32x3 is
        fp32_both, fp32_fwd = layer_seconds(lstm, x, grad, device, repeats)
        lstm_fp32 = step(lstm, x, grad)
    lstm_difference = triton_mlstm._largest_relative_difference(step(lstm, x, grad), lstm_fp32)
    layer.implementation = "fused"
    expected = step(layer, x, grad)
    layer.implementation = "triton"
    print(
        f"nn.LSTM: fwd+bwd {lstm_both * 1e3:.2f} ms, fwd {lstm_fwd * 1e3:.2f} ms with cuDNN's TF32 "
        "(PyTorch's "
        f"default, allow_tf32 = {torch.backends.cudnn.allow_tf32}); without: fwd+bwd "
        f"{fp32_both * 1e3:.2f} ms, "
        f"fwd {fp32_fwd * 1e3:.2f} ms; the two differ by {lstm_difference:.1e}"
    )
    RESULTS.add(
        "lstm_precision",
        {
            "tf32_allowed": torch.backends.cudnn.allow_tf32,
            "seconds": lstm_both,
            "forward_seconds": lstm_fwd,
            "fp32_seconds": fp32_both,
            "fp32_forward_seconds": fp32_fwd,
            "difference": lstm_difference,
        },
    )
    print(
        "Triton layer under other launch options, against nn.LSTM as PyTorch runs it (/LSTM) and "
        "in full "
        "fp32 (/fp32); difference: of the output and x.grad from the fused path's"
    )
    print(
        f"  {'fwd+bwd ms':>10} {'/default':>8} {'/LSTM':>6} {'/fp32':>6} {'fwd ms':>7} "
        f"{'/LSTM':>6} "
        f"{'difference':>10}  configuration"
    )
    base, timed, measured = None, [], []

    def measure(options, precision, meaning):
        nonlocal base
        start = time.perf_counter()
        label = f"{describe(options, precision)}: {meaning}"
        outcome = timed_against_fused(layer, x, grad, expected, options, precision, device, repeats)
        if "failed" in outcome:
            print(f"  failed ({outcome['failed'][:160]}): {label}", flush=True)
        else:
            both, fwd, worst = outcome["seconds"], outcome["forward_seconds"], outcome["difference"]
            base = base or both
            print(
                f"  {both * 1e3:>10.2f} {both / base:>7.2f}x {both / lstm_both:>5.2f}x "
                f"{both / fp32_both:>5.2f}x "
                f"{fwd * 1e3:>7.2f} "
                f"{fwd / lstm_fwd:>5.2f}x {worst:>10.1e}  {label} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            if all(
                kernel_options(options, kernel).get("WAIT", 1) for kernel in triton_mlstm.KERNELS
            ):
                timed.append(
                    Timed(both, fwd, worst, options, precision)
                )  # WAIT=0 gives wrong results by design
        measured.append({"options": options, "precision": precision, "meaning": meaning, **outcome})
        RESULTS.add(
            "sweep",
            {
                "lstm_seconds": lstm_both,
                "lstm_forward_seconds": lstm_fwd,
                "configurations": measured,
            },
        )

    for configuration in SWEEP:
        measure(*configuration)
    # the forward of the configuration whose forward was fastest with the backward of the one
    # whose backward was (forward+backward less forward only), both at fp32 accuracy
    accurate = [
        entry
        for entry in timed
        if entry.difference <= FP32_AGREEMENT and entry.precision == "tf32x3"
    ]
    if accurate:
        fastest_forward = min(accurate, key=lambda entry: entry.forward).options
        fastest_backward = min(accurate, key=lambda entry: entry.both - entry.forward).options
        combined = {
            kernel: kernel_options(options, kernel)
            for kernel, options in (("forward", fastest_forward), ("backward", fastest_backward))
        }
        if fastest_forward != fastest_backward:
            measure(combined, "tf32x3", "the fastest forward with the fastest backward above")
    best = None
    for tolerance in (1e-3, FP32_AGREEMENT):  # what 'auto' accepts; fp32 accuracy
        agreeing = [entry for entry in timed if entry.difference <= tolerance]
        if agreeing:
            fastest = min(agreeing, key=lambda entry: entry.both)
            print(
                f"fastest that agrees with fused to {tolerance:.0e}: "
                f"{describe(fastest.options, fastest.precision)}, "
                f"{fastest.both * 1e3:.2f} ms, {fastest.both / lstm_both:.2f}x nn.LSTM, "
                f"{fastest.both / fp32_both:.2f}x in fp32"
            )
            best = fastest.options, fastest.precision
            RESULTS.add(
                f"sweep_fastest_within_{tolerance:.0e}",
                {"options": best[0], "precision": best[1], "seconds": fastest.both},
            )
    return best


#: the shapes of ``--shapes`` (batch, hidden size; 100 steps): the benchmark's, narrower and
#: wider layers, a smaller and a larger batch
SHAPES = ((240, 120), (240, 32), (240, 64), (240, 256), (64, 120), (1024, 120))


def shape_scan(
    device: torch.device, repeats: int, tuned: tuple | None = None, seq: int = 100
) -> None:
    """The Triton layer with the defaults (and with ``tuned``, launch options and
    precision) against cuDNN's LSTM at each of :data:`SHAPES`, in microseconds a step,
    forward+backward and forward only, with the kernels' split and their largest
    difference from the fused path: what a step's time follows, the hidden size (the
    products) or neither (barriers and latencies), and where the kernels stand against
    cuDNN at the sizes a user picks."""
    print(
        f"Triton layer at other shapes, {seq} steps, us a step (ratio to nn.LSTM in the same "
        "shape); "
        f"difference: of the output and x.grad from the fused path's"
    )
    print(
        f"  {'batch':>5} {'dim':>4} {'split':>5} {'kernels':<36} {'fwd+bwd':>8} {'':>6} {'fwd':>7} "
        f"{'':>6} "
        f"{'difference':>10}"
    )
    rows = []
    for batch, dim in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(batch, seq, dim, device=device, requires_grad=True)
        grad = torch.randn(batch, seq, dim, device=device)
        lstm_both, lstm_fwd = layer_seconds(
            nn.LSTM(dim, dim, batch_first=True).to(device), x, grad, device, repeats
        )
        layer = MLSTM(dim, dim).to(device)
        layer.implementation = "fused"
        expected = step(layer, x, grad)
        layer.implementation = "triton"
        print(
            f"  {batch:>5} {dim:>4} {'':>5} {'nn.LSTM':<36} {lstm_both / seq * 1e6:>8.1f} {'':>6} "
            f"{lstm_fwd / seq * 1e6:>7.1f}",
            flush=True,
        )
        rows.append(
            {
                "batch": batch,
                "hidden": dim,
                "steps": seq,
                "layer": "nn.LSTM",
                "seconds": lstm_both,
                "forward_seconds": lstm_fwd,
            }
        )
        for options, precision in [DEFAULTS] + ([tuned] if tuned else []):
            label = describe(options, precision)
            outcome = timed_against_fused(
                layer, x, grad, expected, options, precision, device, repeats
            )
            row = {
                "batch": batch,
                "hidden": dim,
                "steps": seq,
                "layer": "MLSTM triton",
                "options": options,
                "precision": precision,
            }
            if "failed" in outcome:
                print(f"  {batch:>5} {dim:>4} failed ({outcome['failed'][:160]}): {label}")
            else:
                with within(options, precision):  # it ran: its options are valid at this shape
                    row["split"] = triton_mlstm._launch(
                        dim, batch, triton_mlstm._multiprocessors(device)
                    )["SPLIT"]
                both, fwd = outcome["seconds"], outcome["forward_seconds"]
                print(
                    f"  {batch:>5} {dim:>4} {row['split']:>5} {label:<36} {both / seq * 1e6:>8.1f} "
                    f"{both / lstm_both:>5.2f}x {fwd / seq * 1e6:>7.1f} {fwd / lstm_fwd:>5.2f}x "
                    f"{outcome['difference']:>10.1e}",
                    flush=True,
                )
            rows.append({**row, **outcome})
        RESULTS.add("shapes", rows)


def implementation_mrr(
    device: torch.device, epochs: int, data_dir, tuned: tuple | None = None
) -> None:
    """mLSTM trained with the Triton kernels and with the fused path (study's ML-1M
    arguments, same seed, ``epochs`` epochs), and with ``tuned`` (launch options and
    precision) the kernels under them: the MRR each reaches, and epoch times."""
    config = load_config(config_path("ml1m", "mlstm"))
    train, valid, test = protocol_split(load_dataset(config, data_dir), config.protocol)
    runs = [("fused", DEFAULTS), ("triton", DEFAULTS)] + ([("triton", tuned)] if tuned else [])
    reached = []
    for implementation, (options, precision) in runs:
        model = ImplicitSequenceModel(
            loss="adaptive_hinge",
            representation="mlstm",
            n_iter=epochs,
            random_state=0,
            device=device,
            representation_kwargs={"implementation": implementation},
            **BEST["mlstm"],
        )
        with within(options, precision):
            start = time.perf_counter()
            model.fit(train)
            seconds = (time.perf_counter() - start) / epochs
            mrr = [
                sequence_mrr_score(model, part, exclude_preceding=True).mean()
                for part in (valid, test)
            ]
        label = implementation + (
            "" if (options, precision) == DEFAULTS else f" {describe(options, precision)}"
        )
        print(
            f"mLSTM, {epochs} epochs, {label}: valid MRR {mrr[0]:.4f}, test MRR {mrr[1]:.4f} "
            f"({seconds:.2f} s per epoch)",
            flush=True,
        )
        reached.append(
            {
                "implementation": implementation,
                "options": options,
                "precision": precision,
                "epochs": epochs,
                "valid_mrr": float(mrr[0]),
                "test_mrr": float(mrr[1]),
                "epoch_seconds": seconds,
            }
        )
        RESULTS.add("mrr", reached)


def print_kernel_resources(hidden_size: int, batch: int = 240) -> None:
    """Shared memory, registers and spills of the kernels compiled for sm_90 (no GPU
    needed), with the hidden units split as for ``batch`` sequences on an H100/H200 (132
    multiprocessors) and unsplit."""
    for multiprocessors in (132, 0):
        split = triton_mlstm._launch(hidden_size, batch, multiprocessors)["SPLIT"]
        try:
            usage = kernel_build.resource_usage(hidden_size, 90, batch, multiprocessors)
        except Exception as error:  # noqa: BLE001 - a report, not a requirement
            print(f"note: cannot compile the Triton kernels for sm_90 here ({error})")
            return
        for kernel, resources in usage.items():
            print(
                f"Triton {kernel} kernel for sm_90 at H={hidden_size}, split {split}: "
                f"{resources['shared']} B "
                f"shared memory, {resources['registers']} registers, {resources['spilled']} B "
                "spilled per thread"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--softmax", action="store_true", help="the softmax part on the CPU too (slow)"
    )
    parser.add_argument(
        "--mrr-epochs",
        type=int,
        default=12,
        help="epochs of the MRR checks (triton vs fused; float32 vs bfloat16)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="last, time the Triton layer under other launch options",
    )
    parser.add_argument(
        "--sweep-only",
        action="store_true",
        help="only the kernels' resources, their check against the fused path and the sweep",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="first the sweep, then every measurement with the defaults and again with the "
        "sweep's fastest configuration that agrees with fused to fp32 accuracy",
    )
    parser.add_argument(
        "--no-mrr",
        action="store_true",
        help="leave out the trainings to MRR (triton vs fused, float32 vs bfloat16): a quick run",
    )
    parser.add_argument(
        "--no-softmax",
        action="store_true",
        help="leave out the full-softmax part (float32 vs bfloat16)",
    )
    parser.add_argument(
        "--json",
        type=pathlib.Path,
        default=None,
        help="also write what the run measures to this JSON file, atomically after each part",
    )
    parser.add_argument(
        "--shapes",
        action="store_true",
        help="after the rest, the Triton layer against cuDNN's LSTM at other batch and "
        "hidden sizes (with --tune, also with the tuned configuration)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}")
    RESULTS.path, RESULTS.parts = args.json, {}
    RESULTS.add(
        "run",
        {
            "device": name,
            "torch": torch.__version__,
            "triton": getattr(triton_mlstm.triton, "__version__", None),  # None: not installed
            "arguments": {
                k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()
            },
        },
    )
    if device.type != "cuda":
        print("note: no GPU: running on the CPU, slowly; the issue's targets are for a GPU")
        args.repeats = min(args.repeats, 3)
    layers = {
        "nn.LSTM": nn.LSTM(120, 120, batch_first=True),
        "MLSTM fused": MLSTM(120, 120, implementation="fused"),
    }
    if triton_mlstm.available() and not triton_mlstm.interpreted():
        print_kernel_resources(120)
    working = []
    if device.type == "cuda" and triton_mlstm.available():
        print(
            "cuDNN may use TF32: torch.backends.cudnn.allow_tf32 = "
            f"{torch.backends.cudnn.allow_tf32}"
        )
        working = check_triton(device)
        for precision in working:
            name = "MLSTM triton" + ("" if precision == "tf32x3" else f" {precision}")
            layers[name] = WithOptions(MLSTM(120, 120, implementation="triton"), precision)
    else:
        print("note: the Triton kernels need a CUDA device and Triton: not timed here")
    if (args.sweep_only or args.tune) and not working:
        print("note: nothing to sweep without the kernels on a GPU")
    tuned = (
        sweep_launch_options(device, args.repeats)
        if working and (args.sweep_only or args.tune)
        else None
    )
    if args.sweep_only:
        return
    RESULTS.add("tuned", None if tuned is None else {"options": tuned[0], "precision": tuned[1]})
    if tuned == DEFAULTS:
        print("tuned: the defaults are the fastest configuration at fp32 accuracy")
        tuned = None
    elif tuned:
        print(f"tuned: {describe(*tuned)}; measured below beside the defaults")
        layers["MLSTM triton tuned"] = WithOptions(
            MLSTM(120, 120, implementation="triton"), tuned[1], tuned[0]
        )
    print("layer, batch 240, seq 100, dim 120, fp32 (MLSTM 'auto' picks triton tf32x3 on CUDA):")
    measured = compare_layers(layers, device, args.repeats, 240, 100, 120)
    if device.type == "cuda":
        measured["nn.LSTM without TF32"] = lstm_without_tf32(measured, device, args.repeats)
    RESULTS.add("layer_seconds", measured)
    training_benchmark(device, args.epochs, args.data_dir, tuned)
    if device.type == "cuda":
        print(f"MLSTM 'auto' verdicts on the kernels (None: used): {triton_mlstm.verdicts}")
    if working and not args.no_mrr:
        implementation_mrr(device, args.mrr_epochs, args.data_dir, tuned)
    if args.no_mrr or args.no_softmax:
        print("note: no full-softmax part" + (", no MRR checks" if args.no_mrr else ""))
    elif device.type == "cuda" or args.softmax:
        softmax_benchmark(device, args.epochs, args.mrr_epochs, args.data_dir)
    else:
        print(
            "note: the full-softmax part (float32 vs bfloat16) runs on the CPU only with --softmax"
        )
    if working and args.shapes:
        shape_scan(device, args.repeats, tuned)
    elif args.shapes:
        print("note: the shapes' scan times the Triton kernels: it needs them on a GPU")
    if (
        working and args.sweep and not args.tune
    ):  # last: each configuration compiles, and a cut-short sweep still reports
        sweep_launch_options(device, args.repeats)


if __name__ == "__main__":
    main()
