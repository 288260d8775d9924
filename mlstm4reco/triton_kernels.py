"""The Triton kernels of :mod:`mlstm4reco.triton_mlstm`, the mLSTM's GPU path: the
forward and the backward recurrence of one layer, each one persistent kernel.

One program per tile of ``BLOCK_B`` sequences walks through all T steps, keeping the cell
state (forward) or the running gradients (backward) in registers; the input projection of
all steps comes in precomputed (``xp``: (T, B, 5H)), and the weight gradients are taken
after the backward kernel, in PyTorch. Each tile's hidden units may be split across
``SPLIT`` programs: each computes its slice of m_t, the gates and h_t (backward: of the
gradients) from the whole previous state, which all of them have written, and they meet
at a barrier on a counter in global memory (:func:`_sync`) twice a step
(:func:`forward_kernel`, :func:`backward_kernel`). The grid must then be all resident
(the launcher uses a cooperative launch).

Each step's products with the recurrent weights are taken ``KC`` columns at a time
(:func:`_chunked_dot`): the left operand (h_{t-1}, m_t, the gate gradients), which the
program has just stored as an output anyway, is read back from global memory after a
barrier, and the weights are re-read from the L1/L2 caches. Neither the weights nor a
whole (BLOCK_B, H) x (H, H) product ever has to sit in registers, which is what the first
version of these kernels did: compiled for an H100 it needed 664 KiB of shared memory
(the limit is 227 KiB: it could not have launched) and spilled about 20 KB per thread.

Variants, chosen by constexpr arguments (the launcher's ``launch_options``): ``RESIDENT``
loads the weights each program needs once, before the first step; ``STATIC_H`` compiles
the hidden size in; ``PREFETCH`` loads what a step reads that no barrier guards (the
inputs, what the forward saved) one step ahead, carried across the time loop; ``POLL``
(weights resident) replaces the barriers by polling the data itself (:func:`_polled`);
``BATCHED`` (backward, weights resident) takes the gradient of m_t as products batched
over the gates; ``X3`` (weights resident) takes tf32x3 by hand, three TF32 products on
accumulators of their own (:func:`_product`); ``WAIT=0`` (timing only) does not wait at
the barriers.
"""

import triton
import triton.language as tl


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tanh(z):
    return 2.0 * _sigmoid(2.0 * z) - 1.0


