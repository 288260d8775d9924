"""Experiments as data, one module a stage, each entered once from the one before:

- :mod:`.config`: a YAML config read safely and checked whole (``UserError`` in :mod:`.errors`);
- :mod:`.protocol`: the config's dataset split and windowed under its protocol;
- :mod:`.trial`: one point trained and evaluated, early stopping, failures as records;
- :mod:`.records`: the results file, atomic, locked, validated, shared by processes;
- :mod:`.tpe`: hyperopt's TPE proposing from the records;
- :mod:`.runners`: search, reproduce and curve;
- :mod:`.ray_tune`: the same search with trials in parallel on Ray Tune;
- :mod:`.report`: tables, paired tests and plots from the records.

:mod:`mlstm4reco.search`, :mod:`mlstm4reco.ray_search` and :mod:`mlstm4reco.report`
re-export the names they always had.
"""
