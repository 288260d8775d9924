"""Matrix products of the CPU paths (the fused mLSTM, the fused full softmax) through the
C++ extension's ``matmul`` (:mod:`mlstm4reco.loop_extension`), which gives large float32
products to oneDNN: on AMD CPUs, where MKL's sgemm (torch's default on x86) does not use
AVX-512, several times faster; elsewhere level. Small products, other dtypes and devices,
and builds without the extension take ``torch.mm``. Which one runs depends only on the
shapes and dtypes, so the same inputs give the same numbers every time.
``MLSTM4RECO_MATMUL=aten`` (or :func:`use_onednn`) sends every product to ``torch.mm``.
"""

from __future__ import annotations

import torch

from mlstm4reco import loop_extension

__all__ = ["mm", "use_onednn"]


def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, beta: float = 0.0):
    """``out = beta * out + a @ b`` for matrices (``out`` may be a strided view; with
    ``beta`` 0 its contents are ignored); a new tensor when ``out`` is None. Not
    differentiable: for the insides of autograd functions."""
    if out is None:
        out, beta = a.new_empty(a.shape[0], b.shape[1]), 0.0
    ops = loop_extension.loops() if a.device.type == "cpu" else None
    if ops is None or a.dtype != torch.float32:
        if beta == 0:
            torch.mm(a, b, out=out)
        else:
            out.addmm_(a, b, beta=beta)
    else:
        ops.matmul(a, b, out, beta)
    return out


def use_onednn(enable: bool | None = None) -> bool:
    """Whether large float32 products go to oneDNN (False without the extension or
    without oneDNN); ``enable`` sets it first, for this process."""
    ops = loop_extension.loops()
    return False if ops is None else bool(ops.use_onednn(enable))
