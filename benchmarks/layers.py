"""Forward+backward time of MLSTM's implementations against torch.nn.LSTM.

    python benchmarks/layers.py [--batch 240] [--seq 100] [--dim 120] [--threads 2] [--repeats 10]
    python benchmarks/layers.py --sweep      # the search space's (batch, dim) grid

Prints the median over ``--repeats`` runs (after warm-up) of each layer and its ratio to
``nn.LSTM`` measured in the same process. Issue targets: fused <= 1.6x nn.LSTM on the CPU
with 2 threads; with --sweep (the fused path with its C++ loops and with its Python
ones, no reference loop), <= 1.3x at every row. ``benchmarks/gpu.py`` reuses
:func:`compare_layers` on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mlstm4reco import fused
from mlstm4reco.layers import MLSTM

SWEEP = ((160, 16), (160, 32), (240, 64), (240, 120), (240, 256))
"""(batch, dim) rows of --sweep: the study's search space draws dim 16-128, batch 64-256."""


class PythonLoops(nn.Module):
    """``layer`` with the fused path's Python time loops (its C++ ones switched off)."""

    def __init__(self, layer: MLSTM) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        compiled, fused._compiled_loops = fused._compiled_loops, lambda like: None
        try:
            return self.layer(x)
        finally:
            fused._compiled_loops = compiled


def median_seconds(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` (CUDA work included: the device is synchronised)."""

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step(layer, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward+backward of ``layer`` on ``x`` (which requires grad) with upstream
    gradient ``grad``: the output and the input gradient."""
    x.grad = None
    out, _ = layer(x)
    out.backward(grad)
    return out.detach(), x.grad


def layer_seconds(
    layer, x: torch.Tensor, grad: torch.Tensor, device: torch.device, repeats: int
) -> tuple[float, float]:
    """Median forward+backward and forward-only time of ``layer`` on ``x``."""

    def forward_only():
        with torch.no_grad():
            layer(x)

    return (
        median_seconds(lambda: step(layer, x, grad), device, repeats),
        median_seconds(forward_only, device, repeats),
    )


def interleaved_medians(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median wall time of each of ``fns`` (name -> callable), timed in turn within each of
    ``repeats`` rounds, so that a machine's drift (frequency, a neighbour) falls on all of
    them alike rather than on whichever ran last."""
    for fn in fns.values():
        median_seconds(fn, device, repeats=1, warmup=2)  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_seconds(fn, device, repeats=1, warmup=0))
    return {name: statistics.median(values) for name, values in times.items()}


def compare_layers(
    layers: dict, device: torch.device, repeats: int, batch: int, seq: int, dim: int
) -> dict[str, dict[str, float]]:
    """Print forward+backward and forward-only medians of each layer, with ratios to the
    first, on a dense upstream gradient (out.sum() would give a stride-0 gradient that
    flatters every implementation); the layers are timed in turn within each repeat
    (:func:`interleaved_medians`). Returns them (seconds) by layer."""
    x = torch.randn(batch, seq, dim, device=device, requires_grad=True)
    grad = torch.randn(batch, seq, dim, device=device)
    layers = {name: layer.to(device) for name, layer in layers.items()}

    def forward_only(layer):
        with torch.no_grad():
            layer(x)

    both = interleaved_medians(
        {name: (lambda layer=layer: step(layer, x, grad)) for name, layer in layers.items()},
        device,
        repeats,
    )
    forward = interleaved_medians(
        {name: (lambda layer=layer: forward_only(layer)) for name, layer in layers.items()},
        device,
        repeats,
    )
    print(f"{'layer':<18}{'fwd+bwd ms':>12}{'ratio':>8}{'fwd ms':>10}{'ratio':>8}")
    measured = {name: {"seconds": both[name], "forward_seconds": forward[name]} for name in layers}
    first = next(iter(measured.values()))
    for name, times in measured.items():
        print_row(name, times, first)
    return measured


def print_row(name: str, times: dict[str, float], base: dict[str, float]) -> None:
    """One row of :func:`compare_layers`' table: ``times`` (seconds, as it returns them) in
    milliseconds, with their ratios to ``base``'s."""
    print(
        f"{name:<18}{times['seconds'] * 1e3:>12.1f}{times['seconds'] / base['seconds']:>7.2f}x"
        f"{times['forward_seconds'] * 1e3:>10.1f}"
        f"{times['forward_seconds'] / base['forward_seconds']:>7.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=240)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--dim", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sweep", action="store_true", help="the (batch, dim) grid of SWEEP")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.sweep:
        print(f"seq {args.seq}, fp32, {args.threads} threads, torch {torch.__version__}")
        for batch, dim in SWEEP:
            print(f"\nbatch {batch}, dim {dim}")
            fused_layer = MLSTM(dim, dim, implementation="fused")
            layers = {
                "nn.LSTM": nn.LSTM(dim, dim, batch_first=True),
                "MLSTM fused, C++": fused_layer,
                "MLSTM fused, Py": PythonLoops(fused_layer),
            }
            compare_layers(layers, torch.device("cpu"), args.repeats, batch, args.seq, dim)
        return
    D = args.dim
    layers = {"nn.LSTM": nn.LSTM(D, D, batch_first=True)}
    for impl in ("reference", "fused"):
        layers[f"MLSTM {impl}"] = MLSTM(D, D, implementation=impl)
    print(
        f"batch {args.batch}, seq {args.seq}, dim {D}, fp32, {args.threads} threads, "
        f"torch {torch.__version__}"
    )
    compare_layers(layers, torch.device("cpu"), args.repeats, args.batch, args.seq, D)


if __name__ == "__main__":
    main()
