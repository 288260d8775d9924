"""Multiplicative LSTM layers.

The multiplicative LSTM (mLSTM) of Krause et al., "Multiplicative LSTM for sequence
modelling" (2016, arXiv:1609.07959) replaces the previous hidden state in every LSTM
gate by an intermediate state that depends on the current input multiplicatively, so
that each input can choose its own recurrent transition:

    m_t = (W_mx x_t + b_mx) * (W_mh h_{t-1} + b_mh)
    i_t = sigmoid(W_ix x_t + W_im m_t + b_i)
    f_t = sigmoid(W_fx x_t + W_fm m_t + b_f)
    g_t =    tanh(W_gx x_t + W_gm m_t + b_g)
    o_t = sigmoid(W_ox x_t + W_om m_t + b_o)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

Layout of the parameters (gate order i, f, g, o as in ``torch.nn.LSTM``):

- ``weight_ih``  (5H, I): rows ``[W_mx; W_ix; W_fx; W_gx; W_ox]``, every input projection,
  so that a whole sequence is projected by one matrix multiplication;
- ``weight_hm``  (H, H): ``W_mh``, previous hidden state to the multiplicative state;
- ``weight_mh``  (4H, H): ``[W_im; W_fm; W_gm; W_om]``, multiplicative state to the gates;
- ``bias``       (4H,): gate biases, with ``bias=True``;
- ``bias_mx``, ``bias_mh`` (H,): the two biases of m_t, with ``multiplicative_bias=True``;
- ``ln_weight`` (4H,), ``ln_cell_weight``, ``ln_cell_bias`` (H,): with ``layer_norm=True``.

With ``layer_norm=True`` (layer normalisation, Ba et al. 2016, as in LSTMs with layer
normalisation: each gate's pre-activation normalised on its own, and the cell state before
its tanh) the gates and the output become

    a_t = W_*x x_t + W_*m m_t                               (one of i, f, g, o)
    gate_t = act(LN(a_t) * ln_weight_* + b_*)
    h_t = o_t * tanh(LN(c_t) * ln_cell_weight + ln_cell_bias)

while c_t itself is not normalised.

:class:`MLSTMCell` computes one step; :class:`MLSTM` runs (stacked) cells over a sequence
with one of two implementations that give the same numbers:

- ``'reference'``: a plain loop over :meth:`MLSTMCell.forward`, differentiated by autograd;
- ``'fused'``: the input projections of all time steps in one matmul before the time loop,
  and an explicit backward pass (:class:`_FusedMLSTM`) whose per-step work is the two
  recurrent matmuls and the gate arithmetic; the weight gradients are one matmul each over
  all steps after the loop.
"""

from __future__ import annotations

import copy
import math
import threading
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["MLSTMCell", "MLSTM"]

IMPLEMENTATIONS = ("auto", "fused", "reference", "triton")


