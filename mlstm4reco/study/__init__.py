"""Experiments as data, one module a stage, each entered once from the one before:

- :mod:`.config`: a YAML config read safely and checked whole (``UserError`` in :mod:`.errors`);
- :mod:`.protocol`: the config's dataset split and windowed under its protocol;
- :mod:`.trial`: one point trained and evaluated, early stopping, failures as records;
- :mod:`.records`: the results file, atomic, locked, validated, shared by processes;
- :mod:`.tpe`: hyperopt's TPE proposing from the records;
- :mod:`.runners`: search, reproduce and curve.

The Ray backend (:mod:`mlstm4reco.ray_search`) and the reports (:mod:`mlstm4reco.report`)
sit beside it for now; :mod:`mlstm4reco.search` re-exports the names it always had.
"""
