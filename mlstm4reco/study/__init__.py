"""Experiments as data: configs, their records, and the runners that fill them.

The package is being built up from :mod:`mlstm4reco.search`: configs (:mod:`.config`) and
records shared by processes (:mod:`.records`) live here.
"""