def _check_input(x: torch.Tensor, dim: int, input_size: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dim:
        raise ValueError(
            f"{name}: expected a {dim}-D input, got {x.dim()}-D with shape {tuple(x.shape)}"
        )
    if x.shape[-1] != input_size:
        raise ValueError(
            f"{name}: expected input feature size {input_size}, got {x.shape[-1]} "
            f"(input shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating point input, got {x.dtype}")


class MLSTMCell(nn.Module):
    """One step of a multiplicative LSTM.

    Parameters
    ----------
    input_size: int
        Features of the input x_t.
    hidden_size: int
        Features of the hidden state h_t, the cell state c_t and the multiplicative
        state m_t.
    bias: bool
        Whether the four gates have biases b_i, b_f, b_g, b_o.
    multiplicative_bias: bool
        Whether m_t has the two biases b_mx and b_mh. Without them
        m_t = (W_mx x_t) * (W_mh h_{t-1}), as in Krause et al.; the 2018 study of mLSTM
        recommenders reports both variants.
    forget_bias: float
        Constant added to the forget gate bias after the uniform initialisation
        (0 gives PyTorch's LSTM initialisation; 1 is a common choice for long sequences).
    layer_norm: bool
        Layer normalisation of each gate's pre-activation and of the cell state before
        its tanh (see the module's docstring); gains start at 1, the cell's shift at 0.

    Shapes
    ------
    ``forward(x, (h, c))``: x (B, input_size), h and c (B, hidden_size); returns (h', c').
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        multiplicative_bias: bool = True,
        forget_bias: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"input_size and hidden_size must be positive, got {input_size} and {hidden_size}"
            )
        if forget_bias and not bias:
            raise ValueError(f"forget_bias={forget_bias} needs bias=True")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.multiplicative_bias = multiplicative_bias
        self.forget_bias = float(forget_bias)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(5 * H, input_size))
        self.weight_hm = nn.Parameter(torch.empty(H, H))
        self.weight_mh = nn.Parameter(torch.empty(4 * H, H))
        self.bias = nn.Parameter(torch.empty(4 * H)) if bias else None
        if multiplicative_bias:
            self.bias_mx = nn.Parameter(torch.empty(H))
            self.bias_mh = nn.Parameter(torch.empty(H))
        else:
            self.bias_mx = self.bias_mh = None
        self.layer_norm = layer_norm
        if layer_norm:
            self.ln_weight = nn.Parameter(torch.empty(4 * H))
            self.ln_cell_weight = nn.Parameter(torch.empty(H))
            self.ln_cell_bias = nn.Parameter(torch.empty(H))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in (-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as
        ``torch.nn.LSTM``; then ``forget_bias`` is added to the forget gate's bias. Layer
        normalisation gains are 1 and its shift 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if self.layer_norm:
            nn.init.ones_(self.ln_weight)
            nn.init.ones_(self.ln_cell_weight)
            nn.init.zeros_(self.ln_cell_bias)
        if self.bias is not None and self.forget_bias:
            H = self.hidden_size
            with torch.no_grad():
                self.bias[H : 2 * H] += self.forget_bias

    @property
    def bias_ih(self) -> torch.Tensor | None:
        """Bias of the stacked input projection ``weight_ih`` (5H,), or None: b_mx then
        the gate biases, with zeros for the part that is switched off."""
        if self.bias is None and self.bias_mx is None:
            return None
        H = self.hidden_size
        ref = self.weight_ih
        b_mx = self.bias_mx if self.bias_mx is not None else ref.new_zeros(H)
        b_g = self.bias if self.bias is not None else ref.new_zeros(4 * H)
        return torch.cat([b_mx, b_g])

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is None:
            s += ", bias=False"
        if not self.multiplicative_bias:
            s += ", multiplicative_bias=False"
        if self.forget_bias:
            s += f", forget_bias={self.forget_bias}"
        if self.layer_norm:
            s += ", layer_norm=True"
        return s

    def forward(
        self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_input(x, 2, self.input_size, "MLSTMCell")
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            hx = (zeros, zeros)
        h, c = hx
        if self.layer_norm:
            return self._forward_layer_norm(x, h, c)
        H = self.hidden_size
        xp = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 5H)
        m = xp[:, :H] * F.linear(h, self.weight_hm, self.bias_mh)  # (B, H)
        gates = xp[:, H:] + F.linear(m, self.weight_mh)  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def _forward_layer_norm(self, x, h, c):
        B, H = x.shape[0], self.hidden_size
        xp = F.linear(x, self.weight_ih)  # (B, 5H)
        mx = xp[:, :H] if self.bias_mx is None else xp[:, :H] + self.bias_mx
        m = mx * F.linear(h, self.weight_hm, self.bias_mh)  # (B, H)
        a = (xp[:, H:] + F.linear(m, self.weight_mh)).view(B, 4, H)
        gates = F.layer_norm(a, (H,)).reshape(B, 4 * H) * self.ln_weight
        if self.bias is not None:
            gates = gates + self.bias
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        normalised = F.layer_norm(c, (H,), self.ln_cell_weight, self.ln_cell_bias)
        h = torch.sigmoid(o) * torch.tanh(normalised)
        return h, c


_scratch = threading.local()


def _workspace(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A per-thread buffer reused across calls, for temporaries of the backward pass
    (nothing returned or saved aliases it). Large fresh allocations are page-faulted in
    on every call on the CPU; a reused one is not (10% of a training step here)."""
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (name, like.device, like.dtype)
    buffer = buffers.get(key)
    if buffer is None or buffer.shape != shape:
        buffer = buffers[key] = like.new_empty(shape)
    return buffer


class _FusedMLSTM(torch.autograd.Function):
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
        if bias_ih is None:
            xp = torch.mm(flat_x, weight_ih.t())
        else:
            xp = torch.addmm(bias_ih, flat_x, weight_ih.t())
        xp = xp.view(T, B, 5 * H)  # (T, B, 5H)
        hs = x.new_empty(T + 1, B, H)  # hs[t + 1] = h_t; hs[0] = h0
        cs = x.new_empty(T + 1, B, H)
        tanh_cs = x.new_empty(T, B, H)
        mh = x.new_empty(T, B, H)  # W_mh h_{t-1} + b_mh
        ms = x.new_empty(T, B, H)  # m_t
        hs[0] = h0
        cs[0] = c0
        w_hm_t, w_mh_t = weight_hm.t(), weight_mh.t()
        for t in range(T):
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
        acts = xp[:, :, H:]  # (T, B, 4H): i, f, g, o
        grad_xp = _workspace("grad_xp", (T, B, 5 * H), flat_x)
        grad_m = _workspace("grad_m", (T, B, H), flat_x)  # d loss / d m_t
        grad_mh = _workspace("grad_mh", (T, B, H), flat_x)  # d loss / d (W_mh h_{t-1} + b_mh)
        # Small per-step buffers (cache resident): T-sized temporaries would cost more in
        # page faults than they save in dispatches.
        dact = flat_x.new_empty(B, 4 * H)  # activation derivatives: s (1 - s), or 1 - g^2 for g
        upstream = flat_x.new_empty(B, 4 * H)  # d loss / d (i, f, g, o)
        dh = flat_x.new_zeros(B, H)
        dc = flat_x.new_zeros(B, H)
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
        torch.mul(grad_m, mh, out=grad_xp[:, :, :H])
        return _input_and_weight_gradients(flat_x, weight_ih, grad_xp, grad_mh, ms, hs, ctx.has_bias, dh, dc)


def _input_and_weight_gradients(flat_x, weight_ih, grad_xp, grad_mh, ms, hs, has_bias, grad_h0, grad_c0):
    """The gradients of an mLSTM layer's forward arguments once the recurrence is done:
    ``grad_xp`` (T, B, 5H) and ``grad_mh`` (T, B, H) hold the gradients of the input
    projections and of W_mh h_{t-1} + b_mh at every step; each weight gradient is one
    matmul over all T * B rows. Returns them in the forward's argument order."""
    T, B, H5 = grad_xp.shape
    H = H5 // 5
    grad_xp_flat = grad_xp.view(T * B, 5 * H)
    grad_mh_flat = grad_mh.view(T * B, H)
    grad_x = grad_xp_flat.mm(weight_ih).view(T, B, -1)
    grad_weight_ih = grad_xp_flat.t().mm(flat_x)
    grad_weight_mh = grad_xp_flat[:, H:].t().mm(ms.view(T * B, H))
    grad_weight_hm = grad_mh_flat.t().mm(hs[:-1].reshape(T * B, H))
    grad_bias_ih = grad_xp_flat.sum(0) if has_bias[0] else None
    grad_bias_mh = grad_mh_flat.sum(0) if has_bias[1] else None
    return (grad_x, grad_weight_ih, grad_bias_ih, grad_h0, grad_c0, grad_weight_hm, grad_bias_mh,
            grad_weight_mh)


def _layer_triton(cell, x_tm, h, c):
    from mlstm4reco.triton_mlstm import TritonMLSTM

    return TritonMLSTM.apply(x_tm, cell.weight_ih, cell.bias_ih, h, c, cell.weight_hm, cell.bias_mh,
                             cell.weight_mh)


#: (device, input size, hidden size, bias, multiplicative bias) -> None when the kernels passed
#: :func:`_check_triton` there, else why they did not; 'auto' then uses the fused path.
_triton_verdicts: dict[tuple, str | None] = {}


def _largest_relative_difference(actual, expected) -> float:
    """The largest difference between paired tensors, relative to each expected tensor's
    largest magnitude."""
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(actual, expected))


