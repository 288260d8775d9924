"""Causal convolutions over the item embeddings (Caser / NextItNet style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlstm4reco.representations.base import SequenceNet

__all__ = ["CNNNet"]

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class CNNNet(SequenceNet):
    """Stacked causal 1-D convolutions over the item embeddings.

    A zero step is prepended (position 0 has seen nothing) and each layer pads
    ``(kernel_width - 1) * dilation`` steps on the left, so position t sees only items
    before t. Layers keep the embedding dimension; with ``residual`` each adds its input.

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
            raise ValueError(
                f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}"
            )
        self.dilations = dilations
        self.kernel_width = kernel_width
        self.nonlinearity = nonlinearity
        self.residual = residual
        self.convolutions = nn.ModuleList(
            nn.Conv1d(embedding_dim, embedding_dim, kernel_width, dilation=d) for d in dilations
        )

    def extra_repr(self) -> str:
        return (
            f"dilations={self.dilations}, nonlinearity={self.nonlinearity!r}, "
            f"residual={self.residual}"
        )

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        x = self._embed(item_sequences).transpose(1, 2)  # (B, D, T)
        x = F.pad(x, (1, 0))  # (B, D, T + 1): zero first step
        activation = NONLINEARITIES[self.nonlinearity]
        for convolution, dilation in zip(self.convolutions, self.dilations):
            y = activation(convolution(F.pad(x, ((self.kernel_width - 1) * dilation, 0))))
            x = x + y if self.residual else y
        return x.transpose(1, 2)  # (B, T + 1, D)
