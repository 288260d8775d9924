"""Forward+backward time of MLSTM's implementations against torch.nn.LSTM on the CPU.

    python benchmarks/layers.py [--batch 240] [--seq 100] [--dim 120] [--threads 2] [--repeats 10]

Prints the median over ``--repeats`` runs (after warm-up) of each layer and its ratio to
``nn.LSTM`` measured in the same process. Issue target: fused <= 1.6x nn.LSTM on 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mlstm4reco.layers import MLSTM


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=240)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--dim", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, D = args.batch, args.seq, args.dim
    x = torch.randn(B, T, D, requires_grad=True)
    # A dense upstream gradient, as a loss over every step gives (out.sum() would give a
    # stride-0 gradient that flatters every implementation).
    grad = torch.randn(B, T, D)

    layers = {"nn.LSTM": nn.LSTM(D, D, batch_first=True)}
    for impl in ("reference", "fused"):
        layers[f"MLSTM {impl}"] = MLSTM(D, D, implementation=impl)

    print(f"batch {B}, seq {T}, dim {D}, fp32, {args.threads} threads, torch {torch.__version__}")
    print(f"{'layer':<18}{'fwd+bwd ms':>12}{'ratio':>8}{'fwd ms':>10}{'ratio':>8}")
    base = {}
    for name, layer in layers.items():

        def step():
            out, _ = layer(x)
            out.backward(grad)

        def forward_only():
            with torch.no_grad():
                layer(x)

        both = median_time(step, args.repeats)
        fwd = median_time(forward_only, args.repeats)
        base.setdefault("both", both)
        base.setdefault("fwd", fwd)
        print(
            f"{name:<18}{both * 1e3:>12.1f}{both / base['both']:>7.2f}x"
            f"{fwd * 1e3:>10.1f}{fwd / base['fwd']:>7.2f}x"
        )


if __name__ == "__main__":
    main()