def _check_triton(cell: MLSTMCell, device: torch.device) -> str | None:
    """Run the Triton kernels once, forward and backward, on a small random problem (3
    steps, 19 sequences: a full tile and a partly masked one) with a copy of ``cell``'s
    weights, against the fused path: both state sequences and every input and parameter
    gradient, with the kernels' default products (tf32x3), once with each program of the
    grid on all hidden units and once with them split across programs as far as this GPU
    allows (see :func:`mlstm4reco.triton_mlstm._split`). None when every tensor agrees
    to 1e-3 of its largest value, else why not. This is how 'auto' guards against kernels
    that fail, or build but compute wrongly, on a device or Triton version the test suite
    never ran on."""
    from mlstm4reco import triton_mlstm

    generator = torch.Generator().manual_seed(0)
    H = cell.hidden_size

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    def run(layer):
        probe = copy.deepcopy(cell).to(device)
        probe.zero_grad(set_to_none=True)
        inputs = [t.clone().requires_grad_(True) for t in (x, h, c)]
        states = layer(probe, *inputs)
        torch.autograd.backward(states, upstream)
        return [s.detach() for s in states] + [t.grad for t in inputs] + [p.grad for p in probe.parameters()]

    x, h, c = randn(3, 19, cell.input_size), randn(19, H), randn(19, H)
    upstream = (randn(3, 19, H), randn(3, 19, H))
    try:
        split = triton_mlstm._launch(H, 19, triton_mlstm._multiprocessors(device))["SPLIT"]
        with torch.inference_mode(False), torch.enable_grad(), triton_mlstm.dot_precision("tf32x3"):
            expected = run(MLSTM._layer_fused)
            for programs in sorted({1, split}):
                with triton_mlstm.launch_options(SPLIT=programs):
                    worst = _largest_relative_difference(run(_layer_triton), expected)
                if worst > 1e-3:
                    return (f"they differ from the fused path by {worst:.1e} of a tensor's largest value "
                            f"(hidden units split across {programs} programs)")
    except Exception as error:  # noqa: BLE001 - any failure of the kernels is a verdict
        return f"{type(error).__name__}: {error}"
    return None