@triton.jit
def _tile(B, H, sync_ptr, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
    """This program's rows and its hidden columns (all of them, or its slice when the
    hidden units are split across programs), which rows exist, the mask of a (rows,
    columns) state, its offsets in a (B, H) slab, and its tile's barrier counter."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    row_ok = rows < B
    return (
        rows,
        cols,
        row_ok,
        row_ok[:, None] & (cols < H)[None, :],
        rows[:, None] * H + cols[None, :],
        sync_ptr + tl.program_id(0),
    )


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
    return _read(
        a_ptr + rows[:, None] * a_stride + ks[None, :],
        row_ok[:, None] & k_ok[None, :],
        SPLIT,
        False,
    )


#: the bits (as int32) of what the buffers that POLL reads hold until written: a NaN that
#: no arithmetic on an NVIDIA GPU gives (its NaNs are 0x7fffffff), and that the kernels
#: store only where their arithmetic gave it (on a CPU, a NaN input's payload)
UNWRITTEN = tl.constexpr(-1)


@triton.jit
def _polled(at, ok):
    """What pointers ``at`` (any shape) point to where ``ok``, read where the tile's
    programs write it without a barrier (POLL=1): the buffer holds :data:`UNWRITTEN`
    until written, and each element is written once, so the program reads (``volatile``:
    from L2, never an old copy in L1) until none is :data:`UNWRITTEN`. What a barrier
    costs (its stores made visible, a counter's atomics, a poll of the counter, then the
    reads) is then one read, repeated while a program is late. As :func:`_sync`, it gives
    up after 2**16 reads (the results are then wrong, which
    :func:`mlstm4reco.layers._check_triton` catches; an element whose value has
    :data:`UNWRITTEN`'s bits costs that time, not its value)."""
    a = tl.load(at, mask=ok, other=0.0, volatile=True)
    polls = 0
    while (tl.max((a.to(tl.int32, bitcast=True) == UNWRITTEN).to(tl.int32)) > 0) & (polls < 65536):
        a = tl.load(at, mask=ok, other=0.0, volatile=True)
        polls += 1
    return a


@triton.jit
def _read(at, ok, SPLIT: tl.constexpr, POLL: tl.constexpr):
    """What pointers ``at`` point to where ``ok`` (else 0), other programs' writes among
    it: polled (:func:`_polled`) under POLL, else after a barrier, from L2 where the tile is
    split (``.cg``, as :func:`_a_chunk`)."""
    if POLL:
        return _polled(at, ok)
    else:
        return tl.load(at, mask=ok, other=0.0, cache_modifier=".cg" if SPLIT > 1 else "")


@triton.jit
def _slab(a_ptr, a_stride, rows, row_ok, ks, k_ok, SPLIT: tl.constexpr, POLL: tl.constexpr):
    """:func:`_a_chunk`, polled under POLL (:func:`_read`)."""
    return _read(
        a_ptr + rows[:, None] * a_stride + ks[None, :], row_ok[:, None] & k_ok[None, :], SPLIT, POLL
    )


@triton.jit
def _w_chunk(w_ptr, H, cols, ks, k_ok, TRANSPOSED: tl.constexpr):
    """Rows ks of W[:, cols] (of W transposed if TRANSPOSED), W an (H, H) matrix."""
    if TRANSPOSED:  # (k, j) -> W[j, k]
        return tl.load(
            w_ptr + cols[None, :] * H + ks[:, None],
            mask=k_ok[:, None] & (cols < H)[None, :],
            other=0.0,
        )
    else:  # (k, j) -> W[k, j]
        return tl.load(
            w_ptr + ks[:, None] * H + cols[None, :],
            mask=k_ok[:, None] & (cols < H)[None, :],
            other=0.0,
        )


@triton.jit
def _gate_weights(w_ptr, H, cols, ks, k_ok, TRANSPOSED: tl.constexpr):
    """Rows ks of each of the four gates' W[:, cols] (transposed if TRANSPOSED), W the
    (4H, H) stack of the gates' weights: :func:`_w_chunk` for each gate."""
    return (
        _w_chunk(w_ptr, H, cols, ks, k_ok, TRANSPOSED),
        _w_chunk(w_ptr + H * H, H, cols, ks, k_ok, TRANSPOSED),
        _w_chunk(w_ptr + 2 * H * H, H, cols, ks, k_ok, TRANSPOSED),
        _w_chunk(w_ptr + 3 * H * H, H, cols, ks, k_ok, TRANSPOSED),
    )


@triton.jit
def _stacked_gate_weights(w_ptr, H, cols, ks, k_ok):
    """Rows ks of each of the four gates' W[:, cols], W the (4H, H) stack of the gates'
    weights, as one (4, rows, cols) tensor: the right operand of a product batched over
    the gates (BATCHED)."""
    gates = tl.arange(0, 4)
    return tl.load(
        w_ptr + gates[:, None, None] * H * H + ks[None, :, None] * H + cols[None, None, :],
        mask=(gates < 4)[:, None, None] & k_ok[None, :, None] & (cols < H)[None, None, :],
        other=0.0,
    )


@triton.jit
def _tf32_split(x):
    """x as high + low parts: high x rounded to TF32 (10 mantissa bits, to nearest, ties
    away from zero, as ``cvt.rna.tf32.f32``), low the rest, exact in fp32: for X3."""
    high = ((x.to(tl.int32, bitcast=True) + 0x1000) & -0x2000).to(tl.float32, bitcast=True)
    return high, x - high


@triton.jit
def _product(a, w, w_low, acc, zero, PRECISION: tl.constexpr, X3: tl.constexpr):
    """acc + a @ w in PRECISION; under X3 (tf32x3 by hand: w the weights' high TF32 part,
    w_low the rest, split once before the first step), as three TF32 products with an
    accumulator each, a_high @ w + a_high @ w_low + a_low @ w: Triton's tf32x3 chains the
    three on one accumulator, so that a warp's tensor-core instructions wait each for
    the one before, three times as many in a row. ``zero``: a 0.0 Triton cannot tell is
    zero (:func:`_opaque_zero`): it folds dot(a, b, zeros) + c into dot(a, b, c), which
    would chain the three again."""
    if X3:
        a_high, a_low = _tf32_split(a)
        acc += zero  # (where acc is a constant, as zeros: folding dot(a_high, w, 0) + c too)
        zeros = tl.zeros(acc.shape, tl.float32) + zero
        corrections = tl.dot(a_high, w_low, zeros, input_precision="tf32") + tl.dot(
            a_low, w, zeros, input_precision="tf32"
        )
        return tl.dot(a_high, w, acc, input_precision="tf32") + corrections
    else:
        return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def _opaque_zero(T):
    """0.0, from the number of steps T (at least 1), which Triton cannot fold to a
    constant: :func:`_product`'s accumulators of zeros."""
    return tl.minimum(T, 0).to(tl.float32)


@triton.jit
def _parts(w, X3: tl.constexpr):
    """A resident weight block as the high part and the low part :func:`_product` takes:
    split under X3 (:func:`_tf32_split`), else the block twice (the low part unused)."""
    if X3:
        return _tf32_split(w)
    else:
        return w, w


@triton.jit
def _gate_parts(w_i, w_f, w_g, w_o, X3: tl.constexpr):
    """The four gates' resident weight blocks as :func:`_parts`: their high parts, then
    their low parts."""
    w_i, l_i = _parts(w_i, X3)
    w_f, l_f = _parts(w_f, X3)
    w_g, l_g = _parts(w_g, X3)
    w_o, l_o = _parts(w_o, X3)
    return w_i, w_f, w_g, w_o, l_i, l_f, l_g, l_o


@triton.jit
def _gate_batched_dot(
    g_ptr,
    rows,
    row_ok,
    H,
    w_front,
    w_back,
    l_front,
    l_back,
    zero,
    BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
    SPLIT: tl.constexpr,
    POLL: tl.constexpr,
    X3: tl.constexpr,
):
    """The sum over the gates of dGate @ W_gate[:, cols] (dGate this program's rows of
    the gate's block of a (rows, 5H) slab, g_ptr the first gate's) as products batched
    over the gates, whose four accumulators are independent, summed after. The inner
    dimension goes in two halves (w_front: :func:`_stacked_gate_weights` of units
    0..BLOCK_H/2, w_back of the rest), so that a warp holds half a gate's weights at a
    time (whole, they spill); l_front and l_back: their low parts under X3 (:func:`_product`)."""
    gates = tl.arange(0, 4)
    front = tl.arange(0, BLOCK_H // 2)
    back = front + BLOCK_H // 2
    at = g_ptr + gates[:, None, None] * H + rows[None, :, None] * 5 * H + front[None, None, :]
    ok = (gates < 4)[:, None, None] & row_ok[None, :, None]
    parts = _product(
        _read(at, ok & (front < H)[None, None, :], SPLIT, POLL),
        w_front,
        l_front,
        tl.zeros((4, rows.shape[0], w_front.shape[2]), tl.float32),
        zero,
        PRECISION,
        X3,
    )
    parts = _product(
        _read(at + BLOCK_H // 2, ok & (back < H)[None, None, :], SPLIT, POLL),
        w_back,
        l_back,
        parts,
        zero,
        PRECISION,
        X3,
    )
    return tl.sum(parts, axis=0)


@triton.jit
def _hidden_product(
    b_mh,
    hs_t,
    rows,
    row_ok,
    w_hm_ptr,
    w_hm,
    l_hm,
    zero,
    H,
    cols,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    RESIDENT: tl.constexpr,
    KC: tl.constexpr,
    PRECISION: tl.constexpr,
    K_STAGES: tl.constexpr,
    SPLIT: tl.constexpr,
    POLL: tl.constexpr,
    X3: tl.constexpr,
):
    """b_mh + h_{t-1} @ W_hm^T[:, cols], h_{t-1} this program's rows of hs_t: in one
    product from w_hm, W_hm^T[:, cols] loaded before the first step (RESIDENT; h_{t-1}
    polled under POLL; l_hm its low part under X3, :func:`_product`), or reading W_hm KC
    rows at a time (:func:`_chunked_dot`)."""
    mh = tl.zeros((BLOCK_B, cols.shape[0]), tl.float32) + b_mh[None, :]
    if RESIDENT:
        units = tl.arange(0, BLOCK_H)
        mh = _product(
            _slab(hs_t, H, rows, row_ok, units, units < H, SPLIT, POLL),
            w_hm,
            l_hm,
            mh,
            zero,
            PRECISION,
            X3,
        )
    else:
        mh = _chunked_dot(
            mh, hs_t, H, rows, row_ok, w_hm_ptr, H, cols, True, KC, PRECISION, K_STAGES, SPLIT
        )
    return mh


@triton.jit
def _gate_products(
    a,
    w_i,
    w_f,
    w_g,
    w_o,
    l_i,
    l_f,
    l_g,
    l_o,
    pre_i,
    pre_f,
    pre_g,
    pre_o,
    zero,
    PRECISION: tl.constexpr,
    X3: tl.constexpr,
):
    """pre_gate + a @ w_gate for each of the four gates (l_gate: w_gate's low part under
    X3, :func:`_product`)."""
    return (
        _product(a, w_i, l_i, pre_i, zero, PRECISION, X3),
        _product(a, w_f, l_f, pre_f, zero, PRECISION, X3),
        _product(a, w_g, l_g, pre_g, zero, PRECISION, X3),
        _product(a, w_o, l_o, pre_o, zero, PRECISION, X3),
    )


@triton.jit
def _chunked_dot(
    acc,
    a_ptr,
    a_stride,
    rows,
    row_ok,
    w_ptr,
    H,
    cols,
    TRANSPOSED: tl.constexpr,
    KC: tl.constexpr,
    PRECISION: tl.constexpr,
    K_STAGES: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """acc + A @ W[:, cols] (W transposed if TRANSPOSED), KC columns of A (rows of W)
    at a time: the operands never sit whole in registers."""
    for k in tl.range(0, H, KC, num_stages=K_STAGES):
        ks = k + tl.arange(0, KC)
        k_ok = ks < H
        a = _a_chunk(a_ptr, a_stride, rows, row_ok, ks, k_ok, SPLIT)
        acc = tl.dot(
            a, _w_chunk(w_ptr, H, cols, ks, k_ok, TRANSPOSED), acc, input_precision=PRECISION
        )
    return acc


@triton.jit
def _gate_dots(
    pre_i,
    pre_f,
    pre_g,
    pre_o,
    a_ptr,
    rows,
    row_ok,
    w_ptr,
    H,
    cols,
    KC: tl.constexpr,
    PRECISION: tl.constexpr,
    K_STAGES: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """The four gates' pre-activations plus M @ W_gate^T[:, cols], for M this program's
    rows of an (rows, H) slab and W the (4H, H) stack of the gates' weights: each chunk
    of M is read once for all four gates (it comes from L2; the weights from L1)."""
    for k in tl.range(0, H, KC, num_stages=K_STAGES):
        ks = k + tl.arange(0, KC)
        k_ok = ks < H
        a = _a_chunk(a_ptr, H, rows, row_ok, ks, k_ok, SPLIT)
        pre_i = tl.dot(
            a, _w_chunk(w_ptr, H, cols, ks, k_ok, True), pre_i, input_precision=PRECISION
        )
        pre_f = tl.dot(
            a, _w_chunk(w_ptr + H * H, H, cols, ks, k_ok, True), pre_f, input_precision=PRECISION
        )
        pre_g = tl.dot(
            a,
            _w_chunk(w_ptr + 2 * H * H, H, cols, ks, k_ok, True),
            pre_g,
            input_precision=PRECISION,
        )
        pre_o = tl.dot(
            a,
            _w_chunk(w_ptr + 3 * H * H, H, cols, ks, k_ok, True),
            pre_o,
            input_precision=PRECISION,
        )
    return pre_i, pre_f, pre_g, pre_o


@triton.jit
def _gate_gradient_dot(
    dm,
    g_ptr,
    rows,
    row_ok,
    w_ptr,
    H,
    cols,
    KC: tl.constexpr,
    PRECISION: tl.constexpr,
    K_STAGES: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """dm + sum over the gates of dGate @ W_gate[:, cols], dGate this program's rows of
    the gate's (rows, H) block of a (rows, 5H) slab (g_ptr: the first gate's block),
    W the (4H, H) stack: the four gates' chunks are loaded together, so that their
    reads from L2 overlap."""
    for k in tl.range(0, H, KC, num_stages=K_STAGES):
        ks = k + tl.arange(0, KC)
        k_ok = ks < H
        for gate in tl.static_range(4):
            a = _a_chunk(g_ptr + gate * H, 5 * H, rows, row_ok, ks, k_ok, SPLIT)
            dm = tl.dot(
                a,
                _w_chunk(w_ptr + gate * H * H, H, cols, ks, k_ok, False),
                dm,
                input_precision=PRECISION,
            )
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
    return (
        dc,
        dc * g * i * (1.0 - i),
        dc * c_prev * f * (1.0 - f),
        dc * i * (1.0 - g * g),
        dh * tanh_c * o * (1.0 - o),
    )


@triton.jit
def _saved(
    t,
    grad_hs_ptr,
    grad_cs_ptr,
    acts_ptr,
    tanh_cs_ptr,
    cs_ptr,
    B,
    H,
    rows,
    cols,
    mask,
    state,
    HAS_GRAD_HS: tl.constexpr,
    HAS_GRAD_CS: tl.constexpr,
):
    """What the backward kernels' step t reads first, where ``mask``: the upstream
    gradients of h_t and c_t (zeros where there are none), and the forward's gates, tanh c_t
    and c_{t-1}. No barrier guards them (the kernel's inputs): with PREFETCH they are
    loaded a step ahead."""
    at = t * B * H + state
    zeros = tl.zeros((rows.shape[0], cols.shape[0]), tl.float32)
    g_h = tl.load(grad_hs_ptr + at, mask=mask, other=0.0) if HAS_GRAD_HS else zeros
    g_c = tl.load(grad_cs_ptr + at, mask=mask, other=0.0) if HAS_GRAD_CS else zeros
    i, f, g, o = _load_gates(
        acts_ptr + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :], H, mask
    )
    tanh_c = tl.load(tanh_cs_ptr + at, mask=mask, other=0.0)
    c_prev = tl.load(cs_ptr + at, mask=mask, other=0.0)  # cs[t] = c_{t-1}
    return g_h, g_c, i, f, g, o, tanh_c, c_prev


@triton.jit
def _step_gradients(
    dh,
    dc,
    g_h,
    g_c,
    i,
    f,
    g,
    o,
    tanh_c,
    c_prev,
    HAS_GRAD_HS: tl.constexpr,
    HAS_GRAD_CS: tl.constexpr,
):
    """The backward kernels' step up to the gate gradients: the gradients of h_t and c_t
    from later steps (dh, dc) plus the upstream ones (g_h, g_c), through
    :func:`_gate_gradients` with what :func:`_saved` loaded. Returns dc and the four gate
    gradients."""
    if HAS_GRAD_HS:
        dh += g_h
    if HAS_GRAD_CS:
        dc += g_c
    return _gate_gradients(dh, dc, i, f, g, o, tanh_c, c_prev)


@triton.jit
def _factors(xp_ptr, mh_ptr, t, B, H, rows, cols, mask, state):
    """m_t's two factors as the forward computed them, W_mx x_t + b_mx and W_mh h_{t-1} +
    b_mh, in this program's columns where ``mask``: what the backward kernel's step t reads
    after the gradient of m_t, loaded with :func:`_saved` under PREFETCH."""
    xm = tl.load(
        xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H + cols[None, :], mask=mask, other=0.0
    )
    return xm, tl.load(mh_ptr + t * B * H + state, mask=mask, other=0.0)


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
    return (
        tl.load(ptr, mask=mask, other=0.0),
        tl.load(ptr + gap, mask=mask, other=0.0),
        tl.load(ptr + 2 * gap, mask=mask, other=0.0),
        tl.load(ptr + 3 * gap, mask=mask, other=0.0),
    )


@triton.jit
def _inputs(xp_ptr, t, B, H, rows, m_units, m_mask, cols, mask):
    """The forward kernels' step t's input projections: of m_t's first factor in units
    ``m_units`` (this program's columns, or all units) where ``m_mask``, and of the four
    gates in its columns where ``mask``. No barrier guards them (the kernel's input):
    with PREFETCH they are loaded a step ahead, so that their latency is off the step's
    critical path."""
    row = xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H
    x_i, x_f, x_g, x_o = _load_gates(row + H + cols[None, :], H, mask)
    return tl.load(row + m_units[None, :], mask=m_mask, other=0.0), x_i, x_f, x_g, x_o


@triton.jit
def forward_kernel(
    xp_ptr,
    w_hm_ptr,
    b_mh_ptr,
    w_mh_ptr,  # (T, B, 5H), (H, H), (H,), (4H, H)
    hs_ptr,
    cs_ptr,
    acts_ptr,
    tanh_cs_ptr,
    mh_ptr,
    ms_ptr,  # (T+1, B, H) x2, (T, B, 4H), (T, B, H) x3
    T,
    B,
    H,
    sync_ptr,  # (tiles,) zeroed counters of _sync
    HAS_B_MH: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    KC: tl.constexpr,
    PRECISION: tl.constexpr,
    K_STAGES: tl.constexpr,
    SPLIT: tl.constexpr,
    WAIT: tl.constexpr,
    STATIC_H: tl.constexpr,
    RESIDENT: tl.constexpr,
    PREFETCH: tl.constexpr,
    POLL: tl.constexpr,
    BATCHED: tl.constexpr,  # the backward's (backward_kernel)
    X3: tl.constexpr,
):
    """The forward recurrence (module docstring): m_t, then the gates, c_t and h_t, with a
    barrier after each of m_t and h_t (under POLL, hs[1:] and ms hold UNWRITTEN until
    written, and the programs poll them instead)."""
    if STATIC_H:  # H compiled in (launch_options(STATIC_H=1)): 16-byte accesses
        H = STATIC_H
    tl.static_assert(POLL <= RESIDENT, "POLL reads whole slabs: the weights must be resident")
    tl.static_assert(X3 <= RESIDENT, "X3 splits the resident weights")
    BLOCK_J: tl.constexpr = BLOCK_H // SPLIT
    rows, cols, row_ok, mask, state, count_ptr = _tile(B, H, sync_ptr, BLOCK_B, BLOCK_J)
    c = tl.load(cs_ptr + state, mask=mask, other=0.0)
    b_mh = (
        tl.load(b_mh_ptr + cols, mask=cols < H, other=0.0)
        if HAS_B_MH
        else tl.zeros((BLOCK_J,), tl.float32)
    )
    units = tl.arange(0, BLOCK_H)
    w_hm = w_hm_ptr  # the product reads its weights, KC rows at a time (_chunked_dot)...
    l_hm = w_hm_ptr
    zero = _opaque_zero(T)
    if RESIDENT:  # ... or they are this program's columns of them, loaded once (into shared memory)
        w_hm, l_hm = _parts(_w_chunk(w_hm_ptr, H, cols, units, units < H, True), X3)
        w_i, w_f, w_g, w_o = _gate_weights(w_mh_ptr, H, cols, units, units < H, True)
        w_i, w_f, w_g, w_o, l_i, l_f, l_g, l_o = _gate_parts(w_i, w_f, w_g, w_o, X3)
    # disable_licm: the weight chunks are the same at every step, and hoisted out of the
    # loop they would all be live at once, in registers (that spilled)
    if PREFETCH:  # the first step's input projections
        nx_m, nx_i, nx_f, nx_g, nx_o = _inputs(xp_ptr, 0, B, H, rows, cols, mask, cols, mask)
    for t in tl.range(T, disable_licm=True):
        # h_{t-1} and m_t are read back from global memory, KC columns at a time, by
        # _chunked_dot: each barrier makes the tile's stores visible to all its threads
        xp_row = xp_ptr + t * B * 5 * H + rows[:, None] * 5 * H + cols[None, :]
        step = t * B * H + state
        if PREFETCH:  # this step's inputs came a step ago; the next step's are loaded now
            x_m, x_i, x_f, x_g, x_o = nx_m, nx_i, nx_f, nx_g, nx_o
            later = tl.minimum(t + 1, T - 1)  # at the last step: that step again, unused
            nx_m, nx_i, nx_f, nx_g, nx_o = _inputs(
                xp_ptr, later, B, H, rows, cols, mask, cols, mask
            )
        mh = _hidden_product(
            b_mh,
            hs_ptr + t * B * H,
            rows,
            row_ok,
            w_hm_ptr,
            w_hm,
            l_hm,
            zero,
            H,
            cols,
            BLOCK_B,
            BLOCK_H,
            RESIDENT,
            KC,
            PRECISION,
            K_STAGES,
            SPLIT,
            POLL,
            X3,
        )
        if not PREFETCH:
            x_m = tl.load(xp_row, mask=mask, other=0.0)
        m = x_m * mh
        tl.store(mh_ptr + step, mh, mask=mask)
        tl.store(ms_ptr + step, m, mask=mask)
        if not POLL:
            _sync(count_ptr, (2 * t + 1) * SPLIT, SPLIT, WAIT)
        ms_t = ms_ptr + t * B * H
        if not PREFETCH:
            x_i, x_f, x_g, x_o = _load_gates(xp_row + H, H, mask)
        if RESIDENT:
            pre_i, pre_f, pre_g, pre_o = _gate_products(
                _slab(ms_t, H, rows, row_ok, units, units < H, SPLIT, POLL),
                w_i,
                w_f,
                w_g,
                w_o,
                l_i,
                l_f,
                l_g,
                l_o,
                x_i,
                x_f,
                x_g,
                x_o,
                zero,
                PRECISION,
                X3,
            )
        else:
            pre_i, pre_f, pre_g, pre_o = _gate_dots(
                x_i,
                x_f,
                x_g,
                x_o,
                ms_t,
                rows,
                row_ok,
                w_mh_ptr,
                H,
                cols,
                KC,
                PRECISION,
                K_STAGES,
                SPLIT,
            )
        i, f, g, o, c, tanh_c, h = _cell(pre_i, pre_f, pre_g, pre_o, c)
        tl.store(hs_ptr + B * H + step, h, mask=mask)
        tl.store(cs_ptr + B * H + step, c, mask=mask)
        tl.store(tanh_cs_ptr + step, tanh_c, mask=mask)
        _store_gates(
            acts_ptr + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :], H, i, f, g, o, mask
        )
        if not POLL:
            _sync(count_ptr, (2 * t + 2) * SPLIT, SPLIT, WAIT)


@triton.jit
def backward_kernel(
    grad_hs_ptr,
    grad_cs_ptr,  # (T, B, H) each, when present
    xp_ptr,
    acts_ptr,
    cs_ptr,
    tanh_cs_ptr,
    mh_ptr,
    w_hm_ptr,
    w_mh_ptr,
    grad_xp_ptr,
    grad_mh_ptr,
    grad_h0_ptr,
    grad_c0_ptr,  # (T, B, 5H), (T, B, H), (B, H) x2
    T,
    B,
    H,
    sync_ptr,  # (tiles,) zeroed counters of _sync
    HAS_GRAD_HS: tl.constexpr,
    HAS_GRAD_CS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    KC: tl.constexpr,
    PRECISION: tl.constexpr,
    K_STAGES: tl.constexpr,
    SPLIT: tl.constexpr,
    WAIT: tl.constexpr,
    STATIC_H: tl.constexpr,
    RESIDENT: tl.constexpr,
    PREFETCH: tl.constexpr,
    POLL: tl.constexpr,
    BATCHED: tl.constexpr,
    X3: tl.constexpr,
):
    """The backward recurrence (module docstring), from the last step to the first: the
    gate gradients, then the gradient of m_t, then dh_{t-1}, with a barrier after each of
    the gate gradients and the gradient of W_mh h_{t-1} (under POLL, grad_xp's gate blocks
    and grad_mh hold UNWRITTEN until written, and the programs poll them instead).

    The gradient of m_t sums four products, one a gate: chained on one accumulator, as by
    default, a warp's tensor-core instructions for them wait each for the one before (192
    in a row in tf32x3 at H = 120, each adding its latency to the step); BATCHED=1 (with
    the weights resident) batches them over the gates (:func:`_gate_batched_dot`): four
    independent chains summed at the end (48 in a row)."""
    if STATIC_H:  # H compiled in (launch_options(STATIC_H=1)): 16-byte accesses
        H = STATIC_H
    tl.static_assert(POLL <= RESIDENT, "POLL reads whole slabs: the weights must be resident")
    tl.static_assert(BATCHED <= RESIDENT, "BATCHED multiplies the resident weights")
    tl.static_assert(X3 <= RESIDENT, "X3 splits the resident weights")
    BLOCK_J: tl.constexpr = BLOCK_H // SPLIT
    rows, cols, row_ok, mask, state, count_ptr = _tile(B, H, sync_ptr, BLOCK_B, BLOCK_J)
    dh = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
    dc = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
    zero = _opaque_zero(T)
    if (
        RESIDENT
    ):  # this program's columns of the weights, loaded once (Triton keeps them in shared memory)
        units = tl.arange(0, BLOCK_H)
        w_hm, l_hm = _parts(_w_chunk(w_hm_ptr, H, cols, units, units < H, False), X3)
        if BATCHED:  # the gates' weights stacked, (4, units, cols), in two halves of the units
            front, back = tl.arange(0, BLOCK_H // 2), tl.arange(BLOCK_H // 2, BLOCK_H)
            w_front, l_front = _parts(
                _stacked_gate_weights(w_mh_ptr, H, cols, front, front < H), X3
            )
            w_back, l_back = _parts(_stacked_gate_weights(w_mh_ptr, H, cols, back, back < H), X3)
        else:
            w_i, w_f, w_g, w_o = _gate_weights(w_mh_ptr, H, cols, units, units < H, False)
            w_i, w_f, w_g, w_o, l_i, l_f, l_g, l_o = _gate_parts(w_i, w_f, w_g, w_o, X3)
    if PREFETCH:  # what the last step reads that no barrier guards
        n_gh, n_gc, n_i, n_f, n_g, n_o, n_tc, n_cp = _saved(
            T - 1,
            grad_hs_ptr,
            grad_cs_ptr,
            acts_ptr,
            tanh_cs_ptr,
            cs_ptr,
            B,
            H,
            rows,
            cols,
            mask,
            state,
            HAS_GRAD_HS,
            HAS_GRAD_CS,
        )
        n_xm, n_mh = _factors(xp_ptr, mh_ptr, T - 1, B, H, rows, cols, mask, state)
    for step in tl.range(T, disable_licm=True):
        t = T - 1 - step
        if PREFETCH:  # this step's came a step ago; the step before's are loaded now
            g_h, g_c, i, f, g, o, tanh_c, c_prev = n_gh, n_gc, n_i, n_f, n_g, n_o, n_tc, n_cp
            xm, mh = n_xm, n_mh
            earlier = tl.maximum(t - 1, 0)  # at the first step: that step again, unused
            n_gh, n_gc, n_i, n_f, n_g, n_o, n_tc, n_cp = _saved(
                earlier,
                grad_hs_ptr,
                grad_cs_ptr,
                acts_ptr,
                tanh_cs_ptr,
                cs_ptr,
                B,
                H,
                rows,
                cols,
                mask,
                state,
                HAS_GRAD_HS,
                HAS_GRAD_CS,
            )
            n_xm, n_mh = _factors(xp_ptr, mh_ptr, earlier, B, H, rows, cols, mask, state)
        else:
            g_h, g_c, i, f, g, o, tanh_c, c_prev = _saved(
                t,
                grad_hs_ptr,
                grad_cs_ptr,
                acts_ptr,
                tanh_cs_ptr,
                cs_ptr,
                B,
                H,
                rows,
                cols,
                mask,
                state,
                HAS_GRAD_HS,
                HAS_GRAD_CS,
            )
        dc, d_i, d_f, d_g, d_o = _step_gradients(
            dh, dc, g_h, g_c, i, f, g, o, tanh_c, c_prev, HAS_GRAD_HS, HAS_GRAD_CS
        )
        grad_xp_t = grad_xp_ptr + t * B * 5 * H
        grad_row = grad_xp_t + rows[:, None] * 5 * H + cols[None, :]
        _store_gates(grad_row + H, H, d_i, d_f, d_g, d_o, mask)
        if not POLL:
            _sync(
                count_ptr, (2 * step + 1) * SPLIT, SPLIT, WAIT
            )  # the gate gradients are read back
        dm = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
        if BATCHED:  # the four gates' gradient blocks, (4, rows, units), batched over the gates
            dm = _gate_batched_dot(
                grad_xp_t + H,
                rows,
                row_ok,
                H,
                w_front,
                w_back,
                l_front,
                l_back,
                zero,
                BLOCK_H,
                PRECISION,
                SPLIT,
                POLL,
                X3,
            )
        elif (
            RESIDENT
        ):  # each gate's gradient block loaded just before its product (all four at once: spills)
            unit_ok = units < H
            g_row = grad_xp_t + H
            dm = _product(
                _slab(g_row, 5 * H, rows, row_ok, units, unit_ok, SPLIT, POLL),
                w_i,
                l_i,
                dm,
                zero,
                PRECISION,
                X3,
            )
            dm = _product(
                _slab(g_row + H, 5 * H, rows, row_ok, units, unit_ok, SPLIT, POLL),
                w_f,
                l_f,
                dm,
                zero,
                PRECISION,
                X3,
            )
            dm = _product(
                _slab(g_row + 2 * H, 5 * H, rows, row_ok, units, unit_ok, SPLIT, POLL),
                w_g,
                l_g,
                dm,
                zero,
                PRECISION,
                X3,
            )
            dm = _product(
                _slab(g_row + 3 * H, 5 * H, rows, row_ok, units, unit_ok, SPLIT, POLL),
                w_o,
                l_o,
                dm,
                zero,
                PRECISION,
                X3,
            )
        else:
            dm = _gate_gradient_dot(
                dm, grad_xp_t + H, rows, row_ok, w_mh_ptr, H, cols, KC, PRECISION, K_STAGES, SPLIT
            )
        if not PREFETCH:
            xm, mh = _factors(xp_ptr, mh_ptr, t, B, H, rows, cols, mask, state)
        at = t * B * H + state
        tl.store(grad_row, dm * mh, mask=mask)  # d loss / d (W_mx x_t + b_mx)
        tl.store(grad_mh_ptr + at, dm * xm, mask=mask)  # d loss / d (W_mh h_{t-1} + b_mh)
        if not POLL:
            _sync(count_ptr, (2 * step + 2) * SPLIT, SPLIT, WAIT)
        dh = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
        if RESIDENT:
            dh = _product(
                _slab(grad_mh_ptr + t * B * H, H, rows, row_ok, units, units < H, SPLIT, POLL),
                w_hm,
                l_hm,
                dh,
                zero,
                PRECISION,
                X3,
            )
        else:
            dh = _chunked_dot(
                dh,
                grad_mh_ptr + t * B * H,
                H,
                rows,
                row_ok,
                w_hm_ptr,
                H,
                cols,
                False,
                KC,
                PRECISION,
                K_STAGES,
                SPLIT,
            )
        dc = dc * f
    tl.store(grad_h0_ptr + state, dh, mask=mask)
    tl.store(grad_c0_ptr + state, dc, mask=mask)
