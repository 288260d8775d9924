"""A GPU path for :class:`~mlstm4reco.layers.MLSTM`: persistent Triton kernels.

The fused CPU path (:class:`~mlstm4reco.layers._FusedMLSTM`) launches a handful of small
kernels per time step, which on a GPU makes it bound by launch latency. Here each of the
forward and the backward recurrences is one kernel launch: one program per tile of
``BLOCK_B`` sequences walks through all T steps, keeping the cell state (forward) or the
running gradients (backward) in registers. What is not recurrent stays in PyTorch, as in
the fused path: the input projection of all steps before the kernel (one matmul) and,
after the backward kernel, the weight gradients (one matmul each over all steps).

On a GPU with multiprocessors to spare (15 tiles of 16 at batch 240 leave 117 of an H100's
132 idle), each tile's hidden units are split across ``SPLIT`` programs (:func:`_split`):
each computes its slice of m_t, the gates and h_t (backward: of the gradients) from the
whole previous state, which all of them have written, and they meet at a barrier on a
counter in global memory (:func:`_sync`) twice a step. The grid is launched cooperatively,
so CUDA refuses it rather than let programs wait for others that are not resident.
``launch_options(BARRIERS=1)`` takes the variant with one barrier a step
(:func:`_forward_one_barrier_kernel`: every program of a tile computes all of m_t;
:func:`_backward_one_barrier_kernel`: the gradient of m_t summed from each program's
partial product), untimed so far: the defaults are the kernels measured fastest.

Each step's products with the recurrent weights are taken ``KC`` columns at a time
(:func:`_chunked_dot`): the left operand (h_{t-1}, m_t, the gate gradients), which the
program has just stored as an output anyway, is read back from global memory after a
barrier, and the weights are re-read from the L1/L2 caches. Neither the weights nor a
whole (BLOCK_B, H) x (H, H) product ever has to sit in registers, which is what the first
version of these kernels did: compiled for an H100 it needed 664 KiB of shared memory
(the limit is 227 KiB: it could not have launched) and spilled about 20 KB per thread.
:func:`compile_for` compiles the kernels for a GPU architecture without a GPU (Triton
ships ``ptxas``) and :func:`resource_usage` reports their shared memory, registers and
spills; the test suite checks them for sm_90. :func:`launch_options` changes tile sizes
and launch options, for tuning on a GPU (``benchmarks/gpu.py --sweep``).

Matrix products run on tensor cores as ``tf32x3`` by default (three TF32 products that
recover fp32 accuracy); ``with dot_precision('ieee'):`` gives plain fp32 FMA products and
``'tf32'`` one TF32 product (faster; ~3e-4 relative error per product, like PyTorch's
``allow_tf32``).
With ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors in Triton's interpreter:
that is how the test suite checks their numbers on machines without a GPU
(``MLSTM(..., implementation='triton')``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the portable paths need no Triton
    triton = None

__all__ = ["available", "usable", "dot_precision", "launch_options", "compile_for", "resource_usage",
           "TritonMLSTM", "MAX_AUTO_HIDDEN"]

PRECISIONS = ("tf32x3", "ieee", "tf32")
_precision = "tf32x3"

#: MLSTM(implementation='auto') uses the kernels up to this hidden size (compiled for
#: sm_90 they keep within registers up to 128 and spill a little at 256; beyond, untested).
MAX_AUTO_HIDDEN = 256


def indexable(T: int, B: int, H: int) -> bool:
    """Whether the kernels' int32 offsets reach every element of the largest buffer, the
    (T, B, 5H) input projections."""
    return T * B * 5 * H < 2**31


@contextlib.contextmanager
def dot_precision(precision: str):
    """Within the block, the kernels' matrix products use ``precision``: ``'tf32x3'`` (the
    default), ``'ieee'`` or ``'tf32'``. A layer's backward uses its forward's precision."""
    global _precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous, _precision = _precision, precision
    try:
        yield
    finally:
        _precision = previous


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
    def _tile(B, H, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
        """This program's rows and its hidden columns (all of them, or its slice when the
        hidden units are split across programs), which rows exist, the mask of a (rows,
        columns) state and its offsets in a (B, H) slab."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        cols = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
        row_ok = rows < B
        return rows, cols, row_ok, row_ok[:, None] & (cols < H)[None, :], rows[:, None] * H + cols[None, :]

    @triton.jit
    def _sync(count_ptr, arrivals, SPLIT: tl.constexpr, WAIT: tl.constexpr):
        """A barrier for the SPLIT programs of one tile of rows, after whose stores the
        other programs read (then through L2: ``.cg`` loads). ``count_ptr`` is the tile's
        zeroed counter, ``arrivals`` how many programs will have arrived once this barrier
        is passed (SPLIT times its number). The programs must all be resident: the
        kernels are launched as a cooperative grid, which CUDA refuses otherwise. The wait
        gives up after 2**16 polls (tens of milliseconds; the programs arrive within
        microseconds) rather than hang (the results are then wrong, which
        :func:`mlstm4reco.layers._check_triton` catches). Without WAIT the programs do not
        wait for each other (wrong results: for timing what the barriers cost)."""
        tl.debug_barrier()  # the program's own threads: their stores are done
        if SPLIT > 1 and WAIT:
            tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
            seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
            polls = 0
            while (seen < arrivals) & (polls < 65536):
                seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
                polls += 1
            tl.debug_barrier()

    @triton.jit
    def _a_chunk(a_ptr, a_stride, rows, row_ok, ks, k_ok, SPLIT: tl.constexpr):
        """Columns ks of this program's rows of A, an (rows, H) slab in global memory with
        row stride a_stride. With SPLIT programs per tile, other programs wrote parts of
        A: a plain load reads it from L2, past this multiprocessor's L1 (``.cg``). In a
        pipelined loop (K_STAGES > 1) Triton turns the load into an asynchronous copy: of
        16 bytes and ``.cg`` where the compiler knows rows of H floats are 16-byte aligned
        (H a multiple of 16, or compiled in: STATIC_H), else of 4 bytes, which can only be
        ``.ca`` (through L1). That is correct too, as any load after the
        barrier is: by the PTX memory model, the acquire in :func:`_sync` followed by the
        block's ``bar.sync`` makes the other programs' writes visible to all its threads
        (as after CUDA's grid.sync)."""
        return tl.load(a_ptr + rows[:, None] * a_stride + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                       other=0.0, cache_modifier=".cg" if SPLIT > 1 else "")

    @triton.jit
    def _w_chunk(w_ptr, H, cols, ks, k_ok, TRANSPOSED: tl.constexpr):
        """Rows ks of W[:, cols] (of W transposed if TRANSPOSED), W an (H, H) matrix."""
        if TRANSPOSED:  # (k, j) -> W[j, k]
            return tl.load(w_ptr + cols[None, :] * H + ks[:, None], mask=k_ok[:, None] & (cols < H)[None, :],
                           other=0.0)
        else:  # (k, j) -> W[k, j]
            return tl.load(w_ptr + ks[:, None] * H + cols[None, :], mask=k_ok[:, None] & (cols < H)[None, :],
                           other=0.0)

    @triton.jit
    def _gate_weights(w_ptr, H, cols, ks, k_ok, TRANSPOSED: tl.constexpr):
        """Rows ks of each of the four gates' W[:, cols] (transposed if TRANSPOSED), W the
        (4H, H) stack of the gates' weights: :func:`_w_chunk` for each gate."""
        return (_w_chunk(w_ptr, H, cols, ks, k_ok, TRANSPOSED),
                _w_chunk(w_ptr + H * H, H, cols, ks, k_ok, TRANSPOSED),
                _w_chunk(w_ptr + 2 * H * H, H, cols, ks, k_ok, TRANSPOSED),
                _w_chunk(w_ptr + 3 * H * H, H, cols, ks, k_ok, TRANSPOSED))

    @triton.jit
    def _hidden_product(b_mh, hs_t, rows, row_ok, w_hm_ptr, w_hm, H, cols, BLOCK_B: tl.constexpr,
                        BLOCK_H: tl.constexpr, RESIDENT: tl.constexpr, KC: tl.constexpr, PRECISION: tl.constexpr,
                        K_STAGES: tl.constexpr, SPLIT: tl.constexpr):
        """b_mh + h_{t-1} @ W_hm^T[:, cols], h_{t-1} this program's rows of hs_t: in one
        product from w_hm, W_hm^T[:, cols] loaded before the first step (RESIDENT), or
        reading W_hm KC rows at a time (:func:`_chunked_dot`)."""
        mh = tl.zeros((BLOCK_B, cols.shape[0]), tl.float32) + b_mh[None, :]
        if RESIDENT:
            units = tl.arange(0, BLOCK_H)
            mh = tl.dot(_a_chunk(hs_t, H, rows, row_ok, units, units < H, SPLIT), w_hm, mh, input_precision=PRECISION)
        else:
            mh = _chunked_dot(mh, hs_t, H, rows, row_ok, w_hm_ptr, H, cols, True, KC, PRECISION, K_STAGES, SPLIT)
        return mh

    @triton.jit
    def _gate_products(a, w_i, w_f, w_g, w_o, pre_i, pre_f, pre_g, pre_o, PRECISION: tl.constexpr):
        """pre_gate + a @ w_gate for each of the four gates."""
        return (tl.dot(a, w_i, pre_i, input_precision=PRECISION), tl.dot(a, w_f, pre_f, input_precision=PRECISION),
                tl.dot(a, w_g, pre_g, input_precision=PRECISION), tl.dot(a, w_o, pre_o, input_precision=PRECISION))

    @triton.jit
    def _summed_gate_products(a_i, a_f, a_g, a_o, w_i, w_f, w_g, w_o, acc, PRECISION: tl.constexpr):
        """acc + the sum over the four gates of a_gate @ w_gate."""
        acc = tl.dot(a_i, w_i, acc, input_precision=PRECISION)
        acc = tl.dot(a_f, w_f, acc, input_precision=PRECISION)
        acc = tl.dot(a_g, w_g, acc, input_precision=PRECISION)
        return tl.dot(a_o, w_o, acc, input_precision=PRECISION)

    @triton.jit
    def _chunked_dot(acc, a_ptr, a_stride, rows, row_ok, w_ptr, H, cols,
                     TRANSPOSED: tl.constexpr, KC: tl.constexpr,
                     PRECISION: tl.constexpr, K_STAGES: tl.constexpr, SPLIT: tl.constexpr):
        """acc + A @ W[:, cols] (W transposed if TRANSPOSED), KC columns of A (rows of W)
        at a time: the operands never sit whole in registers."""
        for k in tl.range(0, H, KC, num_stages=K_STAGES):
            ks = k + tl.arange(0, KC)
            k_ok = ks < H
            a = _a_chunk(a_ptr, a_stride, rows, row_ok, ks, k_ok, SPLIT)
            acc = tl.dot(a, _w_chunk(w_ptr, H, cols, ks, k_ok, TRANSPOSED), acc, input_precision=PRECISION)
        return acc

    @triton.jit
    def _gate_dots(pre_i, pre_f, pre_g, pre_o, a_ptr, rows, row_ok, w_ptr, H, cols,
                   KC: tl.constexpr, PRECISION: tl.constexpr, K_STAGES: tl.constexpr, SPLIT: tl.constexpr):
        """The four gates' pre-activations plus M @ W_gate^T[:, cols], for M this program's
        rows of an (rows, H) slab and W the (4H, H) stack of the gates' weights: each chunk
        of M is read once for all four gates (it comes from L2; the weights from L1)."""
        for k in tl.range(0, H, KC, num_stages=K_STAGES):
            ks = k + tl.arange(0, KC)
            k_ok = ks < H
            a = _a_chunk(a_ptr, H, rows, row_ok, ks, k_ok, SPLIT)
            pre_i = tl.dot(a, _w_chunk(w_ptr, H, cols, ks, k_ok, True), pre_i, input_precision=PRECISION)
            pre_f = tl.dot(a, _w_chunk(w_ptr + H * H, H, cols, ks, k_ok, True), pre_f, input_precision=PRECISION)
            pre_g = tl.dot(a, _w_chunk(w_ptr + 2 * H * H, H, cols, ks, k_ok, True), pre_g,
                           input_precision=PRECISION)
            pre_o = tl.dot(a, _w_chunk(w_ptr + 3 * H * H, H, cols, ks, k_ok, True), pre_o,
                           input_precision=PRECISION)
        return pre_i, pre_f, pre_g, pre_o

    @triton.jit
    def _gate_gradient_dot(dm, g_ptr, rows, row_ok, w_ptr, H, cols,
                           KC: tl.constexpr, PRECISION: tl.constexpr, K_STAGES: tl.constexpr,
                           SPLIT: tl.constexpr):
        """dm + sum over the gates of dGate @ W_gate[:, cols], dGate this program's rows of
        the gate's (rows, H) block of a (rows, 5H) slab (g_ptr: the first gate's block),
        W the (4H, H) stack: the four gates' chunks are loaded together, so that their
        reads from L2 overlap."""
        for k in tl.range(0, H, KC, num_stages=K_STAGES):
            ks = k + tl.arange(0, KC)
            k_ok = ks < H
            for gate in tl.static_range(4):
                a = _a_chunk(g_ptr + gate * H, 5 * H, rows, row_ok, ks, k_ok, SPLIT)
                dm = tl.dot(a, _w_chunk(w_ptr + gate * H * H, H, cols, ks, k_ok, False), dm,
                            input_precision=PRECISION)
        return dm

    @triton.jit
    def _cell(pre_i, pre_f, pre_g, pre_o, c_prev):
        """One LSTM cell update from the gates' pre-activations: the gates i, f, g, o, the
        cell state c, tanh(c) and the hidden state h."""
        i = _sigmoid(pre_i)
        f = _sigmoid(pre_f)
        g = _tanh(pre_g)
        o = _sigmoid(pre_o)
        c = f * c_prev + i * g
        tanh_c = _tanh(c)
        return i, f, g, o, c, tanh_c, o * tanh_c

    @triton.jit
    def _gate_gradients(dh, dc, i, f, g, o, tanh_c, c_prev):
        """:func:`_cell` backwards: from the gradients of h and c (dc: from later steps),
        the gradient of c with h's share added, and those of the four pre-activations."""
        dc += dh * o * (1.0 - tanh_c * tanh_c)
        return dc, dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), \
            dh * tanh_c * o * (1.0 - o)

    @triton.jit
    def _step_gradients(dh, dc, t, grad_hs_ptr, grad_cs_ptr, acts_ptr, tanh_cs_ptr, cs_ptr, B, H, rows, cols, mask,
                        state, HAS_GRAD_HS: tl.constexpr, HAS_GRAD_CS: tl.constexpr):
        """The backward kernels' step t up to the gate gradients: the gradients of h_t and
        c_t from later steps (dh, dc) plus the upstream ones, through :func:`_gate_gradients`
        with the forward's saved gates, tanh c_t and c_{t-1}. Returns dc, the four gate
        gradients and the forget gate (which carries dc on to step t - 1)."""
        at = t * B * H + state
        if HAS_GRAD_HS:
            dh += tl.load(grad_hs_ptr + at, mask=mask, other=0.0)
        if HAS_GRAD_CS:
            dc += tl.load(grad_cs_ptr + at, mask=mask, other=0.0)
        i, f, g, o = _load_gates(acts_ptr + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :], H, mask)
        tanh_c = tl.load(tanh_cs_ptr + at, mask=mask, other=0.0)
        c_prev = tl.load(cs_ptr + at, mask=mask, other=0.0)  # cs[t] = c_{t-1}
        dc, d_i, d_f, d_g, d_o = _gate_gradients(dh, dc, i, f, g, o, tanh_c, c_prev)
        return dc, d_i, d_f, d_g, d_o, f

    @triton.jit
    def _store_gates(ptr, gap, a, b, c, d, mask):
        """a, b, c, d to ptr, ptr + gap, ptr + 2 gap, ptr + 3 gap (the gates' blocks of a row)."""
        tl.store(ptr, a, mask=mask)
        tl.store(ptr + gap, b, mask=mask)
        tl.store(ptr + 2 * gap, c, mask=mask)
        tl.store(ptr + 3 * gap, d, mask=mask)

    @triton.jit
    def _load_gates(ptr, gap, mask):
        """What :func:`_store_gates` stored."""
        return (tl.load(ptr, mask=mask, other=0.0), tl.load(ptr + gap, mask=mask, other=0.0),
                tl.load(ptr + 2 * gap, mask=mask, other=0.0), tl.load(ptr + 3 * gap, mask=mask, other=0.0))

    @triton.jit
    def _forward_kernel(
        xp_ptr, w_hm_ptr, b_mh_ptr, w_mh_ptr,  # (T, B, 5H), (H, H), (H,), (4H, H)
        hs_ptr, cs_ptr, acts_ptr, tanh_cs_ptr, mh_ptr, ms_ptr,  # (T+1, B, H) x2, (T, B, 4H), (T, B, H) x3
        T, B, H,
        sync_ptr,  # (tiles,) zeroed counters of _sync
        HAS_B_MH: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, KC: tl.constexpr,
        PRECISION: tl.constexpr, K_STAGES: tl.constexpr, SPLIT: tl.constexpr, WAIT: tl.constexpr,
        STATIC_H: tl.constexpr, RESIDENT: tl.constexpr,
    ):
        if STATIC_H:  # H compiled in (launch_options(STATIC_H=1)): 16-byte accesses
            H = STATIC_H
        BLOCK_J: tl.constexpr = BLOCK_H // SPLIT
        rows, cols, row_ok, mask, state = _tile(B, H, BLOCK_B, BLOCK_J)
        count_ptr = sync_ptr + tl.program_id(0)
        c = tl.load(cs_ptr + state, mask=mask, other=0.0)
        b_mh = tl.load(b_mh_ptr + cols, mask=cols < H, other=0.0) if HAS_B_MH else tl.zeros((BLOCK_J,), tl.float32)
        units = tl.arange(0, BLOCK_H)
        w_hm = w_hm_ptr  # the product reads its weights, KC rows at a time (_chunked_dot)...
        if RESIDENT:  # ... or they are this program's columns of them, loaded once (into shared memory)
            w_hm = _w_chunk(w_hm_ptr, H, cols, units, units < H, True)
            w_i, w_f, w_g, w_o = _gate_weights(w_mh_ptr, H, cols, units, units < H, True)
        # disable_licm: the weight chunks are the same at every step, and hoisted out of the
        # loop they would all be live at once, in registers (that spilled)
        for t in tl.range(T, disable_licm=True):
            # h_{t-1} and m_t are read back from global memory, KC columns at a time, by
            # _chunked_dot: each barrier makes the tile's stores visible to all its threads
            xp_row = xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H + cols[None, :]
            step = t * B * H + state
            mh = _hidden_product(b_mh, hs_ptr + t * B * H, rows, row_ok, w_hm_ptr, w_hm, H, cols, BLOCK_B, BLOCK_H,
                                 RESIDENT, KC, PRECISION, K_STAGES, SPLIT)
            m = tl.load(xp_row, mask=mask, other=0.0) * mh
            tl.store(mh_ptr + step, mh, mask=mask)
            tl.store(ms_ptr + step, m, mask=mask)
            _sync(count_ptr, (2 * t + 1) * SPLIT, SPLIT, WAIT)
            ms_t = ms_ptr + t * B * H
            x_i, x_f, x_g, x_o = _load_gates(xp_row + H, H, mask)
            if RESIDENT:
                pre_i, pre_f, pre_g, pre_o = _gate_products(_a_chunk(ms_t, H, rows, row_ok, units, units < H, SPLIT),
                                                            w_i, w_f, w_g, w_o, x_i, x_f, x_g, x_o, PRECISION)
            else:
                pre_i, pre_f, pre_g, pre_o = _gate_dots(x_i, x_f, x_g, x_o, ms_t, rows, row_ok, w_mh_ptr, H, cols,
                                                        KC, PRECISION, K_STAGES, SPLIT)
            i, f, g, o, c, tanh_c, h = _cell(pre_i, pre_f, pre_g, pre_o, c)
            tl.store(hs_ptr + B * H + step, h, mask=mask)
            tl.store(cs_ptr + B * H + step, c, mask=mask)
            tl.store(tanh_cs_ptr + step, tanh_c, mask=mask)
            _store_gates(acts_ptr + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :], H, i, f, g, o, mask)
            _sync(count_ptr, (2 * t + 2) * SPLIT, SPLIT, WAIT)

    @triton.jit
    def _backward_kernel(
        grad_hs_ptr, grad_cs_ptr,  # (T, B, H) each, when present
        xp_ptr, acts_ptr, cs_ptr, tanh_cs_ptr, mh_ptr, w_hm_ptr, w_mh_ptr,
        grad_xp_ptr, grad_mh_ptr, grad_h0_ptr, grad_c0_ptr,  # (T, B, 5H), (T, B, H), (B, H) x2
        T, B, H,
        sync_ptr,  # (tiles,) zeroed counters of _sync
        HAS_GRAD_HS: tl.constexpr, HAS_GRAD_CS: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, KC: tl.constexpr, PRECISION: tl.constexpr,
        K_STAGES: tl.constexpr, SPLIT: tl.constexpr, WAIT: tl.constexpr,
        STATIC_H: tl.constexpr, RESIDENT: tl.constexpr,
    ):
        if STATIC_H:  # H compiled in (launch_options(STATIC_H=1)): 16-byte accesses
            H = STATIC_H
        BLOCK_J: tl.constexpr = BLOCK_H // SPLIT
        rows, cols, row_ok, mask, state = _tile(B, H, BLOCK_B, BLOCK_J)
        count_ptr = sync_ptr + tl.program_id(0)
        dh = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
        dc = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
        if RESIDENT:  # this program's columns of the weights, loaded once (Triton keeps them in shared memory)
            units = tl.arange(0, BLOCK_H)
            w_hm = _w_chunk(w_hm_ptr, H, cols, units, units < H, False)
            w_i, w_f, w_g, w_o = _gate_weights(w_mh_ptr, H, cols, units, units < H, False)
        for step in tl.range(T, disable_licm=True):
            t = T - 1 - step
            dc, d_i, d_f, d_g, d_o, f = _step_gradients(
                dh, dc, t, grad_hs_ptr, grad_cs_ptr, acts_ptr, tanh_cs_ptr, cs_ptr, B, H, rows, cols, mask, state,
                HAS_GRAD_HS, HAS_GRAD_CS)
            grad_xp_t = grad_xp_ptr + t * B * 5 * H
            grad_row = grad_xp_t + rows[:, None] * 5 * H + cols[None, :]
            _store_gates(grad_row + H, H, d_i, d_f, d_g, d_o, mask)
            _sync(count_ptr, (2 * step + 1) * SPLIT, SPLIT, WAIT)  # the gate gradients are read back
            dm = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
            if RESIDENT:
                unit_ok = units < H
                g_row = grad_xp_t + H
                dm = tl.dot(_a_chunk(g_row, 5 * H, rows, row_ok, units, unit_ok, SPLIT), w_i, dm,
                            input_precision=PRECISION)
                dm = tl.dot(_a_chunk(g_row + H, 5 * H, rows, row_ok, units, unit_ok, SPLIT), w_f, dm,
                            input_precision=PRECISION)
                dm = tl.dot(_a_chunk(g_row + 2 * H, 5 * H, rows, row_ok, units, unit_ok, SPLIT), w_g, dm,
                            input_precision=PRECISION)
                dm = tl.dot(_a_chunk(g_row + 3 * H, 5 * H, rows, row_ok, units, unit_ok, SPLIT), w_o, dm,
                            input_precision=PRECISION)
            else:
                dm = _gate_gradient_dot(dm, grad_xp_t + H, rows, row_ok, w_mh_ptr, H, cols, KC, PRECISION, K_STAGES,
                                        SPLIT)
            xm = tl.load(xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H + cols[None, :], mask=mask, other=0.0)
            at = t * B * H + state
            mh = tl.load(mh_ptr + at, mask=mask, other=0.0)
            tl.store(grad_row, dm * mh, mask=mask)  # d loss / d (W_mx x_t + b_mx)
            tl.store(grad_mh_ptr + at, dm * xm, mask=mask)  # d loss / d (W_mh h_{t-1} + b_mh)
            _sync(count_ptr, (2 * step + 2) * SPLIT, SPLIT, WAIT)
            dh = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
            if RESIDENT:
                dh = tl.dot(_a_chunk(grad_mh_ptr + t * B * H, H, rows, row_ok, units, units < H, SPLIT), w_hm, dh,
                            input_precision=PRECISION)
            else:
                dh = _chunked_dot(dh, grad_mh_ptr + t * B * H, H, rows, row_ok, w_hm_ptr, H, cols, False, KC,
                                  PRECISION, K_STAGES, SPLIT)
            dc = dc * f
        tl.store(grad_h0_ptr + state, dh, mask=mask)
        tl.store(grad_c0_ptr + state, dc, mask=mask)


    @triton.jit
    def _all_units(rows, row_ok, H, BLOCK_J: tl.constexpr, BLOCK_H: tl.constexpr):
        """All hidden units, the mask of a (rows, all units) state, the part of it that
        is this program's slice (its columns of the split), and its offsets in a (B, H)
        slab."""
        units = tl.arange(0, BLOCK_H)
        full = row_ok[:, None] & (units < H)[None, :]
        mine = full & (units // BLOCK_J == tl.program_id(1))[None, :]
        return units, full, mine, rows[:, None] * H + units[None, :]

    @triton.jit
    def _forward_one_barrier_kernel(
        xp_ptr, w_hm_ptr, b_mh_ptr, w_mh_ptr,
        hs_ptr, cs_ptr, acts_ptr, tanh_cs_ptr, mh_ptr, ms_ptr,
        T, B, H,
        sync_ptr,
        own_ptr,  # (SPLIT, B, H): each program's copy of m_t
        HAS_B_MH: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, KC: tl.constexpr,
        PRECISION: tl.constexpr, K_STAGES: tl.constexpr, SPLIT: tl.constexpr, WAIT: tl.constexpr,
        STATIC_H: tl.constexpr, RESIDENT: tl.constexpr,
    ):
        """:func:`_forward_kernel` with one barrier a step, not two: each of a tile's
        programs computes the whole of m_t (all hidden units) from h_{t-1}, the product
        with W_hm done SPLIT times over, and reads it back from its own copy (through L1)
        for its slice of the gates; only h_t goes to the other programs, and what they
        never read (c_t, tanh c_t, the gates) is stored after the barrier."""
        if STATIC_H:  # H compiled in (launch_options(STATIC_H=1)): 16-byte accesses
            H = STATIC_H
        BLOCK_J: tl.constexpr = BLOCK_H // SPLIT
        rows, cols, row_ok, mask, state = _tile(B, H, BLOCK_B, BLOCK_J)
        units, full, mine, all_state = _all_units(rows, row_ok, H, BLOCK_J, BLOCK_H)
        count_ptr = sync_ptr + tl.program_id(0)
        own_m = own_ptr + tl.program_id(1) * B * H
        c = tl.load(cs_ptr + state, mask=mask, other=0.0)
        b_mh = tl.load(b_mh_ptr + units, mask=units < H, other=0.0) if HAS_B_MH else \
            tl.zeros((BLOCK_H,), tl.float32)
        w_hm = w_hm_ptr  # the product reads its weights, KC rows at a time (_chunked_dot)...
        if RESIDENT:  # ... or all of W_hm and this program's columns of the gates' are loaded once
            w_hm = _w_chunk(w_hm_ptr, H, units, units, units < H, True)
            w_i, w_f, w_g, w_o = _gate_weights(w_mh_ptr, H, cols, units, units < H, True)
        for t in tl.range(T, disable_licm=True):
            xp_row = xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H
            mh = _hidden_product(b_mh, hs_ptr + t * B * H, rows, row_ok, w_hm_ptr, w_hm, H, units, BLOCK_B, BLOCK_H,
                                 RESIDENT, KC, PRECISION, K_STAGES, SPLIT)
            m = tl.load(xp_row + units[None, :], mask=full, other=0.0) * mh
            tl.store(mh_ptr + t * B * H + all_state, mh, mask=mine)
            tl.store(ms_ptr + t * B * H + all_state, m, mask=mine)
            x_i, x_f, x_g, x_o = _load_gates(xp_row + H + cols[None, :], H, mask)
            if RESIDENT:  # m_t straight from registers
                pre_i, pre_f, pre_g, pre_o = _gate_products(m, w_i, w_f, w_g, w_o, x_i, x_f, x_g, x_o, PRECISION)
            else:
                tl.store(own_m + all_state, m, mask=full)
                tl.debug_barrier()  # the program's own copy of m_t is written
                pre_i, pre_f, pre_g, pre_o = _gate_dots(x_i, x_f, x_g, x_o, own_m, rows, row_ok, w_mh_ptr, H, cols,
                                                        KC, PRECISION, K_STAGES, 1)  # 1: own writes, via L1
            i, f, g, o, c, tanh_c, h = _cell(pre_i, pre_f, pre_g, pre_o, c)
            step = t * B * H + state
            tl.store(hs_ptr + B * H + step, h, mask=mask)
            _sync(count_ptr, (t + 1) * SPLIT, SPLIT, WAIT)
            tl.store(cs_ptr + B * H + step, c, mask=mask)
            tl.store(tanh_cs_ptr + step, tanh_c, mask=mask)
            _store_gates(acts_ptr + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :], H, i, f, g, o, mask)

    @triton.jit
    def _summed_partials_dot(parts, xp_row, mh_t, grad_xp_row, grad_mh_t, rows, row_ok, cols, w_hm_ptr, B, H,
                             BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr, KC: tl.constexpr,
                             PRECISION: tl.constexpr, K_STAGES: tl.constexpr, SPLIT: tl.constexpr):
        """:func:`_backward_one_barrier_kernel` after its barrier, KC units at a time: dm
        summed from the SPLIT programs' partial sums (in a fixed order), the gradients of
        m_t's two factors, stored for this program's units, and its columns of dh_{t-1},
        which it returns."""
        dh = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
        for n in tl.range(0, H, KC, num_stages=K_STAGES):
            ns = n + tl.arange(0, KC)
            n_ok = ns < H
            ok = row_ok[:, None] & n_ok[None, :]
            at = rows[:, None] * H + ns[None, :]
            dm = tl.zeros((BLOCK_B, KC), dtype=tl.float32)
            for program in tl.static_range(SPLIT):
                dm += tl.load(parts + program * B * H + at, mask=ok, other=0.0,
                              cache_modifier=".cg" if SPLIT > 1 else "")
            d_mh = dm * tl.load(xp_row + ns[None, :], mask=ok, other=0.0)
            dh = tl.dot(d_mh, _w_chunk(w_hm_ptr, H, cols, ns, n_ok, False), dh, input_precision=PRECISION)
            mine = ok & (ns // BLOCK_J == tl.program_id(1))[None, :]
            tl.store(grad_xp_row + ns[None, :], dm * tl.load(mh_t + at, mask=mine, other=0.0), mask=mine)  # d/d xm
            tl.store(grad_mh_t + at, d_mh, mask=mine)
        return dh

    @triton.jit
    def _backward_one_barrier_kernel(
        grad_hs_ptr, grad_cs_ptr,
        xp_ptr, acts_ptr, cs_ptr, tanh_cs_ptr, mh_ptr, w_hm_ptr, w_mh_ptr,
        grad_xp_ptr, grad_mh_ptr, grad_h0_ptr, grad_c0_ptr,
        T, B, H,
        sync_ptr,
        partial_ptr,  # (2, SPLIT, B, H): each program's share of dm, by the step's parity
        HAS_GRAD_HS: tl.constexpr, HAS_GRAD_CS: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, KC: tl.constexpr, PRECISION: tl.constexpr,
        K_STAGES: tl.constexpr, SPLIT: tl.constexpr, WAIT: tl.constexpr,
        STATIC_H: tl.constexpr, RESIDENT: tl.constexpr,
    ):
        """:func:`_backward_kernel` with one barrier a step, not two. The gradient of m_t,
        dm = sum over the gates of dGate @ W_gate, is split over the gates' units (the
        inner dimension) instead of over its columns: each program multiplies its own
        slice of the gate gradients, which it has just computed, by its rows of the
        weights and stores the (rows, all units) partial sum, KC units at a time; after
        the barrier, each adds up the SPLIT partial sums (in a fixed order), KC units at a
        time, and takes its slice of dh_{t-1} from them. The partial sums alternate
        between two buffers, so that a program a step ahead never overwrites what a slower
        one still reads; the gate gradients, which no other program reads, are stored
        after the barrier."""
        if STATIC_H:  # H compiled in (launch_options(STATIC_H=1)): 16-byte accesses
            H = STATIC_H
        BLOCK_J: tl.constexpr = BLOCK_H // SPLIT
        rows, cols, row_ok, mask, state = _tile(B, H, BLOCK_B, BLOCK_J)
        col_ok = cols < H
        count_ptr = sync_ptr + tl.program_id(0)
        dh = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
        dc = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
        if RESIDENT:  # the gates' weights in this program's rows, W_hm in its columns, loaded once
            units, full, mine, all_state = _all_units(rows, row_ok, H, BLOCK_J, BLOCK_H)
            w_i, w_f, w_g, w_o = _gate_weights(w_mh_ptr, H, units, cols, col_ok, False)
            w_hm = _w_chunk(w_hm_ptr, H, cols, units, units < H, False)
        for step in tl.range(T, disable_licm=True):
            t = T - 1 - step
            dc, d_i, d_f, d_g, d_o, f = _step_gradients(
                dh, dc, t, grad_hs_ptr, grad_cs_ptr, acts_ptr, tanh_cs_ptr, cs_ptr, B, H, rows, cols, mask, state,
                HAS_GRAD_HS, HAS_GRAD_CS)
            parts = partial_ptr + (step % 2) * SPLIT * B * H
            if RESIDENT:
                part = _summed_gate_products(d_i, d_f, d_g, d_o, w_i, w_f, w_g, w_o,
                                             tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), PRECISION)
                tl.store(parts + tl.program_id(1) * B * H + all_state, part, mask=full)
            else:
                for n in tl.range(0, H, KC):  # units n.. of this program's partial sum
                    ns = n + tl.arange(0, KC)
                    p_i, p_f, p_g, p_o = _gate_weights(w_mh_ptr, H, ns, cols, col_ok, False)
                    part = _summed_gate_products(d_i, d_f, d_g, d_o, p_i, p_f, p_g, p_o,
                                                 tl.zeros((BLOCK_B, KC), dtype=tl.float32), PRECISION)
                    tl.store(parts + tl.program_id(1) * B * H + rows[:, None] * H + ns[None, :], part,
                             mask=row_ok[:, None] & (ns < H)[None, :])
            _sync(count_ptr, (step + 1) * SPLIT, SPLIT, WAIT)
            grad_xp_row = grad_xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H
            xp_row = xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H
            if RESIDENT:
                dm = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                for program in tl.static_range(SPLIT):
                    dm += tl.load(parts + program * B * H + all_state, mask=full, other=0.0,
                                  cache_modifier=".cg" if SPLIT > 1 else "")
                d_mh = dm * tl.load(xp_row + units[None, :], mask=full, other=0.0)
                dh = tl.dot(d_mh, w_hm, tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32), input_precision=PRECISION)
                d_xm = dm * tl.load(mh_ptr + t * B * H + all_state, mask=mine, other=0.0)
                tl.store(grad_xp_row + units[None, :], d_xm, mask=mine)  # d loss / d (W_mx x_t + b_mx)
                tl.store(grad_mh_ptr + t * B * H + all_state, d_mh, mask=mine)
            else:
                dh = _summed_partials_dot(parts, xp_row, mh_ptr + t * B * H, grad_xp_row, grad_mh_ptr + t * B * H,
                                          rows, row_ok, cols, w_hm_ptr, B, H, BLOCK_B, BLOCK_J, KC, PRECISION,
                                          K_STAGES, SPLIT)
            _store_gates(grad_xp_row + H + cols[None, :], H, d_i, d_f, d_g, d_o, mask)
            dc = dc * f
        tl.store(grad_h0_ptr + state, dh, mask=mask)
        tl.store(grad_c0_ptr + state, dc, mask=mask)