class MLSTM(nn.Module):
    """A multiplicative LSTM over sequences, shaped like ``torch.nn.LSTM``.

    Parameters
    ----------
    input_size, hidden_size, bias, multiplicative_bias, forget_bias, layer_norm:
        As :class:`MLSTMCell`.
    num_layers: int
        Stacked layers; layer l > 0 reads the hidden states of layer l - 1.
    batch_first: bool
        Inputs and outputs are (B, T, F) when True (the default, as in Spotlight), else
        (T, B, F).
    implementation: str
        ``'fused'`` (hoisted input projection, explicit backward), ``'reference'`` (a loop
        over :class:`MLSTMCell`), ``'triton'`` (persistent GPU kernels, see
        :mod:`mlstm4reco.triton_mlstm`; float32 on CUDA, or on the CPU under
        ``TRITON_INTERPRET=1``), or ``'auto'``: ``'triton'`` for float32 CUDA inputs when
        Triton is installed, ``hidden_size`` is at most
        :data:`~mlstm4reco.triton_mlstm.MAX_AUTO_HIDDEN`, T * B * 5H is below 2**31 and
        the kernels have matched the fused path on a small problem on that device (else
        ``'fused'``, with one warning saying why), ``'reference'`` with ``layer_norm``
        (which only it implements), else ``'fused'``. All give the same numbers up to
        floating point rounding. Under ``torch.autocast`` (mixed precision) every
        implementation runs the recurrence in float32 and returns float32 states: the
        hand-written backward passes and the kernels are float32, and a long recurrence is
        where low precision compounds; the matmuls around the layer (embeddings, scoring,
        softmax) are the ones autocast makes cheaper.

    Shapes
    ------
    ``forward(x, hx=None) -> (output, (h_n, c_n))`` like ``nn.LSTM``: output holds
    h_1..h_T of the last layer; h_n and c_n are (num_layers, B, H); ``hx`` defaults to
    zeros. :meth:`states` returns h_1..h_T and c_1..c_T of the last layer.

    References
    ----------
    B. Krause, L. Lu, I. Murray, S. Renals. Multiplicative LSTM for sequence modelling.
    arXiv:1609.07959, 2016.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        multiplicative_bias: bool = True,
        forget_bias: float = 0.0,
        batch_first: bool = True,
        implementation: str = "auto",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        if layer_norm and implementation in ("fused", "triton"):
            raise ValueError(f"layer_norm=True needs implementation 'reference' or 'auto'; "
                             f"the {implementation} path has no layer normalisation")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.implementation = implementation
        self.cells = nn.ModuleList(
            MLSTMCell(
                input_size if layer == 0 else hidden_size,
                hidden_size,
                bias=bias,
                multiplicative_bias=multiplicative_bias,
                forget_bias=forget_bias,
                layer_norm=layer_norm,
            )
            for layer in range(num_layers)
        )

    def reset_parameters(self) -> None:
        """Re-initialise every cell (see :meth:`MLSTMCell.reset_parameters`)."""
        for cell in self.cells:
            cell.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.batch_first:
            s += ", batch_first=False"
        if self.implementation != "auto":
            s += f", implementation={self.implementation!r}"
        if self.cells[0].layer_norm:
            s += ", layer_norm=True"
        return s

    def _initial_state(self, x_tm: torch.Tensor, hx) -> tuple[torch.Tensor, torch.Tensor]:
        B = x_tm.shape[1]
        expected = (self.num_layers, B, self.hidden_size)
        if hx is None:
            zeros = x_tm.new_zeros(expected)
            return zeros, zeros
        h0, c0 = hx
        for name, s in (("h0", h0), ("c0", c0)):
            if tuple(s.shape) != expected:
                raise ValueError(
                    f"MLSTM: expected {name} of shape {expected}, got {tuple(s.shape)}"
                )
        return h0, c0

    def _layer_reference(self, cell, x_tm, h, c):
        hs, cs = [], []
        for x_t in x_tm:
            h, c = cell(x_t, (h, c))
            hs.append(h)
            cs.append(c)
        return torch.stack(hs), torch.stack(cs)

    @staticmethod
    def _layer_fused(cell, x_tm, h, c):
        return _FusedMLSTM.apply(
            x_tm,
            cell.weight_ih,
            cell.bias_ih,
            h,
            c,
            cell.weight_hm,
            cell.bias_mh,
            cell.weight_mh,
        )

    def _layer_function(self, x_tm: torch.Tensor):
        """The implementation that runs on ``x_tm``: see the ``implementation`` parameter."""
        from mlstm4reco import triton_mlstm

        chosen = self.implementation
        if chosen == "triton" and not (triton_mlstm.usable(x_tm) and x_tm.dtype == torch.float32):
            raise ValueError(
                "implementation='triton' needs Triton and float32 tensors on a CUDA device (or on "
                f"the CPU with TRITON_INTERPRET=1); got {x_tm.dtype} on {x_tm.device}, Triton "
                f"{'installed' if triton_mlstm.available() else 'not installed'}"
            )
        if chosen == "auto":
            if self.cells[0].layer_norm:
                chosen = "reference"
            elif (x_tm.is_cuda and x_tm.dtype == torch.float32 and triton_mlstm.available()
                  and self.hidden_size <= triton_mlstm.MAX_AUTO_HIDDEN
                  and triton_mlstm.indexable(x_tm.shape[0], x_tm.shape[1], self.hidden_size)):
                chosen = "triton"
            else:
                chosen = "fused"
        return {"reference": self._layer_reference, "fused": self._layer_fused,
                "triton": self._layer_triton_or_fused if self.implementation == "auto" else _layer_triton}[chosen]

    @classmethod
    def _layer_triton_or_fused(cls, cell, x_tm, h, c):
        """'auto' on a GPU: the Triton kernels where they passed :func:`_check_triton` on
        this device for this shape of cell under the launch options in force
        (:func:`mlstm4reco.triton_mlstm.launch_options`), else the fused path (one warning
        per verdict)."""
        from mlstm4reco import triton_mlstm

        key = (str(x_tm.device), cell.input_size, cell.hidden_size, cell.bias is not None,
               cell.multiplicative_bias, triton_mlstm.overrides_key())
        if key not in _triton_verdicts:
            _triton_verdicts[key] = _check_triton(cell, x_tm.device)
            if _triton_verdicts[key] is not None:
                warnings.warn(f"MLSTM: the Triton kernels failed their check on {x_tm.device} "
                              f"({_triton_verdicts[key]}); using the fused PyTorch path instead",
                              RuntimeWarning, stacklevel=3)
        if _triton_verdicts[key] is None:
            return _layer_triton(cell, x_tm, h, c)
        return cls._layer_fused(cell, x_tm, h, c)

    def states(self, x: torch.Tensor, hx=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every hidden state h_1..h_T and every cell state c_1..c_T of the last layer,
        each shaped like the output of :meth:`forward`."""
        hs, cs, _ = self._run(x, hx)
        return hs, cs

    def forward(self, x: torch.Tensor, hx=None):
        hs, _, (h_n, c_n) = self._run(x, hx)
        return hs, (h_n, c_n)

    def _run(self, x: torch.Tensor, hx):
        if torch.is_autocast_enabled(x.device.type):  # the recurrence stays float32
            with torch.autocast(x.device.type, enabled=False):
                return self._run(x.float(), None if hx is None else tuple(s.float() for s in hx))
        _check_input(x, 3, self.input_size, "MLSTM")
        x_tm = x.transpose(0, 1) if self.batch_first else x  # (T, B, F)
        if x_tm.shape[0] == 0:
            raise ValueError(f"MLSTM: expected at least one time step, got shape {tuple(x.shape)}")
        h0, c0 = self._initial_state(x_tm, hx)
        layer = self._layer_function(x_tm)
        h_n, c_n = [], []
        for index, cell in enumerate(self.cells):
            hs, cs = layer(cell, x_tm, h0[index], c0[index])  # (T, B, H) each
            h_n.append(hs[-1])
            c_n.append(cs[-1])
            x_tm = hs
        if self.batch_first:
            hs, cs = hs.transpose(0, 1), cs.transpose(0, 1)
        return hs, cs, (torch.stack(h_n), torch.stack(c_n))
