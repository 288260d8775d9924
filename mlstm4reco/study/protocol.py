"""A config's data under its protocol: the dataset loaded by name, split by the config's
split protocol (the 2018 study's by default) into windows; built once per process."""

from __future__ import annotations

import json
import pathlib

from mlstm4reco import protocols
from mlstm4reco.datasets import get_dataset
from mlstm4reco.study.config import ExperimentConfig, split_options
from mlstm4reco.study.errors import UserError


def load_dataset(config: ExperimentConfig, data_dir=None):
    """The dataset of a config as Interactions (file errors become UserErrors)."""
    try:
        return get_dataset(config.dataset, data_dir, **config.data)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from error
    except TypeError as error:  # a config's data: arguments the loader does not take
        raise UserError(f"{config.source}: data: {error}") from error


_SPLITS: dict = {}
"""Splits already built in this process, by dataset, protocol, loader arguments and folder:
(the :class:`~mlstm4reco.protocols.Split`, the data's raw ids or None)."""


def _key(config: ExperimentConfig, data_dir) -> tuple:
    return (
        config.dataset,
        json.dumps(config.protocol, sort_keys=True),
        json.dumps(config.data, sort_keys=True),
        str(data_dir),
    )


def load_splits(config: ExperimentConfig, data_dir=None):
    """(train, valid, test) of a config's dataset under its protocol, built once per process."""
    key = _key(config, data_dir)
    if key not in _SPLITS:
        interactions = load_dataset(config, data_dir)
        try:
            split = protocol_split_with_notes(interactions, config.protocol)
        except ValueError as error:
            raise UserError(
                f"{config.source}: the {config.dataset} data under its protocol: {error}"
            ) from error
        _SPLITS[key] = (split, split.id_mapping or interactions.id_mapping)
    return _SPLITS[key][0][:3]


def split_notes(config: ExperimentConfig, data_dir=None) -> dict:
    """What the split of a config's data did (counts of users, targets, windows, items;
    see each protocol), from the splits :func:`load_splits` built."""
    load_splits(config, data_dir)
    return _SPLITS[_key(config, data_dir)][0].notes


def protocol_split(interactions, protocol: dict):
    """(train, valid, test) of ``interactions`` under a config's protocol: its ``split``
    (:data:`mlstm4reco.protocols.PROTOCOLS`; the 2018 study's user split by default)."""
    return protocol_split_with_notes(interactions, protocol)[:3]


def protocol_split_with_notes(interactions, protocol: dict) -> protocols.Split:
    """The whole :class:`~mlstm4reco.protocols.Split`, with the split's counts."""
    return protocols.split(interactions, protocol.get("split", "user"), **split_options(protocol))


def save_id_mapping(config: ExperimentConfig, data_dir, out_dir) -> None:
    """Write the raw ids of a config's data (a user's file, or data whose rare users and
    items were dropped and the rest renumbered) to ``out_dir/ids.json``, so that the item
    ids of ``recommend`` can be turned back into the data's; nothing for a built-in
    dataset used whole."""
    load_splits(config, data_dir)
    mapping = _SPLITS[_key(config, data_dir)][1]
    if mapping is not None:
        mapping.save(pathlib.Path(out_dir) / "ids.json")