_launch_overrides: dict[str, int] = {}
TUNABLE = ("BLOCK_B", "KC", "K_STAGES", "SPLIT", "BARRIERS", "WAIT", "STATIC_H", "RESIDENT", "num_warps",
           "num_stages")
#: the options that take one of a few values
CHOICES = {"BARRIERS": (1, 2), "WAIT": (0, 1), "STATIC_H": (0, 1), "RESIDENT": (0, 1)}


@contextlib.contextmanager
def launch_options(**options: int):
    """Within the block, the kernels launch with these tile sizes and options (any of
    :data:`TUNABLE`: BLOCK_B, KC, SPLIT and num_warps powers of two, at least 16 for
    BLOCK_B and KC, KC at most the padded hidden size, at least 16 hidden units per program
    of a SPLIT; K_STAGES and num_stages at least 1; BARRIERS 2 or 1, the kernels' barriers
    a step when the hidden units are split (1: :func:`_forward_one_barrier_kernel` and
    :func:`_backward_one_barrier_kernel`); WAIT 1, or 0 for programs that do not wait for
    each other at the barriers, which gives wrong results and is there to time what the
    barriers cost; STATIC_H 0, or 1 to compile the hidden size into the kernels, one
    compilation per size, so that Triton knows rows of H floats keep 16-byte alignment
    and loads and stores them 16 bytes at a time; RESIDENT 0, or 1 for kernels that load
    the weights each program needs once, before the first step (Triton keeps them in
    shared memory, which they must fit: 5 x BLOCK_H x BLOCK_H / SPLIT floats, with one
    barrier BLOCK_H x BLOCK_H more in the forward), and take each step's products in one
    piece instead of KC rows at a time) in place of :func:`_launch`'s: the hook ``benchmarks/gpu.py --sweep``
    tunes with. A layer's backward uses its forward's options."""
    unknown = set(options) - set(TUNABLE)
    if unknown:
        raise ValueError(f"launch_options takes {TUNABLE}, got {sorted(unknown)}")
    for name, value in options.items():
        if name in CHOICES:
            if value not in CHOICES[name] or isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"launch_options: {name} must be one of {CHOICES[name]}, got {value!r}")
            continue
        smallest = 16 if name in ("BLOCK_B", "KC") else 1
        power_of_two = name in ("BLOCK_B", "KC", "SPLIT", "num_warps")
        if (not isinstance(value, int) or isinstance(value, bool) or value < smallest
                or (power_of_two and value & (value - 1))):
            kind = "a power of two" if power_of_two else "an integer"
            raise ValueError(f"launch_options: {name} must be {kind} of at least {smallest}, got {value!r}")
    global _launch_overrides
    previous, _launch_overrides = _launch_overrides, {**_launch_overrides, **options}
    try:
        yield
    finally:
        _launch_overrides = previous


