"""Self-attentive sequential recommendation: SASRec (Kang and McAuley, ICDM 2018) in the
representation protocol.

Item embeddings (scaled by sqrt(d), as the paper) plus learned positional embeddings go
through ``num_blocks`` causal self-attention blocks: multi-head attention, then a
point-wise feed-forward network, each with dropout and a residual connection around a
layer normalisation, ``g(x) = x + Dropout(g(LayerNorm(x)))`` as the paper writes it
(``norm_first=True``; ``False`` normalises after the residual instead), and a last layer
normalisation.

The shift: as the other nets, the state at position t must have seen the items before t
only, and position 0 nothing. A zero first step is prepended (as :class:`LSTMNet` does)
and attention is causal, so the output at step t attends to steps 0..t: the zero step and
the items before t. SASRec's own code predicts item t + 1 from the output at item t,
which is the same computation shifted by one; prepending keeps the shared scoring of
:class:`~mlstm4reco.representations.SequenceNet` and gives position 0 a key to attend to
(attention over nothing is undefined). Padded steps are never attended to (they are
masked as keys) and their outputs are zeroed after every block, as SASRec does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mlstm4reco.representations.base import PADDING_IDX, SequenceNet

__all__ = ["SASRecNet"]


class _Block(nn.Module):
    """One causal self-attention block: attention and a point-wise feed-forward network,
    each with dropout, a residual and a layer normalisation."""

    def __init__(self, dim: int, num_heads: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def _attend(self, x, causal, padded, need_weights=False):
        return self.attention(
            x, x, x, attn_mask=causal, key_padding_mask=padded, need_weights=need_weights
        )

    def forward(self, x, causal, padded):
        if self.norm_first:
            x = x + self.dropout(self._attend(self.attention_norm(x), causal, padded)[0])
            return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        x = self.attention_norm(x + self.dropout(self._attend(x, causal, padded)[0]))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))


class SASRecNet(SequenceNet):
    """SASRec: causal self-attention over the item sequence.

    Parameters
    ----------
    num_items: int
        Number of item ids, padding id 0 included.
    embedding_dim: int
        Dimension of the item and positional embeddings and of every block (the paper: 50
        on ML-1M).
    item_embedding_layer: nn.Embedding, optional
        An embedding layer to use instead of a new
        :class:`~mlstm4reco.representations.ScaledEmbedding`.
    sparse: bool
        Sparse gradients for the item embeddings.
    num_blocks: int
        Self-attention blocks (the paper: 2).
    num_heads: int
        Attention heads; must divide ``embedding_dim`` (the paper: 1).
    max_length: int
        The longest sequence it takes (positional embeddings; the paper: 200 on ML-1M).
    norm_first: bool
        Layer normalisation inside the residual branch (True, the paper's), or after it.

    The ``dropout`` option (see :class:`~mlstm4reco.representations.SequenceNet`) also
    drops attention weights and feed-forward activations (the paper: 0.2 on ML-1M).

    References
    ----------
    W.-C. Kang and J. McAuley. Self-attentive sequential recommendation. ICDM 2018.
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 32,
        item_embedding_layer: nn.Embedding | None = None,
        sparse: bool = False,
        num_blocks: int = 2,
        num_heads: int = 1,
        max_length: int = 200,
        norm_first: bool = True,
        **options,
    ) -> None:
        super().__init__(num_items, embedding_dim, item_embedding_layer, sparse, **options)
        if num_blocks < 1 or num_heads < 1 or max_length < 1:
            raise ValueError(
                f"num_blocks, num_heads and max_length must be positive, got {num_blocks}, "
                f"{num_heads} and {max_length}"
            )
        if embedding_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embedding_dim={embedding_dim}")
        self.max_length = max_length
        self.positions = nn.Embedding(max_length + 1, embedding_dim)  # the zero step too
        nn.init.normal_(self.positions.weight, std=embedding_dim**-0.5)
        rate = self.dropout.p
        self.blocks = nn.ModuleList(
            _Block(embedding_dim, num_heads, rate, norm_first) for _ in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(embedding_dim)

    def extra_repr(self) -> str:
        return f"max_length={self.max_length}"

    def _inputs(self, item_sequences: torch.Tensor):
        """The blocks' input (B, T + 1, D), the causal mask and the padded steps."""
        B, T = item_sequences.shape
        if T > self.max_length:
            raise ValueError(
                f"item_sequences of {T} items are longer than max_length={self.max_length}"
            )
        x = self._embed(item_sequences) * math.sqrt(self.embedding_dim)  # (B, T, D)
        x = F.pad(x, (0, 0, 1, 0)) + self.positions.weight[: T + 1]  # (B, T + 1, D)
        padded = F.pad(item_sequences == PADDING_IDX, (1, 0), value=False)  # the zero step is a key
        causal = torch.ones(T + 1, T + 1, dtype=torch.bool, device=x.device).triu(1)
        return x.masked_fill(padded.unsqueeze(2), 0.0), causal, padded

    def _states(self, item_sequences: torch.Tensor) -> torch.Tensor:
        x, causal, padded = self._inputs(item_sequences)
        for block in self.blocks:
            x = block(x, causal, padded).masked_fill(padded.unsqueeze(2), 0.0)
        return self.final_norm(x)  # (B, T + 1, D)

    def attention_weights(self, item_sequences: torch.Tensor) -> list[torch.Tensor]:
        """Each block's attention weights (B, T + 1, T + 1), averaged over heads: row q
        holds how much step q reads each step (step 0 the zero step, step t + 1 item t)."""
        x, causal, padded = self._inputs(item_sequences.long())
        weights = []
        for block in self.blocks:
            query = block.attention_norm(x) if block.norm_first else x
            weights.append(block._attend(query, causal, padded, need_weights=True)[1])
            x = block(x, causal, padded).masked_fill(padded.unsqueeze(2), 0.0)
        return weights
