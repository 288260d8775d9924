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

from mlstm4reco.representations.attention import SASRecNet
from mlstm4reco.representations.base import (
    PADDING_IDX,
    ScaledEmbedding,
    ScoresItems,
    SequenceNet,
    SequenceRepresentation,
    ZeroEmbedding,
    check_item_sequences,
)
from mlstm4reco.representations.cnn import NONLINEARITIES, CNNNet
from mlstm4reco.representations.mixture import MixtureLSTMNet, MixtureMLSTMNet
from mlstm4reco.representations.pooling import PoolNet
from mlstm4reco.representations.recurrent import (
    STATES,
    GRUNet,
    LSTMNet,
    MLSTMNet,
    recurrent_leaves_autocast,
)

__all__ = [
    "PADDING_IDX",
    "SequenceRepresentation",
    "ScoresItems",
    "ScaledEmbedding",
    "ZeroEmbedding",
    "SequenceNet",
    "LSTMNet",
    "GRUNet",
    "MLSTMNet",
    "PoolNet",
    "CNNNet",
    "SASRecNet",
    "MixtureLSTMNet",
    "MixtureMLSTMNet",
    "recurrent_leaves_autocast",
    "check_item_sequences",
    "NONLINEARITIES",
    "STATES",
    "REPRESENTATIONS",
]

REPRESENTATIONS = {
    "lstm": LSTMNet,
    "gru": GRUNet,
    "mlstm": MLSTMNet,
    "pooling": PoolNet,
    "cnn": CNNNet,
    "sasrec": SASRecNet,
    "mixture": MixtureLSTMNet,
    "mixture_mlstm": MixtureMLSTMNet,
}
"""Representations by the names ``ImplicitSequenceModel(representation=...)`` accepts
(Spotlight's names, plus the mLSTM ones). A new one: a module here and a line above."""
