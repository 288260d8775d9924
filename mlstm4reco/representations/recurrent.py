"""Recurrent representations: Spotlight's LSTM, a GRU (GRU4Rec's unit) and the mLSTM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlstm4reco.layers import MLSTM
from mlstm4reco.representations.base import SequenceNet

__all__ = ["LSTMNet", "GRUNet", "MLSTMNet", "recurrent_leaves_autocast"]


class LSTMNet(SequenceNet):
    """Spotlight's LSTM representation: a zero input is prepended as the first step so
    that the state at position t has seen items 0..t-1; ``nn.LSTM`` (cuDNN on a GPU)
    with zero initial state; hidden states score items.

    Parameters
    ----------
    num_items: int
        Number of item ids, padding id 0 included.
    embedding_dim: int
        Dimension of item embeddings and of the LSTM state.
    item_embedding_layer: nn.Embedding, optional
        An embedding layer to use instead of a new :class:`ScaledEmbedding`.
    sparse: bool
        Sparse gradients for the embeddings.
    num_layers: int
        Stacked LSTM layers (1 in Spotlight).

    References
    ----------
    Hidasi et al. Session-based recommendations with recurrent neural networks. 2015.
    """

    _recurrent = ("lstm", nn.LSTM)  # attribute name (in the state dict) and module class

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer: nn.Embedding | None = None,
        sparse: bool = False,
        num_layers: int = 1,
        **options,
    ) -> None:
        super().__init__(num_items, embedding_dim, item_embedding_layer, sparse, **options)
        name, module = self._recurrent
        setattr(
            self,
            name,
            module(embedding_dim, embedding_dim, num_layers=num_layers, batch_first=True),
        )

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        embeddings = self._embed(item_sequences)  # (B, T, D)
        embeddings = F.pad(embeddings, (0, 0, 1, 0))  # (B, T + 1, D), zero first step
        recurrent = getattr(self, self._recurrent[0])
        if recurrent_leaves_autocast(embeddings):
            with torch.autocast("cpu", enabled=False):
                states, _ = recurrent(embeddings.float())
        else:
            states, _ = recurrent(embeddings)  # (B, T + 1, D)
        return states


def recurrent_leaves_autocast(x: torch.Tensor) -> bool:
    """Whether ``nn.LSTM`` / ``nn.GRU`` on ``x`` must run outside autocast, in float32:
    under CPU autocast, on a CPU for which oneDNN has no bfloat16 kernels (no AVX-512, such
    as AVX2-only machines), PyTorch hands them to oneDNN in bfloat16 anyway and oneDNN
    refuses ("could not create a primitive descriptor for the LSTM forward propagation
    primitive")."""
    if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return False
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a PyTorch without the query: let autocast decide
        return False


class GRUNet(LSTMNet):
    """A GRU representation (the recurrent unit of GRU4Rec, Hidasi et al. 2015), built
    exactly as :class:`LSTMNet` (same parameters) with ``nn.GRU`` (cuDNN on a GPU), stored
    as ``gru``, in place of the LSTM."""

    _recurrent = ("gru", nn.GRU)


STATES = ("hidden", "cell")


class MLSTMNet(SequenceNet):
    """The multiplicative LSTM representation.

    The state before any item is a learned initial state (h_0, c_0), so no zero input is
    prepended: position t holds the state after items 0..t-1 and position 0 holds the
    learned initial state.

    Parameters
    ----------
    num_items: int
        Number of item ids, padding id 0 included.
    embedding_dim: int
        Dimension of the item embeddings and of the state.
    item_embedding_layer: nn.Embedding, optional
        An embedding layer to use instead of a new
        :class:`~mlstm4reco.representations.ScaledEmbedding`.
    sparse: bool
        Sparse gradients for the embeddings.
    multiplicative_bias: bool
        Whether m_t has biases (see :class:`~mlstm4reco.layers.MLSTMCell`).
    state: str
        Which state scores items: ``'cell'`` (c_t, the default, as the 2018 implementation
        did) or ``'hidden'`` (h_t, bounded in (-1, 1) like the LSTM baseline's); the two
        compared on MovieLens 1M: docs/results.md.
    num_layers: int
        Stacked mLSTM layers.
    forget_bias: float
        Added to the forget gate bias at initialisation.
    layer_norm: bool
        Layer normalisation inside the cell (see :class:`~mlstm4reco.layers.MLSTMCell`).
    implementation: str
        Passed to :class:`~mlstm4reco.layers.MLSTM`.

    References
    ----------
    Krause et al. Multiplicative LSTM for sequence modelling. arXiv:1609.07959, 2016.
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer: nn.Embedding | None = None,
        sparse: bool = False,
        multiplicative_bias: bool = True,
        state: str = "cell",
        num_layers: int = 1,
        forget_bias: float = 0.0,
        implementation: str = "auto",
        layer_norm: bool = False,
        **options,
    ) -> None:
        super().__init__(num_items, embedding_dim, item_embedding_layer, sparse, **options)
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        self.state = state
        self.mlstm = MLSTM(
            embedding_dim,
            embedding_dim,
            num_layers=num_layers,
            multiplicative_bias=multiplicative_bias,
            forget_bias=forget_bias,
            batch_first=True,
            implementation=implementation,
            layer_norm=layer_norm,
        )
        self.initial_hidden = nn.Parameter(torch.zeros(num_layers, embedding_dim))
        self.initial_cell = nn.Parameter(torch.zeros(num_layers, embedding_dim))

    def extra_repr(self) -> str:
        return f"state={self.state!r}"

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        B = item_sequences.shape[0]
        embeddings = self._embed(item_sequences)  # (B, T, D)
        h0 = self.initial_hidden.unsqueeze(1).expand(-1, B, -1)  # (L, B, D)
        c0 = self.initial_cell.unsqueeze(1).expand(-1, B, -1)
        hidden, cell = self.mlstm.states(embeddings, (h0, c0))  # (B, T, D) each
        if self.state == "hidden":
            first, rest = self.initial_hidden[-1], hidden
        else:
            first, rest = self.initial_cell[-1], cell
        return torch.cat([first.expand(B, 1, -1), rest], dim=1)  # (B, T + 1, D)