def _split(block_h: int, tiles: int, multiprocessors: int) -> int:
    """How many programs share each tile's hidden units: the most (a power of two, at
    least 16 units each) with which every program of the grid has a multiprocessor of its
    own, so that all are resident at once (their barriers wait for each other)."""
    split = 1
    while block_h // (2 * split) >= 16 and tiles * 2 * split <= multiprocessors:
        split *= 2
    return split


def _launch(H: int, B: int = 1, multiprocessors: int = 0) -> dict:
    """The tile sizes and launch options of both kernels at hidden size H for B sequences
    on a GPU with ``multiprocessors`` multiprocessors (0: the hidden units unsplit), with
    :func:`launch_options`' overrides; the defaults follow the tile and the split."""
    block_h = max(16, triton.next_power_of_2(H))
    block_b = _launch_overrides.get("BLOCK_B", 16)  # tl.dot's smallest tile: more tiles, more SMs
    split = _launch_overrides.get("SPLIT", _split(block_h, triton.cdiv(B, block_b), multiprocessors))
    block_j = block_h // split  # each program's hidden units
    barriers = _launch_overrides.get("BARRIERS", 2)
    widest = block_h if barriers == 1 else block_j  # one barrier: the forward's m_t is whole in each program
    launch = dict(
        BLOCK_B=block_b,
        BLOCK_H=block_h,
        # the products go KC columns of their left operand at a time: 16 (32 spilled at
        # block_j = 128 with Triton 3.6, torch 2.11's), 32 for the narrower slices of a split
        # (but 16 with one barrier: 32 spills there, on sm_90 with Triton 3.6 and 3.9)
        KC=32 if split > 1 and block_j <= 64 and barriers == 2 else 16,
        K_STAGES=2,  # the next chunk is loaded while this one is multiplied (H200: 0.82x the time of 1)
        SPLIT=split,  # programs per tile, each with BLOCK_H / SPLIT of the hidden units
        BARRIERS=barriers,  # a step (2: _forward_kernel and _backward_kernel)
        WAIT=1,  # at the barriers (0: for timing only)
        STATIC_H=0,  # H a kernel argument (with launch_options(STATIC_H=1): H, compiled in)
        RESIDENT=0,  # the weights re-read at each step, KC rows at a time (1: loaded once)
        num_warps=4 if widest <= 32 else 8 if widest <= 128 else 16,  # no spills on sm_90 up to 128
        num_stages=1,  # loops without their own setting (the time loop) are not pipelined
        enable_fp_fusion=True,  # a * b + c as one FMA (Triton 3.9's default; 3.10 turns it off)
    )
    launch.update(_launch_overrides)
    launch["STATIC_H"] = H if launch["STATIC_H"] else 0  # the kernels' constant: the size itself
    if launch["KC"] > block_h:
        raise ValueError(f"KC={launch['KC']} is wider than the padded hidden size {block_h}")
    if block_j < 16:
        raise ValueError(f"SPLIT={split} leaves fewer than 16 of the {block_h} padded hidden units to each program")
    launch["launch_cooperative_grid"] = split > 1  # CUDA refuses a grid that is not all resident at once
    return launch


