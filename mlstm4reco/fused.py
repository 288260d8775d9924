"""The fused path of :class:`~mlstm4reco.layers.MLSTM` (its default on the CPU): one mLSTM
layer over a whole sequence as an autograd function with a hand-written backward pass.

The input projections of all time steps are one matmul before the time loop; the per-step
work, forward and backward, is the two recurrent matmuls and the gate arithmetic, written
into preallocated buffers; after the backward loop each weight gradient is one matmul
over all steps (:func:`input_and_weight_gradients`, shared with the Triton path). On the
CPU the large float32 matmuls go to oneDNN (:mod:`mlstm4reco.matmul`).
"""

from __future__ import annotations

import threading

import torch
from torch.autograd.function import once_differentiable

from mlstm4reco import loop_extension, matmul

__all__ = ["FusedMLSTM", "layer", "input_and_weight_gradients"]

ROWWISE_MAX_HIDDEN = 64
"""Hidden sizes up to this run the C++ loops row-wise: each group of batch rows takes its
whole step, the two recurrent matmuls included, in the extension's own small kernels
(no ATen call per step); larger ones call ATen's matmuls over the batch each step."""


def layer(
    cell, x_tm: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cell``'s layer (an :class:`~mlstm4reco.layers.MLSTMCell`) over the time-major
    ``x_tm`` (T, B, I) from the states ``h`` and ``c`` (B, H): (h_1..h_T, c_1..c_T), each
    (T, B, H)."""
    return FusedMLSTM.apply(
        x_tm, cell.weight_ih, cell.bias_ih, h, c, cell.weight_hm, cell.bias_mh, cell.weight_mh
    )


_scratch = threading.local()


def workspace(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A per-thread buffer reused across calls, for temporaries of the backward pass
    (nothing returned or saved aliases it). Large fresh allocations are page-faulted in
    on every call on the CPU; a reused one is not."""
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (name, like.device, like.dtype)
    buffer = buffers.get(key)
    if buffer is None or buffer.shape != shape:
        buffer = buffers[key] = like.new_empty(shape)
    return buffer


class FusedMLSTM(torch.autograd.Function):
    """One mLSTM layer over a whole sequence with a hand-written backward pass.

    Time-major: ``x`` is (T, B, I); returns every hidden state and every cell state, each
    (T, B, H). The input projection of all steps is one matmul; the per-step work is the
    two recurrent matmuls and the gate arithmetic, written into preallocated buffers.
    tanh is computed as 2 * sigmoid(2 z) - 1 (exact in real arithmetic; on the CPU
    sigmoid is about 3x cheaper than tanh and the gates need sigmoid anyway).
    """

    @staticmethod
    def forward(ctx, x, weight_ih, bias_ih, h0, c0, weight_hm, bias_mh, weight_mh):
        T, B, _ = x.shape
        H = weight_hm.shape[0]
        flat_x = x.reshape(T * B, -1)
        # xp[t] = [W_mx x_t + b_mx | gate pre-activations from x_t]; the gate part is
        # overwritten in place by the gate activations i, f, g, o.
        xp = matmul.mm(flat_x, weight_ih.t())
        if bias_ih is not None:
            xp.add_(bias_ih)
        xp = xp.view(T, B, 5 * H)  # (T, B, 5H)
        hs = x.new_empty(T + 1, B, H)  # hs[t + 1] = h_t; hs[0] = h0
        cs = x.new_empty(T + 1, B, H)
        tanh_cs = x.new_empty(T, B, H)
        mh = x.new_empty(T, B, H)  # W_mh h_{t-1} + b_mh
        ms = x.new_empty(T, B, H)  # m_t
        hs[0] = h0
        cs[0] = c0
        w_hm_t, w_mh_t = weight_hm.t(), weight_mh.t()
        compiled = _compiled_loops(x)
        if compiled is None:
            _forward_loop(xp, hs, cs, tanh_cs, mh, ms, w_hm_t, bias_mh, w_mh_t)
        else:
            compiled.forward_loop(
                xp, hs, cs, tanh_cs, mh, ms, w_hm_t, bias_mh, w_mh_t, ROWWISE_MAX_HIDDEN
            )
        ctx.save_for_backward(flat_x, weight_ih, xp, hs, cs, tanh_cs, mh, ms, weight_hm, weight_mh)
        ctx.has_bias = (bias_ih is not None, bias_mh is not None)
        ctx.set_materialize_grads(False)
        return hs[1:], cs[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs, grad_cs):
        flat_x, weight_ih, xp, hs, cs, tanh_cs, mh, ms, weight_hm, weight_mh = ctx.saved_tensors
        T, B, H5 = xp.shape
        H = H5 // 5
        grad_xp = workspace("grad_xp", (T, B, 5 * H), flat_x)
        grad_m = workspace("grad_m", (T, B, H), flat_x)  # d loss / d m_t
        grad_mh = workspace("grad_mh", (T, B, H), flat_x)  # d loss / d (W_mh h_{t-1} + b_mh)
        arguments = (
            xp,
            cs,
            tanh_cs,
            None if grad_hs is None else grad_hs.contiguous(),
            None if grad_cs is None else grad_cs.contiguous(),
            grad_xp,
            grad_m,
            grad_mh,
            weight_hm.contiguous(),
            weight_mh.contiguous(),
        )
        compiled = _compiled_loops(flat_x)
        if compiled is None:
            dh, dc = _backward_loop(*arguments)
        else:
            dh, dc = compiled.backward_loop(*arguments, ROWWISE_MAX_HIDDEN)
        torch.mul(grad_m, mh, out=grad_xp[:, :, :H])
        return input_and_weight_gradients(
            flat_x, weight_ih, grad_xp, grad_mh, ms, hs, ctx.has_bias, dh, dc
        )


def _forward_loop(xp, hs, cs, tanh_cs, mh, ms, w_hm_t, bias_mh, w_mh_t) -> None:
    """The forward time loop in Python (the C++ loop's reference): writes hs[1:], cs[1:],
    tanh_cs, mh, ms, and the gate activations into xp[:, :, H:]."""
    H = hs.shape[2]
    for t in range(xp.shape[0]):
        if bias_mh is None:
            torch.mm(hs[t], w_hm_t, out=mh[t])
        else:
            torch.addmm(bias_mh, hs[t], w_hm_t, out=mh[t])
        torch.mul(xp[t, :, :H], mh[t], out=ms[t])
        gates = xp[t, :, H:]  # (B, 4H)
        gates.addmm_(ms[t], w_mh_t)
        g = gates[:, 2 * H : 3 * H]
        g.mul_(2)
        gates.sigmoid_()
        g.mul_(2).sub_(1)  # tanh(z) = 2 sigmoid(2z) - 1
        torch.mul(gates[:, H : 2 * H], cs[t], out=cs[t + 1])
        cs[t + 1].addcmul_(gates[:, :H], g)
        tanh_c = tanh_cs[t]
        torch.mul(cs[t + 1], 2, out=tanh_c)
        tanh_c.sigmoid_().mul_(2).sub_(1)
        torch.mul(gates[:, 3 * H :], tanh_c, out=hs[t + 1])


def _backward_loop(
    xp, cs, tanh_cs, grad_hs, grad_cs, grad_xp, grad_m, grad_mh, weight_hm, weight_mh
):
    """The backward time loop in Python (the C++ loop's reference): writes the gates'
    pre-activation gradients into grad_xp[:, :, H:], grad_m and grad_mh; returns the
    gradients of h0 and c0."""
    T, B, H5 = xp.shape
    H = H5 // 5
    acts = xp[:, :, H:]  # (T, B, 4H): i, f, g, o
    # Small per-step buffers (cache resident): T-sized temporaries would cost more in
    # page faults than they save in dispatches.
    dact = xp.new_empty(B, 4 * H)  # activation derivatives: s (1 - s), or 1 - g^2 for g
    upstream = xp.new_empty(B, 4 * H)  # d loss / d (i, f, g, o)
    dh = xp.new_zeros(B, H)
    dc = xp.new_zeros(B, H)
    for t in range(T - 1, -1, -1):
        a = acts[t]
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        tanh_c = tanh_cs[t]
        if grad_hs is not None:
            dh = dh + grad_hs[t]
        if grad_cs is not None:
            dc = dc + grad_cs[t]
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        torch.mul(a, a, out=dact)
        torch.sub(a, dact, out=dact)
        torch.mul(g, g, out=dact[:, 2 * H : 3 * H])
        torch.sub(1, dact[:, 2 * H : 3 * H], out=dact[:, 2 * H : 3 * H])
        torch.mul(dc, g, out=upstream[:, :H])
        torch.mul(dc, cs[t], out=upstream[:, H : 2 * H])
        torch.mul(dc, i, out=upstream[:, 2 * H : 3 * H])
        torch.mul(dh, tanh_c, out=upstream[:, 3 * H :])
        dgates = grad_xp[t, :, H:]  # (B, 4H) pre-activation gradients
        torch.mul(upstream, dact, out=dgates)
        torch.mm(dgates, weight_mh, out=grad_m[t])
        torch.mul(grad_m[t], xp[t, :, :H], out=grad_mh[t])
        dh = torch.mm(grad_mh[t], weight_hm)
        dc = dc * f
    return dh, dc


def _compiled_loops(like: torch.Tensor):
    """The C++ loops (:mod:`mlstm4reco.loop_extension`) for CPU float tensors, else None."""
    if like.device.type != "cpu" or like.dtype not in (torch.float32, torch.float64):
        return None
    return loop_extension.loops()


def input_and_weight_gradients(
    flat_x, weight_ih, grad_xp, grad_mh, ms, hs, has_bias, grad_h0, grad_c0
):
    """The gradients of an mLSTM layer's forward arguments once the recurrence is done:
    ``grad_xp`` (T, B, 5H) and ``grad_mh`` (T, B, H) hold the gradients of the input
    projections and of W_mh h_{t-1} + b_mh at every step; each weight gradient is one
    matmul over all T * B rows. Returns them in the forward's argument order."""
    T, B, H5 = grad_xp.shape
    H = H5 // 5
    grad_xp_flat = grad_xp.view(T * B, 5 * H)
    grad_mh_flat = grad_mh.view(T * B, H)
    grad_x = matmul.mm(grad_xp_flat, weight_ih).view(T, B, -1)
    grad_weight_ih = matmul.mm(grad_xp_flat.t(), flat_x)
    # all 5H rows and the last 4H kept: a strided left factor is oneDNN's slow case
    grad_weight_mh = matmul.mm(grad_xp_flat.t(), ms.view(T * B, H))[H:]
    grad_weight_hm = matmul.mm(grad_mh_flat.t(), hs[:-1].reshape(T * B, H))
    grad_bias_ih = grad_xp_flat.sum(0) if has_bias[0] else None
    grad_bias_mh = grad_mh_flat.sum(0) if has_bias[1] else None
    return (
        grad_x,
        grad_weight_ih,
        grad_bias_ih,
        grad_h0,
        grad_c0,
        grad_weight_hm,
        grad_bias_mh,
        grad_weight_mh,
    )
