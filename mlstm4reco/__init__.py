"""mlstm4reco: multiplicative LSTMs for sequence-based recommendation.

A Spotlight-compatible library: layers (:mod:`mlstm4reco.layers`), representations in
Spotlight's protocol (:mod:`mlstm4reco.representations`), and its own data, training and
evaluation core with Spotlight's names and semantics.
"""

__version__ = "0.1.0"