def _kernel(name: str, barriers: int):
    """The ``'forward'`` or ``'backward'`` kernel with ``barriers`` barriers a step."""
    return {("forward", 2): _forward_kernel, ("backward", 2): _backward_kernel,
            ("forward", 1): _forward_one_barrier_kernel, ("backward", 1): _backward_one_barrier_kernel}[
        name, barriers]


def _run(name: str, launch: dict, B: int, H: int, device: torch.device, *args, **flags) -> None:
    """Launch the ``'forward'`` or ``'backward'`` kernel (:func:`_kernel`) over the tiles
    of B sequences (times the split of their hidden units), with zeroed barrier counters
    and, for the one-barrier backward, the buffers of its partial sums, as ``launch``
    says."""
    tiles = triton.cdiv(B, launch["BLOCK_B"])
    extra = [torch.zeros(tiles, dtype=torch.int32, device=device)]
    options = dict(launch)
    barriers = options.pop("BARRIERS")
    if barriers == 1:  # the forward's copies of m_t, the backward's partial sums of dm
        extra.append(torch.empty(*(() if name == "forward" else (2,)), options["SPLIT"], B, H, device=device))
    if not options["launch_cooperative_grid"]:
        del options["launch_cooperative_grid"]  # the interpreter takes no such option
    _kernel(name, barriers)[(tiles, options["SPLIT"])](*args, *extra, **flags, **options)


