"""Split protocols: how a dataset becomes training sequences and evaluation sequences.

Each protocol is a module with one entry point, ``split(interactions, **options)``, that
returns a :class:`Split`: training sequences (windows of each user's history) and
validation and test sequences whose last item is the target and whose other items are its
input, as :func:`mlstm4reco.evaluation.evaluate` scores them, plus ``notes`` (counts of
users, targets and items, and what the protocol left out). By name in :data:`PROTOCOLS`
(a config's ``protocol.split``; ``user`` is the default):

- ``user``: the 2018 study's (Spotlight's) user split (:mod:`.user_split`);
- ``leave_one_out``: each user's last item is the test target, the one before the
  validation target (:mod:`.leave_one_out`);
- ``temporal``: a global time cutoff for test and an earlier one for validation
  (:mod:`.temporal`).

Every protocol also takes ``min_user_interactions`` and ``min_item_interactions``: users
and items with fewer interactions are dropped from the data first, and the rest numbered
anew (:mod:`.rare`; SASRec's preprocessing uses 5 and 5).
"""

from __future__ import annotations

from mlstm4reco.protocols import leave_one_out, rare, temporal, user_split
from mlstm4reco.protocols.base import Split, check_options

__all__ = ["PROTOCOLS", "Split", "check_options", "split"]

PROTOCOLS = {
    "user": user_split,
    "leave_one_out": leave_one_out,
    "temporal": temporal,
}
"""Protocol modules by name; each has ``split``, ``REQUIRED`` and ``OPTIONAL`` (its
options) and ``check(options)``. A new one: a module here and a line above."""


def split(interactions, name: str = "user", **options) -> Split:
    """``interactions`` split by the protocol ``name`` with its ``options``."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOLS)}")
    module = PROTOCOLS[name]
    check_options(name, module, options)
    minimums = {key: options.pop(key) for key in rare.OPTIONS if key in options}
    if all(value == 1 for value in minimums.values()):
        return module.split(interactions, **options)
    kept, dropped = rare.drop_rare(interactions, **minimums)
    result = module.split(kept, **options)
    return result._replace(notes={**result.notes, **dropped}, id_mapping=kept.id_mapping)
