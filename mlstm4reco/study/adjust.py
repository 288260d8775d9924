"""A config changed from the command line (``run.py --protocol``, ``--window``,
``--objective``, ``reproduce --tuned``): each returns a new, checked config, the file's
left as it is."""

from __future__ import annotations

import dataclasses

from hyperopt import space_eval

from mlstm4reco import evaluation, protocols
from mlstm4reco.study.config import ExperimentConfig, build_space, check_protocol
from mlstm4reco.study.errors import UserError
from mlstm4reco.study.records import RecordFile, metric_field
from mlstm4reco.study.runners import check_same_study, results_folder

__all__ = ["tuned_config", "with_minimums", "with_objective", "with_protocol", "with_window"]


def with_protocol(config: ExperimentConfig, split: str) -> ExperimentConfig:
    """``config`` under the split protocol ``split`` (``run.py --protocol``): its seed,
    windows and ``exclude_preceding`` kept, the options of another split dropped, the
    new split's defaults taken."""
    if split not in protocols.PROTOCOLS:
        raise UserError(f"--protocol must be one of {sorted(protocols.PROTOCOLS)}, got {split!r}")
    module = protocols.PROTOCOLS[split]
    keep = {"seed", "exclude_preceding", *module.REQUIRED, *module.OPTIONAL}
    keep.update(protocols.rare.OPTIONS)
    protocol = {k: v for k, v in config.protocol.items() if k in keep}
    if split != "user":
        protocol["split"] = split
    check_protocol(protocol, f"{config.source} with --protocol {split}")
    return dataclasses.replace(config, protocol=protocol)


def _integers(text: str, most: int, form: str) -> list[int]:
    """1 to ``most`` comma-separated integers of a flag's ``text``; else a UserError
    saying ``form``."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if not 1 <= len(numbers) <= most:
        raise UserError(f"{form} (integers), got {text!r}")
    return numbers


def with_window(config: ExperimentConfig, text: str) -> ExperimentConfig:
    """``config`` with the windows of ``run.py --window MAX[,MIN[,STEP]]``: training
    windows of at most MAX items (at least MIN, default 1; one every STEP items from
    each history's end, default MAX) and evaluation sequences of the last MAX items.
    Models compared under one protocol should share them (SASRec's papers use 200 on
    ML-1M)."""
    numbers = _integers(text, 3, "--window must be MAX[,MIN[,STEP]]")
    longest = numbers[0]
    shortest = numbers[1] if len(numbers) > 1 else 1
    step = numbers[2] if len(numbers) > 2 else longest
    protocol = {
        **config.protocol,
        "max_sequence_length": longest,
        "min_sequence_length": shortest,
        "step_size": step,
    }
    check_protocol(protocol, f"{config.source} with --window {text}")
    return dataclasses.replace(config, protocol=protocol)


def with_minimums(config: ExperimentConfig, text: str) -> ExperimentConfig:
    """``config`` with the rare users and items of ``run.py --min-interactions K[,K_ITEM]``
    dropped before the split: users with fewer than K interactions and items with fewer
    than K_ITEM (default K); 5 is SASRec's and BERT4Rec's preprocessing, 1 drops nothing."""
    numbers = _integers(text, 2, "--min-interactions must be K or K_USER,K_ITEM")
    users, items = numbers[0], numbers[-1]
    protocol = {
        key: value for key, value in config.protocol.items() if key not in protocols.rare.OPTIONS
    }
    if (users, items) != (1, 1):
        protocol.update(min_user_interactions=users, min_item_interactions=items)
    check_protocol(protocol, f"{config.source} with --min-interactions {text}")
    return dataclasses.replace(config, protocol=protocol)


def with_objective(config: ExperimentConfig, objective: str) -> ExperimentConfig:
    """``config`` searching for ``objective`` (``run.py --objective``)."""
    try:
        evaluation.parse_metric(objective)
    except ValueError as error:
        raise UserError(f"--objective: {error}") from error
    return dataclasses.replace(config, objective=objective)


def tuned_config(config: ExperimentConfig, root) -> ExperimentConfig:
    """``config`` with ``best`` replaced by the best finished trial, on the config's
    validation objective, of its search in ``root`` (``root/NAME/trials.json``, the
    folder ``run.py search`` fills with the same --protocol, --window and --objective);
    ``tuned`` says which trial of how many. A UserError when the search has no finished
    trial or measured another study."""
    folder = results_folder(root, config.name)
    store = RecordFile(folder / "trials.json", kind="trials")
    check_same_study(store, config)
    valid = metric_field("valid", config.objective)
    finished = [r for r in store.records if r["status"] == "ok" and valid in r]
    if not finished:
        raise UserError(
            f"{folder / 'trials.json'}: no finished trial of {config.name} to take the best "
            f"from: run `run.py search` for it first (same --protocol, --window, --objective)"
        )
    best = max(finished, key=lambda r: r[valid])
    params = space_eval(build_space(config.space), best["vals"])
    return dataclasses.replace(
        config,
        best=params,
        tuned={
            "search": str(folder),
            "trials": len(finished),
            "trial": best["number"],
            valid: best[valid],
        },
    )
