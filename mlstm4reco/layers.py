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
  and an explicit backward pass (:class:`~mlstm4reco.fused.FusedMLSTM`) whose per-step
  work is the two recurrent matmuls and the gate arithmetic; the weight gradients are one
  matmul each over all steps after the loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mlstm4reco import fused, triton_mlstm

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


class MLSTM(nn.Module):
    """A multiplicative LSTM over sequences, shaped like ``torch.nn.LSTM``.

    Parameters
    ----------
    input_size: int
        Features of the input x_t (as :class:`MLSTMCell`).
    hidden_size: int
        Features of h_t, c_t and m_t.
    bias: bool
        Gate biases (as :class:`MLSTMCell`).
    multiplicative_bias: bool
        The two biases of m_t (as :class:`MLSTMCell`).
    forget_bias: float
        Added to the forget gate bias at initialisation.
    layer_norm: bool
        Layer normalisation of the gates and the cell (as :class:`MLSTMCell`).
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
            raise ValueError(
                f"layer_norm=True needs implementation 'reference' or 'auto'; "
                f"the {implementation} path has no layer normalisation"
            )
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

    def _layer_function(self, x_tm: torch.Tensor):
        """The implementation that runs on ``x_tm``: see the ``implementation`` parameter."""
        chosen = self.implementation
        if chosen == "triton" and not (triton_mlstm.usable(x_tm) and x_tm.dtype == torch.float32):
            raise ValueError(
                "implementation='triton' needs Triton and float32 tensors on a CUDA device (or on "
                f"the CPU with TRITON_INTERPRET=1); got {x_tm.dtype} on {x_tm.device}, Triton "
                f"{'installed' if triton_mlstm.available() else 'not installed'}"
            )
        if chosen == "triton":
            return triton_mlstm.layer
        if chosen == "auto":
            if self.cells[0].layer_norm:
                return self._layer_reference
            if (
                x_tm.is_cuda
                and x_tm.dtype == torch.float32
                and triton_mlstm.available()
                and self.hidden_size <= triton_mlstm.MAX_AUTO_HIDDEN
                and triton_mlstm.indexable(x_tm.shape[0], x_tm.shape[1], self.hidden_size)
            ):
                return triton_mlstm.checked_layer_or_fused
            return fused.layer
        return self._layer_reference if chosen == "reference" else fused.layer

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