def _multiprocessors(device: torch.device) -> int:
    """The GPU's multiprocessor count (0 on the CPU: the interpreter runs programs one by
    one, so the hidden units are never split there)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


#: the optional inputs of each kernel (constexpr flags); all present by default
KERNEL_FLAGS = {"forward": ("HAS_B_MH",), "backward": ("HAS_GRAD_HS", "HAS_GRAD_CS")}


def compile_for(kernel: str, hidden_size: int, arch: int = 90, batch: int = 1, multiprocessors: int = 0,
                **flags: bool):
    """Compile the ``'forward'`` or ``'backward'`` kernel for NVIDIA architecture ``arch``
    (90: H100/H200, 80: A100) at ``hidden_size``, with the launch options and precision
    :class:`TritonMLSTM` would use for ``batch`` sequences on a GPU of ``multiprocessors``
    multiprocessors (the defaults: hidden units unsplit) and the optional inputs ``flags``
    (see :data:`KERNEL_FLAGS`; omitted ones present), on any machine: no GPU is needed,
    Triton ships ``ptxas``. Specialised as Triton's launcher would specialise it: every
    pointer 16-byte aligned (as PyTorch allocates), B and H known to be multiples of 16
    where they are (the number of steps is not). Returns Triton's compiled kernel
    (``.asm['ptx']``, ``.metadata``...)."""
    if triton is None:
        raise RuntimeError("compiling the kernels needs Triton: pip install -e '.[triton]'")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options = _launch(hidden_size, batch, multiprocessors)
    function = _kernel(kernel, options["BARRIERS"])
    constants = {**{flag: flags.get(flag, True) for flag in KERNEL_FLAGS[kernel]},
                 **{k: options[k] for k in ("BLOCK_B", "BLOCK_H", "KC", "K_STAGES", "SPLIT", "WAIT", "STATIC_H",
                                             "RESIDENT")},
                 "PRECISION": _precision}
    signature = {arg: ("*i32" if arg == "sync_ptr" else "*fp32") if arg.endswith("_ptr") else "i32"
                 for arg in function.arg_names}
    signature.update({arg: "constexpr" for arg in constants})
    multiple_of_16 = {"B": batch % 16 == 0, "H": hidden_size % 16 == 0}
    aligned = {(i,): [["tt.divisibility", 16]] for i, arg in enumerate(function.arg_names)
               if arg.endswith("_ptr") or multiple_of_16.get(arg, False)}
    source = ASTSource(fn=function, signature=signature, attrs=aligned,
                       constexprs={(function.arg_names.index(k),): v for k, v in constants.items()})
    keys = ("num_warps", "num_stages", "enable_fp_fusion", "launch_cooperative_grid")
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={k: options[k] for k in keys})


def resource_usage(hidden_size: int, arch: int = 90, batch: int = 1,
                   multiprocessors: int = 0) -> dict[str, dict[str, int]]:
    """Per kernel (:func:`compile_for`, every optional input present), the shared memory it
    asks for (bytes), its registers per thread and the bytes per thread it spills to local
    memory (its stack frame), read from the cubin with Triton's ``cuobjdump``."""
    if triton is None:
        raise RuntimeError("resource_usage needs Triton: pip install -e '.[triton]'")
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(cuobjdump):
        cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        raise RuntimeError("resource_usage needs cuobjdump (shipped with Triton's NVIDIA backend)")
    usage = {}
    for kernel in KERNEL_FLAGS:
        compiled = compile_for(kernel, hidden_size, arch, batch, multiprocessors)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "kernel.cubin")
            with open(path, "wb") as f:
                f.write(compiled.asm["cubin"])
            dump = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True,
                                  text=True, check=True).stdout
        line = next(line for line in dump.splitlines() if "REG:" in line)
        fields = dict(field.split(":", 1) for field in line.split() if ":" in field)
        usage[kernel] = {"shared": int(compiled.metadata.shared), "registers": int(fields["REG"]),
                         "spilled": int(fields["STACK"])}
    return usage


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
        if not indexable(T, B, H):
            raise ValueError(f"the Triton mLSTM kernels index with int32: T * B * 5H must be below 2**31, "
                             f"got T={T}, B={B}, H={H}")
        flat_x = x.reshape(T * B, -1)
        xp = flat_x.mm(weight_ih.t()) if bias_ih is None else torch.addmm(bias_ih, flat_x, weight_ih.t())
        xp = xp.view(T, B, 5 * H).contiguous()
        hs = x.new_empty(T + 1, B, H)
        cs = x.new_empty(T + 1, B, H)
        hs[0], cs[0] = h0, c0
        acts = x.new_empty(T, B, 4 * H)
        tanh_cs, mh, ms = (x.new_empty(T, B, H) for _ in range(3))
        w_hm, w_mh = weight_hm.contiguous(), weight_mh.contiguous()
        b_mh = bias_mh.contiguous() if bias_mh is not None else w_hm  # unread without a bias
        ctx.precision, ctx.launch = _precision, _launch(H, B, _multiprocessors(x.device))
        _run("forward", ctx.launch, B, H, x.device, xp, w_hm, b_mh, w_mh, hs, cs, acts, tanh_cs, mh, ms,
             T, B, H, HAS_B_MH=bias_mh is not None, PRECISION=ctx.precision)
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
        grad_hs = grad_hs.contiguous() if grad_hs is not None else None
        grad_cs = grad_cs.contiguous() if grad_cs is not None else None
        _run("backward", ctx.launch, B, H, xp.device,
             grad_hs if grad_hs is not None else xp, grad_cs if grad_cs is not None else xp,
             xp, acts, cs, tanh_cs, mh, w_hm, w_mh, grad_xp, grad_mh, grad_h0, grad_c0, T, B, H,
             HAS_GRAD_HS=grad_hs is not None, HAS_GRAD_CS=grad_cs is not None, PRECISION=ctx.precision)
        return (*_input_and_weight_gradients(flat_x, weight_ih, grad_xp, grad_mh, ms, hs, ctx.has_bias,
                                             grad_h0, grad_c0),)
