"""A config's data under its protocol: the dataset loaded by name, split as the 2018 study
splits it, cut into sequence windows; built once per process."""

from __future__ import annotations

import json

import numpy as np

from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets import get_dataset
from mlstm4reco.study.config import ExperimentConfig
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
"""Splits already built in this process, by dataset, protocol, loader arguments and folder."""


def load_splits(config: ExperimentConfig, data_dir=None):
    """(train, valid, test) of a config's dataset under its protocol, built once per process."""
    key = (
        config.dataset,
        json.dumps(config.protocol, sort_keys=True),
        json.dumps(config.data, sort_keys=True),
        str(data_dir),
    )
    if key not in _SPLITS:
        interactions = load_dataset(config, data_dir)
        try:
            _SPLITS[key] = protocol_split(interactions, config.protocol)
        except ValueError as error:
            raise UserError(
                f"{config.source}: the {config.dataset} data under its protocol: {error}"
            ) from error
    return _SPLITS[key]


def protocol_split(interactions, protocol: dict):
    """The 2018 protocol: users split ``test_percentage`` out, the rest split in half into
    (test, valid) with the same RandomState; each part cut into sequences."""
    state = np.random.RandomState(protocol["seed"])
    train, rest = user_based_train_test_split(interactions, protocol["test_percentage"], state)
    test, valid = user_based_train_test_split(rest, protocol["valid_percentage"], state)
    window = (
        protocol["max_sequence_length"],
        protocol["min_sequence_length"],
        protocol["step_size"],
    )
    return tuple(part.to_sequence(*window) for part in (train, valid, test))
