"""A GPU path for :class:`~mlstm4reco.layers.MLSTM`: persistent Triton kernels.

The fused CPU path (:class:`~mlstm4reco.layers._FusedMLSTM`) launches a handful of small
kernels per time step, which on a GPU makes it bound by launch latency. Here each of the
forward and the backward recurrences is one kernel launch: one program per tile of
``BLOCK_B`` sequences walks through all T steps, keeping h and c in registers and reading
the recurrent weights, which stay in the L1/L2 caches, at every step. What is not recurrent
stays in PyTorch, as in the fused path: the input projection of all steps before the
kernel (one matmul) and, after the backward kernel, the weight gradients (one matmul each
over all steps).

Matrix products use IEEE fp32 (``input_precision="ieee"``), so that the kernels give the
reference path's numbers to fp32 rounding. With ``TRITON_INTERPRET=1`` the same kernels run
on CPU tensors in Triton's interpreter: that is how the test suite checks them on machines
without a GPU (``MLSTM(..., implementation='triton')``).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the portable paths need no Triton
    triton = None

__all__ = ["available", "usable", "TritonMLSTM"]


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

    @triton.jit
    def _sigmoid(z):
        return 1.0 / (1.0 + tl.exp(-z))

    @triton.jit
    def _tanh(z):
        return 2.0 * _sigmoid(2.0 * z) - 1.0

    @triton.jit
    def _tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
        """This program's rows and the hidden columns, the masks of a (rows, H) state and
        of an (H, H) weight tile, and the offsets of the state in a (B, H) slab."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        cols = tl.arange(0, BLOCK_H)
        col_ok = cols < H
        mask = (rows < B)[:, None] & col_ok[None, :]
        wmask = col_ok[:, None] & col_ok[None, :]
        return rows, cols, mask, wmask, rows[:, None] * H + cols[None, :]

    @triton.jit
    def _forward_kernel(
        xp_ptr, w_hm_ptr, b_mh_ptr, w_mh_ptr,  # (T, B, 5H), (H, H), (H,), (4H, H)
        hs_ptr, cs_ptr, acts_ptr, tanh_cs_ptr, mh_ptr, ms_ptr,  # (T+1, B, H) x2, (T, B, 4H), (T, B, H) x3
        T, B, H,
        HAS_B_MH: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    ):
        rows, cols, mask, wmask, state = _tile(B, H, BLOCK_B, BLOCK_H)
        h = tl.load(hs_ptr + state, mask=mask, other=0.0)
        c = tl.load(cs_ptr + state, mask=mask, other=0.0)
        # (k, j) -> W[j, k]: the transposed tiles that right-multiply a (BLOCK_B, H) state
        transposed = cols[None, :] * H + cols[:, None]
        b_mh = tl.load(b_mh_ptr + cols, mask=cols < H, other=0.0) if HAS_B_MH else 0.0
        for t in range(T):
            xp_row = xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H + cols[None, :]
            w_hm_t = tl.load(w_hm_ptr + transposed, mask=wmask, other=0.0)
            mh = tl.dot(h, w_hm_t, input_precision="ieee") + b_mh
            m = tl.load(xp_row, mask=mask, other=0.0) * mh
            pre_i = tl.load(xp_row + H, mask=mask, other=0.0)
            pre_i += tl.dot(m, tl.load(w_mh_ptr + transposed, mask=wmask, other=0.0), input_precision="ieee")
            pre_f = tl.load(xp_row + 2 * H, mask=mask, other=0.0)
            pre_f += tl.dot(m, tl.load(w_mh_ptr + H * H + transposed, mask=wmask, other=0.0),
                            input_precision="ieee")
            pre_g = tl.load(xp_row + 3 * H, mask=mask, other=0.0)
            pre_g += tl.dot(m, tl.load(w_mh_ptr + 2 * H * H + transposed, mask=wmask, other=0.0),
                            input_precision="ieee")
            pre_o = tl.load(xp_row + 4 * H, mask=mask, other=0.0)
            pre_o += tl.dot(m, tl.load(w_mh_ptr + 3 * H * H + transposed, mask=wmask, other=0.0),
                            input_precision="ieee")
            i = _sigmoid(pre_i)
            f = _sigmoid(pre_f)
            g = _tanh(pre_g)
            o = _sigmoid(pre_o)
            c = f * c + i * g
            tanh_c = _tanh(c)
            h = o * tanh_c
            step = t * B * H + state
            tl.store(hs_ptr + B * H + step, h, mask=mask)
            tl.store(cs_ptr + B * H + step, c, mask=mask)
            tl.store(tanh_cs_ptr + step, tanh_c, mask=mask)
            tl.store(mh_ptr + step, mh, mask=mask)
            tl.store(ms_ptr + step, m, mask=mask)
            act_row = acts_ptr + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
            tl.store(act_row, i, mask=mask)
            tl.store(act_row + H, f, mask=mask)
            tl.store(act_row + 2 * H, g, mask=mask)
            tl.store(act_row + 3 * H, o, mask=mask)

    @triton.jit
    def _backward_kernel(
        grad_hs_ptr, grad_cs_ptr,  # (T, B, H) each, when present
        xp_ptr, acts_ptr, cs_ptr, tanh_cs_ptr, mh_ptr, w_hm_ptr, w_mh_ptr,
        grad_xp_ptr, grad_mh_ptr, grad_h0_ptr, grad_c0_ptr,  # (T, B, 5H), (T, B, H), (B, H) x2
        T, B, H,
        HAS_GRAD_HS: tl.constexpr, HAS_GRAD_CS: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    ):
        rows, cols, mask, wmask, state = _tile(B, H, BLOCK_B, BLOCK_H)
        direct = cols[:, None] * H + cols[None, :]  # (n, j) -> W[n, j]
        dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        dc = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        for step in range(T):
            t = T - 1 - step
            at = t * B * H + state
            if HAS_GRAD_HS:
                dh += tl.load(grad_hs_ptr + at, mask=mask, other=0.0)
            if HAS_GRAD_CS:
                dc += tl.load(grad_cs_ptr + at, mask=mask, other=0.0)
            act_row = acts_ptr + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
            i = tl.load(act_row, mask=mask, other=0.0)
            f = tl.load(act_row + H, mask=mask, other=0.0)
            g = tl.load(act_row + 2 * H, mask=mask, other=0.0)
            o = tl.load(act_row + 3 * H, mask=mask, other=0.0)
            tanh_c = tl.load(tanh_cs_ptr + at, mask=mask, other=0.0)
            c_prev = tl.load(cs_ptr + at, mask=mask, other=0.0)  # cs[t] = c_{t-1}
            dc += dh * o * (1.0 - tanh_c * tanh_c)
            d_i = dc * g * i * (1.0 - i)
            d_f = dc * c_prev * f * (1.0 - f)
            d_g = dc * i * (1.0 - g * g)
            d_o = dh * tanh_c * o * (1.0 - o)
            grad_row = grad_xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H + cols[None, :]
            tl.store(grad_row + H, d_i, mask=mask)
            tl.store(grad_row + 2 * H, d_f, mask=mask)
            tl.store(grad_row + 3 * H, d_g, mask=mask)
            tl.store(grad_row + 4 * H, d_o, mask=mask)
            dm = tl.dot(d_i, tl.load(w_mh_ptr + direct, mask=wmask, other=0.0), input_precision="ieee")
            dm += tl.dot(d_f, tl.load(w_mh_ptr + H * H + direct, mask=wmask, other=0.0),
                         input_precision="ieee")
            dm += tl.dot(d_g, tl.load(w_mh_ptr + 2 * H * H + direct, mask=wmask, other=0.0),
                         input_precision="ieee")
            dm += tl.dot(d_o, tl.load(w_mh_ptr + 3 * H * H + direct, mask=wmask, other=0.0),
                         input_precision="ieee")
            xm = tl.load(xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H + cols[None, :], mask=mask, other=0.0)
            mh = tl.load(mh_ptr + at, mask=mask, other=0.0)
            tl.store(grad_row, dm * mh, mask=mask)  # d loss / d (W_mx x_t + b_mx)
            grad_mh = dm * xm  # d loss / d (W_mh h_{t-1} + b_mh)
            tl.store(grad_mh_ptr + at, grad_mh, mask=mask)
            dh = tl.dot(grad_mh, tl.load(w_hm_ptr + direct, mask=wmask, other=0.0), input_precision="ieee")
            dc = dc * f
        tl.store(grad_h0_ptr + state, dh, mask=mask)
        tl.store(grad_c0_ptr + state, dc, mask=mask)


