"""A GPU path for :class:`~mlstm4reco.layers.MLSTM`: persistent Triton kernels
(:mod:`mlstm4reco.triton_kernels`), their launch, their autograd function, and the check
``implementation='auto'`` runs before it trusts them on a device.

The fused path (:mod:`mlstm4reco.fused`) launches a handful of small kernels per time
step, which on a GPU makes it bound by launch latency. Here each of the forward and the
backward recurrences is one kernel launch. What is not recurrent stays in PyTorch, as in
the fused path: the input projection of all steps before the kernel (one matmul) and,
after the backward kernel, the weight gradients (one matmul each over all steps).

On a GPU with multiprocessors to spare, each tile's hidden units are split across
programs that meet at barriers in global memory; the grid is launched cooperatively, so
CUDA refuses it rather than let programs wait for others that are not resident. How the
kernels launch (tile sizes, the split, their variants, the precision of the products) is
planned in :mod:`mlstm4reco.triton_launch`, whose names are re-exported here;
``benchmarks/kernel_build.py`` compiles the kernels for a GPU without one.

Matrix products run on tensor cores as ``tf32x3`` by default (three TF32 products that
recover fp32 accuracy), or as one TF32 product (``'tf32'``) where PyTorch's float32
matmuls may use TF32 (``torch.set_float32_matmul_precision('high')``; :func:`precision`);
``with dot_precision('ieee'):`` gives plain fp32 FMA products, and any of the three
whatever PyTorch's setting. With ``TRITON_INTERPRET=1`` the same kernels run on CPU
tensors in Triton's interpreter: that is how the test suite checks their numbers on
machines without a GPU (``MLSTM(..., implementation='triton')``).
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import TYPE_CHECKING

import torch

from mlstm4reco import fused
from mlstm4reco.triton_launch import (  # the launch planning, re-exported where users find it
    CHOICES,
    KERNELS,
    MIN_UNITS,
    PRECISIONS,
    TUNABLE,
    _launch,
    _split,
    dot_precision,
    launch_options,
    overrides_key,
    precision,
    resident_bytes,
)

if TYPE_CHECKING:  # the cell's class, for annotations only: layers imports this module
    from mlstm4reco.layers import MLSTMCell

try:
    import triton
except ImportError:  # the portable paths need no Triton
    triton = None

__all__ = [
    "CHOICES",
    "KERNELS",
    "MIN_UNITS",
    "PRECISIONS",
    "TUNABLE",
    "_launch",
    "_split",
    "overrides_key",
    "resident_bytes",
    "available",
    "usable",
    "precision",
    "dot_precision",
    "launch_options",
    "TritonMLSTM",
    "layer",
    "check",
    "checked_layer_or_fused",
    "MAX_AUTO_HIDDEN",
]

#: MLSTM(implementation='auto') uses the kernels up to this hidden size (compiled for
#: sm_90 they keep within registers up to 128 and spill a little at 256; beyond, untested).
MAX_AUTO_HIDDEN = 256


def indexable(T: int, B: int, H: int) -> bool:
    """Whether the kernels' int32 offsets reach every element of the largest buffer, the
    (T, B, 5H) input projections."""
    return T * B * 5 * H < 2**31


def available() -> bool:
    """Whether Triton is installed."""
    return triton is not None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def usable(x: torch.Tensor) -> bool:
    """Whether the kernels can run on ``x``: Triton on a CUDA tensor, or Triton's
    interpreter (``TRITON_INTERPRET=1``) on a CPU tensor."""
    return available() and (x.is_cuda or (interpreted() and x.device.type == "cpu"))


if triton is not None:
    from mlstm4reco import triton_kernels


def _kernel(name: str):
    """The ``'forward'`` or ``'backward'`` kernel."""
    return {"forward": triton_kernels.forward_kernel, "backward": triton_kernels.backward_kernel}[
        name
    ]


def _run(name: str, launch: dict, B: int, H: int, device: torch.device, *args, **flags) -> None:
    """Launch the ``'forward'`` or ``'backward'`` kernel over the tiles of B sequences
    (times the split of their hidden units) with zeroed barrier counters, as ``launch``
    says."""
    tiles = triton.cdiv(B, launch["BLOCK_B"])
    counters = torch.zeros(tiles, dtype=torch.int32, device=device)
    options = dict(launch)
    if not options["launch_cooperative_grid"]:
        del options["launch_cooperative_grid"]  # the interpreter takes no such option
    _kernel(name)[(tiles, options["SPLIT"])](*args, counters, **flags, **options)


def _unwritten(*buffers: torch.Tensor) -> None:
    """Fill ``buffers`` (float32, any strides) with the bits the kernels' POLL reads as
    not yet written (:data:`~mlstm4reco.triton_kernels.UNWRITTEN`)."""
    for buffer in buffers:
        buffer.view(torch.int32).fill_(triton_kernels.UNWRITTEN.value)


def _multiprocessors(device: torch.device) -> int:
    """The GPU's multiprocessor count (0 on the CPU: the interpreter runs programs one by
    one, so the hidden units are never split there)."""
    return (
        torch.cuda.get_device_properties(device).multi_processor_count
        if device.type == "cuda"
        else 0
    )


def _shared_memory(device: torch.device) -> int:
    """The shared memory a block may have on the GPU, in bytes, opting in (0 on the CPU,
    where the interpreter's kernels re-read the weights each step unless told otherwise)."""
    return (
        torch.cuda.get_device_properties(device).shared_memory_per_block_optin
        if device.type == "cuda"
        else 0
    )


class TritonMLSTM(torch.autograd.Function):
    """One mLSTM layer over a whole time-major sequence (as
    :class:`~mlstm4reco.layers._FusedMLSTM`, same arguments and outputs), each recurrence
    one persistent Triton kernel."""

    @staticmethod
    def forward(ctx, x, weight_ih, bias_ih, h0, c0, weight_hm, bias_mh, weight_mh):
        if x.dtype != torch.float32:
            raise ValueError(f"the Triton mLSTM kernels run in float32, got {x.dtype}")
        T, B, _ = x.shape
        H = weight_hm.shape[0]
        if T == 0:  # the kernels read the first step's inputs before their loop (PREFETCH)
            raise ValueError(
                f"the Triton mLSTM kernels need at least one time step, got x of shape "
                f"{tuple(x.shape)}"
            )
        if not indexable(T, B, H):
            raise ValueError(
                f"the Triton mLSTM kernels index with int32: T * B * 5H must be below 2**31, "
                f"got T={T}, B={B}, H={H}"
            )
        flat_x = x.reshape(T * B, -1)
        xp = (
            flat_x.mm(weight_ih.t())
            if bias_ih is None
            else torch.addmm(bias_ih, flat_x, weight_ih.t())
        )
        xp = xp.view(T, B, 5 * H).contiguous()
        hs = x.new_empty(T + 1, B, H)
        cs = x.new_empty(T + 1, B, H)
        hs[0], cs[0] = h0, c0
        acts = x.new_empty(T, B, 4 * H)
        tanh_cs, mh, ms = (x.new_empty(T, B, H) for _ in range(3))
        w_hm, w_mh = weight_hm.contiguous(), weight_mh.contiguous()
        b_mh = bias_mh.contiguous() if bias_mh is not None else w_hm  # unread without a bias
        gpu = dict(
            multiprocessors=_multiprocessors(x.device), shared_memory=_shared_memory(x.device)
        )
        ctx.precision, ctx.launch = precision(), _launch(H, B, kernel="backward", **gpu)
        launch = _launch(H, B, kernel="forward", **gpu)
        if launch["POLL"]:  # what the programs exchange: h_t and m_t
            _unwritten(hs[1:], ms)
        _run(
            "forward",
            launch,
            B,
            H,
            x.device,
            xp,
            w_hm,
            b_mh,
            w_mh,
            hs,
            cs,
            acts,
            tanh_cs,
            mh,
            ms,
            T,
            B,
            H,
            HAS_B_MH=bias_mh is not None,
            PRECISION=ctx.precision,
        )
        ctx.save_for_backward(flat_x, weight_ih, xp, acts, hs, cs, tanh_cs, mh, ms, w_hm, w_mh)
        ctx.has_bias = (bias_ih is not None, bias_mh is not None)
        ctx.set_materialize_grads(False)
        return hs[1:], cs[1:]

    @staticmethod
    def backward(ctx, grad_hs, grad_cs):
        flat_x, weight_ih, xp, acts, hs, cs, tanh_cs, mh, ms, w_hm, w_mh = ctx.saved_tensors
        T, B, H5 = xp.shape
        H = H5 // 5
        grad_xp = xp.new_empty(T, B, 5 * H)
        grad_mh = xp.new_empty(T, B, H)
        grad_h0, grad_c0 = xp.new_empty(B, H), xp.new_empty(B, H)
        if ctx.launch[
            "POLL"
        ]:  # what the programs exchange: the gate gradients, that of W_mh h_{t-1}
            _unwritten(grad_xp[..., H:], grad_mh)
        grad_hs = grad_hs.contiguous() if grad_hs is not None else None
        grad_cs = grad_cs.contiguous() if grad_cs is not None else None
        _run(
            "backward",
            ctx.launch,
            B,
            H,
            xp.device,
            grad_hs if grad_hs is not None else xp,
            grad_cs if grad_cs is not None else xp,
            xp,
            acts,
            cs,
            tanh_cs,
            mh,
            w_hm,
            w_mh,
            grad_xp,
            grad_mh,
            grad_h0,
            grad_c0,
            T,
            B,
            H,
            HAS_GRAD_HS=grad_hs is not None,
            HAS_GRAD_CS=grad_cs is not None,
            PRECISION=ctx.precision,
        )
        return (
            *fused.input_and_weight_gradients(
                flat_x, weight_ih, grad_xp, grad_mh, ms, hs, ctx.has_bias, grad_h0, grad_c0
            ),
        )


def layer(
    cell, x_tm: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cell``'s layer over ``x_tm`` as :func:`mlstm4reco.fused.layer`, in the kernels."""
    return TritonMLSTM.apply(
        x_tm, cell.weight_ih, cell.bias_ih, h, c, cell.weight_hm, cell.bias_mh, cell.weight_mh
    )


#: (device, input size, hidden size, bias, multiplicative bias) -> None when the kernels passed
#: :func:`check` there, else why they did not; 'auto' then uses the fused path.
verdicts: dict[tuple, str | None] = {}


def _largest_relative_difference(actual, expected) -> float:
    """The largest difference between paired tensors, relative to each expected tensor's
    largest magnitude."""
    return max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
        for a, b in zip(actual, expected)
    )


def check(cell: MLSTMCell, device: torch.device) -> str | None:
    """Run the Triton kernels once, forward and backward, on a small random problem (3
    steps, 19 sequences: a full tile and a partly masked one) with a copy of ``cell``'s
    weights, against the fused path: both state sequences and every input and parameter
    gradient, with the kernels' default products (tf32x3), once with each program of the
    grid on all hidden units and once with them split across programs as far as this GPU
    allows (see :func:`_split`). None when every tensor agrees
    to 1e-3 of its largest value, else why not. This is how 'auto' guards against kernels
    that fail, or build but compute wrongly, on a device or Triton version the test suite
    never ran on."""
    generator = torch.Generator().manual_seed(0)
    H = cell.hidden_size

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    def run(path):
        probe = copy.deepcopy(cell).to(device)
        probe.zero_grad(set_to_none=True)
        inputs = [t.clone().requires_grad_(True) for t in (x, h, c)]
        states = path(probe, *inputs)
        torch.autograd.backward(states, upstream)
        return (
            [s.detach() for s in states]
            + [t.grad for t in inputs]
            + [p.grad for p in probe.parameters()]
        )

    x, h, c = randn(3, 19, cell.input_size), randn(19, H), randn(19, H)
    upstream = (randn(3, 19, H), randn(3, 19, H))
    try:
        split = _launch(H, 19, _multiprocessors(device))["SPLIT"]
        with torch.inference_mode(False), torch.enable_grad(), dot_precision("tf32x3"):
            expected = run(fused.layer)
            for programs in sorted({1, split}):
                with launch_options(SPLIT=programs):
                    worst = _largest_relative_difference(run(layer), expected)
                if worst > 1e-3:
                    return (
                        f"they differ from the fused path by {worst:.1e} of a tensor's largest "
                        "value "
                        f"(hidden units split across {programs} programs)"
                    )
    except Exception as error:  # noqa: BLE001 - any failure of the kernels is a verdict
        return f"{type(error).__name__}: {error}"
    return None


def checked_layer_or_fused(cell, x_tm: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """'auto' on a GPU: :func:`layer` where the kernels passed :func:`check` on this device
    for this shape of cell under the launch options in force (:func:`launch_options`), else
    :func:`mlstm4reco.fused.layer` (one warning per verdict)."""
    key = (
        str(x_tm.device),
        cell.input_size,
        cell.hidden_size,
        cell.bias is not None,
        cell.multiplicative_bias,
        overrides_key(),
    )
    if key not in verdicts:
        verdicts[key] = check(cell, x_tm.device)
        if verdicts[key] is not None:
            warnings.warn(
                f"MLSTM: the Triton kernels failed their check on {x_tm.device} "
                f"({verdicts[key]}); using the fused PyTorch path instead",
                RuntimeWarning,
                stacklevel=3,
            )
    if verdicts[key] is None:
        return layer(cell, x_tm, h, c)
    return fused.layer(cell, x_tm, h, c)
