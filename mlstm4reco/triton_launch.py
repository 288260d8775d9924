"""How the Triton kernels of :mod:`mlstm4reco.triton_mlstm` launch: the precision of their
matrix products, their tile sizes and variants (:func:`launch_options`, the hook
``benchmarks/gpu.py --sweep`` tunes with) and the defaults (:func:`_launch`), the
configuration measured fastest at fp32 accuracy on an H200 (docs/layer.md). Plain Python:
planning a launch needs neither Triton nor a GPU."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["precision", "dot_precision", "launch_options", "overrides_key", "resident_bytes"]

PRECISIONS = ("tf32x3", "ieee", "tf32")
_precision: str | None = (
    None  # set by dot_precision; None: as PyTorch's float32 matmuls (precision())
)


def precision() -> str:
    """The precision of the kernels' matrix products now: the innermost
    :func:`dot_precision` block's or, outside any, PyTorch's float32 matmul setting
    (``torch.set_float32_matmul_precision``): ``'highest'``, PyTorch's default, gives
    ``'tf32x3'`` (fp32 accuracy); ``'high'`` and ``'medium'``, with which PyTorch's own
    float32 matmuls may use TF32 (or bfloat16), give ``'tf32'``, one TF32 product
    (~1e-3 relative error, as cuDNN's LSTM has by default)."""
    if _precision is not None:
        return _precision
    return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"


@contextlib.contextmanager
def dot_precision(precision: str):
    """Within the block, the kernels' matrix products use ``precision``: ``'tf32x3'``,
    ``'ieee'`` or ``'tf32'``, whatever PyTorch's float32 matmul setting (:func:`precision`).
    A layer's backward uses its forward's precision."""
    global _precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous, _precision = _precision, precision
    try:
        yield
    finally:
        _precision = previous


#: the kernels whose launches :func:`launch_options` sets, each on its own or both at once
KERNELS = ("forward", "backward")
_launch_overrides: dict[str, dict[str, int]] = {kernel: {} for kernel in KERNELS}
TUNABLE = (
    "BLOCK_B",
    "KC",
    "K_STAGES",
    "SPLIT",
    "WAIT",
    "STATIC_H",
    "RESIDENT",
    "PREFETCH",
    "POLL",
    "BATCHED",
    "X3",
    "num_warps",
    "num_stages",
)
#: the options that take one of a few values
CHOICES = {
    "WAIT": (0, 1),
    "STATIC_H": (0, 1),
    "RESIDENT": (0, 1),
    "PREFETCH": (0, 1),
    "POLL": (0, 1),
    "BATCHED": (0, 1),
    "X3": (0, 1),
}


def _check(options: dict, where: str) -> None:
    """ValueError unless each of ``options`` is one of :data:`TUNABLE` with a value it takes."""
    unknown = set(options) - set(TUNABLE)
    if unknown:
        raise ValueError(f"launch_options{where} takes {TUNABLE}, got {sorted(unknown)}")
    for name, value in options.items():
        if name in CHOICES:
            if value not in CHOICES[name] or isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"launch_options{where}: {name} must be one of {CHOICES[name]}, got {value!r}"
                )
            continue
        smallest = 16 if name in ("BLOCK_B", "KC") else 1
        power_of_two = name in ("BLOCK_B", "KC", "SPLIT", "num_warps")
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < smallest
            or (power_of_two and value & (value - 1))
        ):
            kind = "a power of two" if power_of_two else "an integer"
            raise ValueError(
                f"launch_options{where}: {name} must be {kind} of at least {smallest}, got "
                f"{value!r}"
            )


@contextlib.contextmanager
def launch_options(forward: dict | None = None, backward: dict | None = None, **options: int):
    """Within the block, the kernels launch with these tile sizes and options in place of
    :func:`_launch`'s: the hook ``benchmarks/gpu.py --sweep`` tunes with. ``options``
    apply to both kernels, ``forward`` and ``backward`` (dicts of the same options) to one
    of them, over ``options``; a layer's backward uses the options in force at its forward.

    Any of :data:`TUNABLE`. BLOCK_B, KC, SPLIT, num_warps: powers of two, at least 16 for
    BLOCK_B and KC, KC at most the padded hidden size, at least 16 hidden units per program
    of a SPLIT; K_STAGES, num_stages: at least 1. WAIT, STATIC_H, RESIDENT, PREFETCH, POLL,
    BATCHED and X3 take 0 or 1 (:data:`CHOICES`); POLL, BATCHED and X3 need the weights
    resident (RESIDENT=1). What each variant does and what it measured: docs/layer.md.

    Raises
    ------
    ValueError
        An option it does not take, or a value the option does not take (named).
    """
    per_kernel = {
        "forward": {} if forward is None else forward,
        "backward": {} if backward is None else backward,
    }
    for kernel, specific in per_kernel.items():
        if not isinstance(specific, dict):
            raise ValueError(
                f"launch_options: {kernel} must be a dict of options, got {specific!r}"
            )
        _check(specific, f"({kernel}=...)")
    _check(options, "")
    global _launch_overrides
    previous = _launch_overrides
    _launch_overrides = {
        kernel: {**previous[kernel], **options, **per_kernel[kernel]} for kernel in KERNELS
    }
    try:
        yield
    finally:
        _launch_overrides = previous


def overrides_key() -> tuple:
    """The launch options in force (:func:`launch_options`), hashable."""
    return tuple((kernel, tuple(sorted(_launch_overrides[kernel].items()))) for kernel in KERNELS)


