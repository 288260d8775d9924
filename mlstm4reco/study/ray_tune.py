"""The TPE search of :mod:`mlstm4reco.study.runners` with its trials run in parallel on Ray Tune.

The local backend proposes a point, trains it, records it, and repeats. This backend keeps
``workers`` trials in flight on a Ray cluster (a local one by default) and otherwise
changes nothing: the same configs, the same hyperopt TPE
(:func:`~mlstm4reco.study.tpe.suggest`, given the finished trials and each trial's own
number, so that trials in flight get different points; with one worker the points are the
local backend's), the same ``trials.json``
records written atomically by the driver as each trial ends, and so the same reports.

- The data is loaded and split once, by the driver, and put in Ray's object store; every
  worker reads it from there (shared memory on one machine) instead of loading it per trial.
- A trial that raises or diverges is recorded as failed by the worker; a worker that dies
  (killed, out of memory, node lost) is recorded as failed by the driver; the search goes on.
- ``trials.json`` is the state: an interrupted search, rerun with the same command, proposes
  from the trials it finished and runs the rest (the trials that were in flight are lost;
  their numbers are not reused). Trial numbers are claimed in the file, so a local search
  or another Ray search may share the folder.
- Optional ASHA (asynchronous successive halving): trials report the validation objective
  (MRR by default) every few epochs and the scheduler stops the poor ones early. A stopped
  trial is recorded with status ``stopped``, the best validation score it reached and no
  test score; TPE learns from it like from a finished one.

``ray[tune]`` is an optional dependency: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time

from tqdm.auto import tqdm

from mlstm4reco.study.config import ExperimentConfig, model_arguments
from mlstm4reco.study.errors import UserError
from mlstm4reco.study.protocol import load_splits, save_id_mapping, split_notes
from mlstm4reco.study.records import RecordFile, _jsonable, ensure_results_folder, metric_field
from mlstm4reco.study.runners import check_same_study, check_seed, check_trials, study_fields
from mlstm4reco.study.tpe import suggest
from mlstm4reco.study.trial import provenance, run_guarded, train_and_evaluate

METRIC = "objective"
"""The name under which trials report the config's validation objective to Tune."""


def _import_ray():
    try:
        import ray
        from ray import tune
    except ImportError as error:
        raise UserError(
            'the Ray backend needs Ray Tune: pip install -e ".[ray]" '
            f"(or pip install 'ray[tune]'); import failed: {error}"
        ) from error
    return ray, tune


def max_epochs(config: ExperimentConfig) -> int:
    """The most epochs a trial of ``config`` can train: ``n_iter`` fixed or its space's top."""
    if "n_iter" in config.fixed:
        return int(config.fixed["n_iter"])
    spec = config.space.get("n_iter")
    if spec is None:
        raise UserError(f"{config.source}: ASHA needs n_iter in 'fixed' or in 'space'")
    ((kind, args),) = spec.items()
    if kind == "choice":
        return int(max(args))
    if kind in ("loguniform", "qloguniform"):
        return int(math.exp(args[1]))
    return int(args[1])


def _trial(
    trial: dict,
    *,
    splits,
    protocol: dict,
    seed: int,
    device: str,
    early_stopping: dict | None,
    report_every: int | None,
    threads: int,
    train,
    metrics=("mrr",),
) -> None:
    """One trial inside a Ray worker. With ``report_every`` (ASHA), the validation
    objective (the first of ``metrics``) is reported every few epochs as Tune's metric
    ``objective``; the last report always carries the whole result as JSON."""
    import torch
    from ray import tune

    torch.set_num_threads(threads)
    best = -math.inf

    def listener(epoch: int, value: float) -> None:
        nonlocal best
        best = max(best, value)
        if epoch < trial["arguments"].get("n_iter", math.inf):  # the last epoch: the final report
            tune.report({METRIC: value, "best": best, "epoch": epoch})

    monitor = {"every": report_every, "listener": listener} if report_every else None
    result = run_guarded(
        train,
        arguments=trial["arguments"],
        splits=splits,
        protocol=protocol,
        seed=seed,
        device=device,
        early_stopping=early_stopping,
        monitor=monitor,
        metrics=metrics,
    )
    result["worker"] = f"{os.uname().nodename}:{os.getpid()}"
    ok = result["status"] == "ok"
    tune.report(
        {
            "record": json.dumps(result, default=_jsonable),
            METRIC: result[metric_field("valid", metrics[0])]
            if ok
            else 0.0,  # Tune needs the metric
            "epoch": result.get("epochs", trial["arguments"].get("n_iter", 0)),
        }
    )


