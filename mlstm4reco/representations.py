"""Sequence representations in Spotlight's protocol.

A representation turns a batch of item sequences into user states and scores items
against them, exactly as Spotlight's ``spotlight.sequence.representations`` classes do,
so an instance can be handed to real Spotlight's
``ImplicitSequenceModel(representation=net)`` as well as to this library's:

    all_reps, final = net.user_representation(item_sequences)  # (B, D, T), (B, D)
    scores = net(all_reps, targets)                             # (B, T)

``all_reps[:, :, t]`` has seen the items before position t only (position 0 has seen
nothing) and ``final`` has seen the whole sequence; a score is the dot product of a state
and an item embedding plus the item's bias. Item id 0 is padding.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from mlstm4reco.layers import MLSTM

__all__ = [
    "PADDING_IDX", "SequenceRepresentation", "ScoresItems", "ScaledEmbedding", "ZeroEmbedding",
    "LSTMNet", "GRUNet", "MLSTMNet", "PoolNet", "CNNNet", "recurrent_leaves_autocast",
]

PADDING_IDX = 0


@runtime_checkable
class SequenceRepresentation(Protocol):
    """The contract of a representation (Spotlight's, by convention): what
    ``ImplicitSequenceModel`` needs of any net, here's or real Spotlight's."""

    def user_representation(self, item_sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) item ids -> (B, D, T) states (position t has seen the items before t)
        and (B, D) final states (seen all T)."""

    def __call__(self, user_representations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scores of ``targets``: (B, D, T) with (B, T) -> (B, T); (B, D) with (B,) -> (B,)."""


@runtime_checkable
class ScoresItems(Protocol):
    """The optional part of the contract, for batched scoring and the softmax losses;
    a net without it is scored one sequence at a time through Spotlight's call."""

    def score_items(self, states: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) states -> (..., S) scores of ``items`` (ids or a slice; None: all ids)."""

    def score_all(self, final_representation: torch.Tensor) -> torch.Tensor:
        """(B, D) final states (or the net's own final form) -> (B, N) scores of every id."""

    def position_states(self, all_representations: torch.Tensor) -> torch.Tensor:
        """``user_representation``'s first output as one state per position, (B, T, ...),
        the input of :meth:`score_items`."""


class ScaledEmbedding(nn.Embedding):
    """Embedding initialised normal with std 1 / embedding_dim, padding row zero
    (Spotlight's initialisation of item embeddings)."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0 / self.embedding_dim)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.weight[self.padding_idx].zero_()


class ZeroEmbedding(nn.Embedding):
    """Embedding initialised to zero (item biases)."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)


def check_item_sequences(item_sequences: torch.Tensor, num_items: int) -> None:
    """Raise ValueError unless ``item_sequences`` is a 2-D integer tensor of ids in
    [0, num_items)."""
    if not isinstance(item_sequences, torch.Tensor):
        raise ValueError(
            f"item_sequences: expected a torch.Tensor, got {type(item_sequences).__name__}"
        )
    if item_sequences.dim() != 2:
        raise ValueError(
            "item_sequences: expected a 2-D (batch, time) tensor, got "
            f"{item_sequences.dim()}-D with shape {tuple(item_sequences.shape)}"
        )
    if item_sequences.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"item_sequences: expected integer item ids, got {item_sequences.dtype}")
    if item_sequences.shape[1] == 0:
        raise ValueError(
            f"item_sequences: expected at least one time step, got shape "
            f"{tuple(item_sequences.shape)}"
        )
    if item_sequences.numel():
        low, high = int(item_sequences.min()), int(item_sequences.max())
        if low < 0 or high >= num_items:
            raise ValueError(
                f"item_sequences: expected item ids in [0, {num_items}), got ids from "
                f"{low} to {high}"
            )


class _SequenceNet(nn.Module):
    """Item embeddings, item biases, scoring and checks shared by the representations.

    Subclasses implement ``_states(item_sequences) -> (B, T + 1, D)``: the state before
    any item, then the state after each item, reading items through :meth:`_embed`.

    Options every representation takes (keyword only):

    - ``dropout``: dropout probability on the input item embeddings and on the states
      that score items (training only; 0 = Spotlight's nets);
    - ``tie_embeddings``: score items with the input item embeddings (True, Spotlight's
      choice) or with separate output embeddings (False).
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer: nn.Embedding | None = None,
        sparse: bool = False,
        *,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_items < 2:
            raise ValueError(f"num_items must be at least 2 (id 0 is padding), got {num_items}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        if item_embedding_layer is None:
            item_embedding_layer = ScaledEmbedding(
                num_items, embedding_dim, padding_idx=PADDING_IDX, sparse=sparse
            )
        elif item_embedding_layer.embedding_dim != embedding_dim:
            raise ValueError(
                f"item_embedding_layer has dimension {item_embedding_layer.embedding_dim}, "
                f"expected embedding_dim={embedding_dim}"
            )
        self.item_embeddings = item_embedding_layer
        self.item_biases = ZeroEmbedding(num_items, 1, sparse=sparse, padding_idx=PADDING_IDX)
        self.output_embeddings = None if tie_embeddings else ScaledEmbedding(
            num_items, embedding_dim, padding_idx=PADDING_IDX, sparse=sparse
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def scoring_embeddings(self) -> nn.Embedding:
        """The embeddings items are scored with (the input ones when tied)."""
        return self.item_embeddings if self.output_embeddings is None else self.output_embeddings

    def _embed(self, item_sequences: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.item_embeddings(item_sequences))  # (B, T, D)

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def user_representation(self, item_sequences: torch.Tensor):
        """States of the user along each sequence.

        Parameters
        ----------
        item_sequences: tensor (B, T) of item ids, left-padded with 0.

        Returns
        -------
        (all_representations, final_representation): (B, D, T) and (B, D). Position t
        of the first has seen items 0..t-1; the second has seen all T items.
        """
        check_item_sequences(item_sequences, self.num_items)
        states = self.dropout(self._states(item_sequences.long())).transpose(1, 2)  # (B, D, T + 1)
        return states[:, :, :-1], states[:, :, -1]

    def forward(self, user_representations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scores of ``targets`` given user states: dot product plus item bias.

        Accepts Spotlight's two calls: (B, D, T) states with (B, T) targets give (B, T)
        scores; (B, D) states with (B,) or (B, 1) targets give (B,) scores.
        """
        if user_representations.dim() == 2:  # one state per row: Spotlight's predict
            targets = targets.reshape(user_representations.shape[0], 1)
            return self.forward(user_representations.unsqueeze(2), targets).squeeze(1)
        target_embedding = self.scoring_embeddings(targets)  # (B, T, D)
        target_bias = self.item_biases(targets).squeeze(-1)  # (B, T)
        dot = (user_representations.transpose(1, 2) * target_embedding).sum(-1)  # (B, T)
        return dot + target_bias

    def score_items(self, states: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (..., S) of the items ``items`` (ids (S,), or a slice of the ids) for
        states (..., D); all item ids in [0, num_items) when ``items`` is None."""
        embeddings, biases = self.scoring_embeddings.weight, self.item_biases.weight.squeeze(1)
        if items is not None:
            embeddings, biases = embeddings[items], biases[items]
        if states.dim() == 2:  # one fused multiply-add, no second pass for the biases
            return torch.addmm(biases, states, embeddings.t())
        return states @ embeddings.t() + biases

    def score_all(self, final_representation: torch.Tensor) -> torch.Tensor:
        """Scores of every item id for each final state: (B, D) -> (B, N)."""
        return self.score_items(final_representation)

    def position_states(self, all_representations: torch.Tensor) -> torch.Tensor:
        """The states of ``user_representation``'s first output, one per position:
        (B, D, T) -> (B, T, D), the input of :meth:`score_items`."""
        return all_representations.transpose(1, 2)


class LSTMNet(_SequenceNet):
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
        setattr(self, name, module(embedding_dim, embedding_dim, num_layers=num_layers, batch_first=True))

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


class MLSTMNet(_SequenceNet):
    """The multiplicative LSTM representation.

    The state before any item is a learned initial state (h_0, c_0), so no zero input is
    prepended: position t holds the state after items 0..t-1 and position 0 holds the
    learned initial state.

    Parameters
    ----------
    num_items, embedding_dim, item_embedding_layer, sparse:
        As :class:`LSTMNet`.
    multiplicative_bias: bool
        Whether m_t has biases (see :class:`~mlstm4reco.layers.MLSTMCell`).
    state: str
        Which state scores items: ``'cell'`` (c_t, the default, as the 2018 implementation
        did) or ``'hidden'`` (h_t, bounded in (-1, 1) like the LSTM baseline's). Measured
        on MovieLens 1M with the study's protocol and best mLSTM arguments, 5 seeds:
        'cell' valid MRR 0.1141 +- 0.0030 and test 0.1321 +- 0.0097 against 'hidden'
        0.1104 +- 0.0060 and 0.1281 +- 0.0046 (valid better on 4 of 5 seeds); with
        full softmax and dropout, valid better on 5 of 5 seeds.
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



class PoolNet(_SequenceNet):
    """Average pooling: the state at position t is the mean of the embeddings of the
    items before t, padding excluded (zero when nothing has been seen). Spotlight's
    PoolNet divides by the count plus one; this one takes the plain mean.

    Parameters
    ----------
    num_items, embedding_dim, item_embedding_layer, sparse:
        As :class:`LSTMNet`.
    """

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        embeddings = self._embed(item_sequences)  # (B, T, D)
        sums = F.pad(embeddings.cumsum(1), (0, 0, 1, 0))  # (B, T + 1, D)
        counts = F.pad((item_sequences != PADDING_IDX).cumsum(1), (1, 0))  # (B, T + 1)
        return sums / counts.clamp(min=1).unsqueeze(2).to(sums.dtype)


NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class CNNNet(_SequenceNet):
    """Stacked causal 1-D convolutions over the item embeddings.

    A zero step is prepended (position 0 has seen nothing) and each layer pads
    ``(kernel_width - 1) * dilation`` steps on the left, so position t sees only items
    before t. Layers keep the embedding dimension; with ``residual`` each adds its input.

    Parameters
    ----------
    num_items, embedding_dim, item_embedding_layer, sparse:
        As :class:`LSTMNet`.
    kernel_width: int
        Width of every convolution.
    num_layers: int
        Stacked convolutions.
    dilation: int or list of int
        Dilation of every layer, or one per layer (e.g. [1, 2, 4] for a receptive field
        that doubles with depth).
    nonlinearity: 'tanh' or 'relu'
    residual: bool

    References
    ----------
    Tang and Wang. Personalized top-N sequential recommendation via convolutional
    sequence embedding. WSDM 2018. Yuan et al. A simple convolutional generative network
    for next item recommendation. WSDM 2019.
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer: nn.Embedding | None = None,
        sparse: bool = False,
        kernel_width: int = 3,
        num_layers: int = 1,
        dilation=1,
        nonlinearity: str = "tanh",
        residual: bool = True,
        **options,
    ) -> None:
        super().__init__(num_items, embedding_dim, item_embedding_layer, sparse, **options)
        dilations = [dilation] * num_layers if isinstance(dilation, int) else list(dilation)
        if num_layers < 1 or kernel_width < 1 or len(dilations) != num_layers or min(dilations) < 1:
            raise ValueError(
                f"need num_layers >= 1, kernel_width >= 1 and one positive dilation per layer; "
                f"got num_layers={num_layers}, kernel_width={kernel_width}, dilation={dilation}"
            )
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}")
        self.dilations = dilations
        self.kernel_width = kernel_width
        self.nonlinearity = nonlinearity
        self.residual = residual
        self.convolutions = nn.ModuleList(
            nn.Conv1d(embedding_dim, embedding_dim, kernel_width, dilation=d) for d in dilations
        )

    def extra_repr(self) -> str:
        return f"dilations={self.dilations}, nonlinearity={self.nonlinearity!r}, residual={self.residual}"

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        x = self._embed(item_sequences).transpose(1, 2)  # (B, D, T)
        x = F.pad(x, (1, 0))  # (B, D, T + 1): zero first step
        activation = NONLINEARITIES[self.nonlinearity]
        for convolution, dilation in zip(self.convolutions, self.dilations):
            y = activation(convolution(F.pad(x, ((self.kernel_width - 1) * dilation, 0))))
            x = x + y if self.residual else y
        return x.transpose(1, 2)  # (B, T + 1, D)