#: the fewest hidden units a program of a split tile gets by default, by the precision of
#: the products (the splits measured fastest on an H200: docs/layer.md)
MIN_UNITS = {"tf32x3": 32, "ieee": 32, "tf32": 16}


def _split(
    block_h: int, tiles: int, multiprocessors: int, fewest: int = MIN_UNITS["tf32x3"]
) -> int:
    """How many programs share each tile's hidden units: the most (a power of two, at
    least ``fewest`` units each: :data:`MIN_UNITS`) with which every program of the grid
    has a multiprocessor of its own, so that all are resident at once (their barriers
    wait for each other)."""
    split = 1
    while block_h // (2 * split) >= fewest and tiles * 2 * split <= multiprocessors:
        split *= 2
    return split


def resident_bytes(block_h: int, block_j: int, products: str = "tf32x3") -> int:
    """The shared memory the kernels ask for with their weights resident
    (RESIDENT=1) and their products in precision ``products``: a program keeps five
    BLOCK_H x BLOCK_J blocks of weights; in tf32x3 (and ieee) Triton 3.6 (PyTorch 2.11's)
    lays them out twice (3.9 once), one TF32 product once, and the kernels' other buffers
    take under 16 KiB (``test_resident_weights_take_what_resident_bytes_says``)."""
    return (1 if products == "tf32" else 2) * 5 * block_h * block_j * 4 + 16 * 1024


def _launch(
    H: int, B: int = 1, multiprocessors: int = 0, kernel: str = "forward", shared_memory: int = 0
) -> dict:
    """The tile sizes and launch options of the ``'forward'`` or ``'backward'`` kernel at
    hidden size H for B sequences on a GPU with ``multiprocessors`` multiprocessors (0: the
    hidden units unsplit) and ``shared_memory`` bytes of shared memory a block may have
    (0: the weights never resident), with :func:`launch_options`' overrides for that
    kernel; the defaults follow the tile, the split and the products' precision now
    (:func:`precision`: the split and whether the weights fit in shared memory depend on
    it), and are the fastest measured on an H200 (``benchmarks/gpu.py --sweep``;
    docs/results/gpu_h200/NOTES.md)."""
    overrides, products = _launch_overrides[kernel], precision()
    block_h = max(16, 1 << (H - 1).bit_length())  # the next power of two (no Triton needed to plan)
    block_b = overrides.get("BLOCK_B", 16)  # tl.dot's smallest tile: more tiles, more SMs
    split = overrides.get(
        "SPLIT", _split(block_h, -(-B // block_b), multiprocessors, MIN_UNITS[products])
    )
    block_j = block_h // split  # each program's hidden units
    launch = dict(
        BLOCK_B=block_b,
        BLOCK_H=block_h,
        # the products go KC columns of their left operand at a time: 16 (32 spilled at
        # block_j = 128 with Triton 3.6, torch 2.11's), 32 for the narrower slices of a split
        KC=32 if split > 1 and block_j <= 64 else 16,
        K_STAGES=2,  # the next chunk is loaded while this one is multiplied
        SPLIT=split,  # programs per tile, each with BLOCK_H / SPLIT of the hidden units
        WAIT=1,  # at the barriers (0: for timing only)
        STATIC_H=1,  # H compiled in (one compilation per size; 0: a kernel argument)
        # the weights loaded once where they fit (0: re-read each step, KC rows at a time):
        # H up to 128 (at 256 they spill kilobytes)
        RESIDENT=int(
            block_h <= 128 and resident_bytes(block_h, block_j, products) <= shared_memory
        ),
        PREFETCH=1,  # a step's inputs loaded a step ahead (0: in that step)
        POLL=0,  # barriers on a counter (1: the data polled, with the weights resident)
        BATCHED=0,  # the backward's gate products chained (1: batched, with the weights resident)
        X3=0,  # Triton's tf32x3 (1: three TF32 products by hand, with the weights resident)
        num_warps=4
        if block_j <= 32
        else 8
        if block_j <= 128
        else 16,  # no spills on sm_90 up to 128
        num_stages=1,  # loops without their own setting (the time loop) are not pipelined
        enable_fp_fusion=True,  # a * b + c as one FMA (Triton 3.9's default; 3.10 turns it off)
    )
    launch.update(overrides)
    launch["STATIC_H"] = H if launch["STATIC_H"] else 0  # the kernels' constant: the size itself
    if launch["KC"] > block_h:
        raise ValueError(f"KC={launch['KC']} is wider than the padded hidden size {block_h}")
    if block_j < 16:
        raise ValueError(
            f"SPLIT={split} leaves fewer than 16 of the {block_h} padded hidden units to each "
            "program"
        )
    # the opt-in variants: off where they would do nothing, refused where they cannot run
    if split == 1:  # no program reads what another wrote
        launch["POLL"] = 0
    if kernel == "forward":  # its four gate products have an accumulator each already
        launch["BATCHED"] = 0
    if products != "tf32x3":  # X3 is tf32x3 by hand
        launch["X3"] = 0
    for option in ("POLL", "BATCHED", "X3"):
        halves = option == "BATCHED"  # its products go over halves of the units, at least 16 each
        if launch[option] and (not launch["RESIDENT"] or (halves and block_h < 32)):
            raise ValueError(
                f"{option}=1 needs the kernels' weights resident"
                f"{' and at least 32 padded hidden units' if halves else ''}, got "
                f"RESIDENT={launch['RESIDENT']} at H={H}"
            )
    launch["launch_cooperative_grid"] = (
        split > 1
    )  # CUDA refuses a grid that is not all resident at once
    return launch