class TPESearcher:
    """A Ray Tune searcher around :func:`~mlstm4reco.study.tpe.suggest` that records each
    ended trial in ``store`` (the driver's ``trials.json``). Built by :func:`make_searcher`,
    which gives it Ray's ``Searcher`` as base class, so that this module imports without
    Ray."""

    def __init__(
        self,
        config: ExperimentConfig,
        store: RecordFile,
        seed: int,
        budget: int,
        bar=None,
        split_notes: dict | None = None,
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.config, self.store, self.seed, self.budget, self.bar = config, store, seed, budget, bar
        self.split_notes = split_notes
        self.pending: dict[str, dict] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space comes from the experiment config

    def suggest(self, trial_id: str):
        # trial numbers are claimed in the records file: unique across processes and
        # never reused after an interruption; the budget counts every process's trials
        with self.store.locked():
            if len(self.store.records) + len(self.store.in_flight) >= self.budget:
                return self.FINISHED
            number, finished = self.store.next_number(), list(self.store.records)
            claim = self.store.claim({"number": number})
        vals, params = suggest(self.config, finished, self.seed, number=number)
        self.pending[trial_id] = dict(
            number=number,
            vals=vals,
            arguments=model_arguments(self.config, params),
            started=time.perf_counter(),
            claim=claim,
        )
        return {k: self.pending[trial_id][k] for k in ("number", "vals", "arguments")}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self.pending.pop(trial_id, None)
        if trial is None:
            return
        seconds = time.perf_counter() - trial.pop("started")
        claim = trial.pop("claim")
        if result and "record" in result:
            outcome = json.loads(result["record"])
        elif error or not result:
            outcome = {
                "status": "failed",
                "seconds": seconds,
                "error": "the trial's Ray worker failed (killed, out of memory or lost); "
                "its log is under the results folder's ray/",
            }
        else:  # stopped by the scheduler between two reports
            objective = self.config.objective
            outcome = {
                "status": "stopped",
                metric_field("valid", objective): result["best"],
                metric_field("test", objective): None,
                "epochs": result["epoch"],
                "seconds": seconds,
            }
        self.store.append(
            {
                **trial,
                **outcome,
                "seed": self.seed,
                **study_fields(self.config),
                "split_notes": self.split_notes,
                "config": self.config.source,
                "backend": "ray",
                "trial_id": trial_id,
                **provenance(),
            },
            release=claim,
        )
        if self.bar is not None:
            valid = metric_field("valid", self.config.objective)
            scored = [
                r[valid]
                for r in self.store.records
                if r["status"] in ("ok", "stopped") and valid in r
            ]
            self.bar.set_postfix({f"best {valid}": f"{max(scored, default=float('nan')):.4f}"})
            self.bar.update(1)

    def release_all(self) -> None:
        """Give up the claims of the trials still in flight (the search is ending)."""
        for trial in self.pending.values():
            self.store.release(trial["claim"])
        self.pending.clear()

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: ``trials.json`` is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the searcher is rebuilt from ``trials.json``."""


def make_searcher(*args, **kwargs):
    from ray.tune.search import Searcher

    return type("TPESearcher", (TPESearcher, Searcher), {})(*args, **kwargs)


def run_ray_search(
    config: ExperimentConfig,
    trials: int,
    out_dir,
    device: str = "auto",
    data_dir=None,
    seed: int | None = None,
    progress: bool = True,
    workers: int = 2,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    address: str | None = None,
    asha: dict | None = None,
    train=train_and_evaluate,
) -> list[dict]:
    """Run (or resume) the TPE search of ``config`` with ``workers`` trials at a time on
    Ray until ``trials`` trials are recorded in ``out_dir/trials.json``.

    ``address``: an existing Ray cluster (``ray://host:10001`` or ``host:6379``); without
    it Ray starts on this machine with ``workers * cpus_per_trial`` CPUs. ``asha``:
    ``{every, grace_period, reduction_factor}`` turns on ASHA early stopping of trials.
    """
    if workers < 1 or cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise UserError(
            f"need workers >= 1, cpus per trial > 0 and gpus per trial >= 0; got "
            f"{workers}, {cpus_per_trial}, {gpus_per_trial}"
        )
    check_trials(trials)
    check_seed(config.protocol["seed"] if seed is None else seed)
    ray, tune = _import_ray()
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    seed = config.protocol["seed"] if seed is None else seed
    out_dir = pathlib.Path(out_dir)
    ensure_results_folder(out_dir)
    store = RecordFile(out_dir / "trials.json", kind="trials")
    check_same_study(store, config)
    if len(store.records) + len(store.in_flight) >= trials:
        return store.records
    splits = load_splits(config, data_dir)
    save_id_mapping(config, data_dir, out_dir)
    if asha:
        every = (config.early_stopping or {}).get("every", asha["every"])
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=max_epochs(config),
            grace_period=asha["grace_period"],
            reduction_factor=asha["reduction_factor"],
        )
    else:
        every, scheduler = None, FIFOScheduler()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress bar, not Tune's tables
    started_ray = not ray.is_initialized()
    if started_ray:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=math.ceil(workers * cpus_per_trial),
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=1 << 30,
                _node_ip_address="127.0.0.1",
            )  # its processes talk over loopback
    bar = tqdm(
        total=trials,
        initial=len(store.records),
        desc=f"trials {config.name} (ray)",
        disable=not progress,
        unit="trial",
    )
    tpe = make_searcher(config, store, seed, trials, bar, split_notes(config, data_dir))
    try:
        searcher = ConcurrencyLimiter(tpe, max_concurrent=workers)
        trainable = tune.with_parameters(
            _trial,
            splits=splits,
            protocol=config.protocol,
            seed=seed,
            device=device,
            early_stopping=config.early_stopping,
            report_every=every,
            threads=max(1, int(cpus_per_trial)),
            train=train,
            metrics=config.metrics,
        )
        trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                metric=METRIC,
                mode="max",
                num_samples=trials - len(store.records),
                # a fresh worker per trial: with reused ones, Tune went on
                # with one worker fewer for good after one had died
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=time.strftime("tune-%Y%m%d-%H%M%S"),
                storage_path=str((out_dir / "ray").resolve()),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        tpe.release_all()
        bar.close()
        if started_ray:
            ray.shutdown()
    return store.records
