"""hyperopt's TPE driven from records: the finished trials become a ``Trials`` object, and
TPE proposes the next point from them, deterministic in the seed, the records and the
trial's number."""

from __future__ import annotations

import numpy as np
from hyperopt import JOB_STATE_DONE, STATUS_FAIL, STATUS_OK, Trials, fmin, space_eval, tpe

from mlstm4reco.study.config import ExperimentConfig, build_space
from mlstm4reco.study.records import metric_field, objective


def _trials_from_records(records: list[dict]):
    """A hyperopt Trials holding the finished trials, so TPE resumes where it stopped."""
    trials = Trials()
    for tid, record in enumerate(records):
        vals = record["vals"]
        # a trial stopped early by a scheduler (ASHA) counts with the score it had reached
        result = (
            {"status": STATUS_OK, "loss": -record[metric_field("valid", objective(record))]}
            if record["status"] in ("ok", "stopped")
            else {"status": STATUS_FAIL}
        )
        misc = {
            "tid": tid,
            "cmd": ("domain_attachment", "FMinIter_Domain"),
            "workdir": None,
            "idxs": {k: [tid] for k in vals},
            "vals": {k: [v] for k, v in vals.items()},
        }
        docs = trials.new_trial_docs([tid], [None], [result], [misc])
        docs[0]["state"] = JOB_STATE_DONE
        trials.insert_trial_docs(docs)
    trials.refresh()
    return trials


def suggest(
    config: ExperimentConfig, records: list[dict], seed: int, number: int | None = None
) -> tuple[dict, dict]:
    """Point ``number`` (default ``len(records)``) of the TPE search given the finished
    ``records``: (hyperopt's raw values, model arguments). Deterministic in (seed, records,
    number); a parallel search passes each trial's own number, so that trials in flight,
    proposed from the same finished records, get different points."""
    number = len(records) if number is None else number
    space = build_space(config.space)
    trials = _trials_from_records(records)
    # fmin only proposes the point: the placeholder result is thrown away with `trials`.
    fmin(
        lambda _: {"status": STATUS_OK, "loss": 0.0},
        space,
        algo=tpe.suggest,
        trials=trials,
        max_evals=len(records) + 1,
        rstate=np.random.default_rng([seed, number]),
        show_progressbar=False,
        return_argmin=False,
    )
    vals = {
        k: v[0].item() if hasattr(v[0], "item") else v[0]  # plain numbers for JSON
        for k, v in trials.trials[-1]["misc"]["vals"].items()
        if v
    }
    return vals, space_eval(space, vals)