def _blocks(B: int, H: int) -> tuple[int, int, tuple[int]]:
    block_h = max(16, triton.next_power_of_2(H))
    block_b = 16  # tl.dot's smallest tile; more tiles run side by side on more SMs
    return block_b, block_h, (triton.cdiv(B, block_b),)


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
        flat_x = x.reshape(T * B, -1)
        xp = flat_x.mm(weight_ih.t()) if bias_ih is None else torch.addmm(bias_ih, flat_x, weight_ih.t())
        xp = xp.view(T, B, 5 * H).contiguous()
        hs = x.new_empty(T + 1, B, H)
        cs = x.new_empty(T + 1, B, H)
        hs[0], cs[0] = h0, c0
        acts = x.new_empty(T, B, 4 * H)
        tanh_cs, mh, ms = (x.new_empty(T, B, H) for _ in range(3))
        block_b, block_h, grid = _blocks(B, H)
        w_hm, w_mh = weight_hm.contiguous(), weight_mh.contiguous()
        b_mh = bias_mh.contiguous() if bias_mh is not None else w_hm  # unread without a bias
        _forward_kernel[grid](xp, w_hm, b_mh, w_mh, hs, cs, acts, tanh_cs, mh, ms, T, B, H,
                              HAS_B_MH=bias_mh is not None, BLOCK_B=block_b, BLOCK_H=block_h)
        ctx.save_for_backward(flat_x, weight_ih, xp, acts, hs, cs, tanh_cs, mh, ms, w_hm, w_mh)
        ctx.has_bias = (bias_ih is not None, bias_mh is not None)
        ctx.set_materialize_grads(False)
        return hs[1:], cs[1:]

    @staticmethod
    def backward(ctx, grad_hs, grad_cs):
        from mlstm4reco.layers import _input_and_weight_gradients

        flat_x, weight_ih, xp, acts, hs, cs, tanh_cs, mh, ms, w_hm, w_mh = ctx.saved_tensors
        T, B, H5 = xp.shape
        H = H5 // 5
        grad_xp = xp.new_empty(T, B, 5 * H)
        grad_mh = xp.new_empty(T, B, H)
        grad_h0, grad_c0 = xp.new_empty(B, H), xp.new_empty(B, H)
        block_b, block_h, grid = _blocks(B, H)
        grad_hs = grad_hs.contiguous() if grad_hs is not None else None
        grad_cs = grad_cs.contiguous() if grad_cs is not None else None
        _backward_kernel[grid](
            grad_hs if grad_hs is not None else xp, grad_cs if grad_cs is not None else xp,
            xp, acts, cs, tanh_cs, mh, w_hm, w_mh, grad_xp, grad_mh, grad_h0, grad_c0, T, B, H,
            HAS_GRAD_HS=grad_hs is not None, HAS_GRAD_CS=grad_cs is not None,
            BLOCK_B=block_b, BLOCK_H=block_h)
        return (*_input_and_weight_gradients(flat_x, weight_ih, grad_xp, grad_mh, ms, hs, ctx.has_bias,
                                             grad_h0, grad_c0),)
