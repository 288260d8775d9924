"""Experiments as data: the 2018 protocol, hyperopt searches, multi-seed reproductions
and learning curves, each recorded in a results file that several processes can share
(:mod:`mlstm4reco.study.records`), so that a killed run resumes and two runs on one
folder lose nothing. Configs are read and checked by :mod:`mlstm4reco.study.config`.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import pathlib
import platform
import re
import threading
import time
import traceback

import hyperopt
import numpy as np
import torch
import yaml
from hyperopt import (
    JOB_STATE_DONE,
    STATUS_FAIL,
    STATUS_OK,
    Trials,
    fmin,
    space_eval,
    tpe,
)
from tqdm.auto import tqdm

import mlstm4reco
from mlstm4reco import evaluation
from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets import get_dataset
from mlstm4reco.sequence_model import ImplicitSequenceModel
from mlstm4reco.study.config import (  # noqa: F401 - the names search has always offered
    CONFIG_DIR,
    DATASETS,
    DISTRIBUTIONS,
    INTEGER_ARGUMENTS,
    PROTOCOL_KEYS,
    RUNNER_SETS,
    ExperimentConfig,
    build_space,
    check_model_arguments,
    check_plain_name,
    config_path,
    load_config,
    model_arguments,
    read_yaml,
)
from mlstm4reco.study.errors import UserError
from mlstm4reco.study.records import RecordFile, _jsonable, ensure_results_folder  # noqa: F401


def results_folder(root, name: str) -> pathlib.Path:
    """``root/name``, refused unless ``name`` is a plain name and the folder resolves
    inside ``root`` (a name from a config never writes elsewhere)."""
    check_plain_name(name, "a results folder's name")
    root = pathlib.Path(root)
    folder = root / name
    if not folder.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{folder} resolves to {folder.resolve()}, outside the results folder {root}")
    return folder


def plain_label(text: str) -> str:
    """``text`` with every character a file name should not hold replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9_.+=-]", "-", text).replace("..", "-")


# ---------------------------------------------------------------------------- data


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
    key = (config.dataset, json.dumps(config.protocol, sort_keys=True), json.dumps(config.data, sort_keys=True),
           str(data_dir))
    if key not in _SPLITS:
        interactions = load_dataset(config, data_dir)
        try:
            _SPLITS[key] = protocol_split(interactions, config.protocol)
        except ValueError as error:
            raise UserError(f"{config.source}: the {config.dataset} data under its protocol: {error}") from error
    return _SPLITS[key]


def protocol_split(interactions, protocol: dict):
    """The 2018 protocol: users split ``test_percentage`` out, the rest split in half into
    (test, valid) with the same RandomState; each part cut into sequences."""
    state = np.random.RandomState(protocol["seed"])
    train, rest = user_based_train_test_split(interactions, protocol["test_percentage"], state)
    test, valid = user_based_train_test_split(rest, protocol["valid_percentage"], state)
    window = (protocol["max_sequence_length"], protocol["min_sequence_length"], protocol["step_size"])
    return tuple(part.to_sequence(*window) for part in (train, valid, test))


# ---------------------------------------------------------------------------- training


class EarlyStopping:
    """A ``fit`` callback: validation MRR every ``every`` epochs; the best weights are
    kept, and training stops after ``patience`` evaluations without a gain (never when
    ``patience`` is None). ``listener(epoch, mrr)``, when given, hears every evaluation
    (the Ray backend reports them to its scheduler)."""

    def __init__(self, model, valid, exclude_preceding: bool, every: int, patience: int | None,
                 listener=None) -> None:
        self.model, self.valid, self.exclude = model, valid, exclude_preceding
        self.every, self.patience, self.listener = every, patience, listener
        self.best_mrr, self.best_epoch, self.best_state, self.stale = -1.0, None, None, 0
        self.history: list[tuple[int, float]] = []
        self.seconds = 0.0

    def __call__(self, epoch: int, loss: float) -> bool:
        if (epoch + 1) % self.every:
            return False
        start = time.perf_counter()
        try:
            return self._evaluate(epoch)
        finally:
            self.seconds += time.perf_counter() - start

    def _evaluate(self, epoch: int) -> bool:
        mrr = float(evaluation.sequence_mrr_score(self.model, self.valid, exclude_preceding=self.exclude).mean())
        self.history.append((epoch + 1, mrr))
        if self.listener is not None:
            self.listener(epoch + 1, mrr)
        if mrr > self.best_mrr:
            self.best_mrr, self.best_epoch, self.stale = mrr, epoch + 1, 0
            if self.patience is not None:  # a monitor that never stops never restores
                self.best_state = {k: v.detach().clone() for k, v in self.model.net.state_dict().items()}
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.net.load_state_dict(self.best_state)


def train_and_evaluate(arguments: dict, splits, protocol: dict, seed: int, device: str,
                       verbose: bool = False, early_stopping: dict | None = None,
                       monitor: dict | None = None) -> dict:
    """Fit one model and return its validation and test MRR and timings (with early
    stopping: of the weights with the best validation MRR): ``fit_seconds`` for ``fit``
    and, of those, ``eval_seconds`` in validation evaluations during it. ``monitor``
    (``{every: E, listener: f}``) calls ``f(epoch, valid_mrr)`` every E epochs (every
    ``early_stopping.every`` epochs when early stopping is on) and changes nothing else."""
    train, valid, test = splits
    exclude = protocol["exclude_preceding"]
    model = ImplicitSequenceModel(**arguments, random_state=seed, device=device)
    listener = monitor["listener"] if monitor else None
    if early_stopping:
        stopper = EarlyStopping(model, valid, exclude, **early_stopping, listener=listener)
    elif monitor:
        stopper = EarlyStopping(model, valid, exclude, monitor["every"], None, listener)
    else:
        stopper = None
    start = time.perf_counter()
    losses = model.fit(train, verbose=verbose, callback=stopper)
    fit_seconds = time.perf_counter() - start
    extra = {}
    if early_stopping:
        stopper.restore()
        extra = dict(best_epoch=stopper.best_epoch, valid_history=stopper.history)
    valid_mrr = float(evaluation.sequence_mrr_score(model, valid, exclude_preceding=exclude).mean())
    test_mrr = float(evaluation.sequence_mrr_score(model, test, exclude_preceding=exclude).mean())
    if not (math.isfinite(valid_mrr) and math.isfinite(test_mrr)):
        raise ValueError(f"non-finite MRR: valid {valid_mrr}, test {test_mrr}")
    return dict(valid_mrr=valid_mrr, test_mrr=test_mrr, final_loss=losses[-1],
                epochs=len(losses), fit_seconds=fit_seconds,
                eval_seconds=stopper.seconds if stopper is not None else 0.0,
                device=str(model.device), **extra)


def provenance() -> dict:
    """What every trial or run record carries about where it came from."""
    return {"versions": versions(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def versions() -> dict:
    return dict(mlstm4reco=mlstm4reco.__version__, torch=torch.__version__,
                numpy=np.__version__, hyperopt=hyperopt.__version__,
                python=platform.python_version(),
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


# ---------------------------------------------------------------------------- records


def run_guarded(function, **kwargs) -> dict:
    """Run one trial; a raised error or a NaN becomes a failed record, not a crash."""
    start = time.perf_counter()
    try:
        result = {"status": "ok", **function(**kwargs)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - any failure of one trial is recorded
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc(limit=5)}
    result["seconds"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------- search


def _trials_from_records(records: list[dict]):
    """A hyperopt Trials holding the finished trials, so TPE resumes where it stopped."""
    trials = Trials()
    for tid, record in enumerate(records):
        vals = record["vals"]
        # a trial stopped early by a scheduler (ASHA) counts with the MRR it had reached
        result = ({"status": STATUS_OK, "loss": -record["valid_mrr"]}
                  if record["status"] in ("ok", "stopped") else {"status": STATUS_FAIL})
        misc = {"tid": tid, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None,
                "idxs": {k: [tid] for k in vals}, "vals": {k: [v] for k, v in vals.items()}}
        docs = trials.new_trial_docs([tid], [None], [result], [misc])
        docs[0]["state"] = JOB_STATE_DONE
        trials.insert_trial_docs(docs)
    trials.refresh()
    return trials


def suggest(config: ExperimentConfig, records: list[dict], seed: int,
            number: int | None = None) -> tuple[dict, dict]:
    """Point ``number`` (default ``len(records)``) of the TPE search given the finished
    ``records``: (hyperopt's raw values, model arguments). Deterministic in (seed, records,
    number); a parallel search passes each trial's own number, so that trials in flight,
    proposed from the same finished records, get different points."""
    number = len(records) if number is None else number
    space = build_space(config.space)
    trials = _trials_from_records(records)
    # fmin only proposes the point: the placeholder result is thrown away with `trials`.
    fmin(lambda _: {"status": STATUS_OK, "loss": 0.0}, space, algo=tpe.suggest, trials=trials,
         max_evals=len(records) + 1, rstate=np.random.default_rng([seed, number]),
         show_progressbar=False, return_argmin=False)
    vals = {k: v[0].item() if hasattr(v[0], "item") else v[0]  # plain numbers for JSON
            for k, v in trials.trials[-1]["misc"]["vals"].items() if v}
    return vals, space_eval(space, vals)


def check_seed(seed, name: str = "seed") -> int:
    """A model or search seed: an integer NumPy's RandomState takes."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise UserError(f"{name} must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def check_trials(trials: int) -> None:
    if trials < 0:
        raise UserError(f"trials must be at least 0 (0 or the count already run rewrites the report), "
                        f"got {trials}")


def run_search(config: ExperimentConfig, trials: int, out_dir, device: str = "auto",
               data_dir=None, seed: int | None = None, progress: bool = True,
               train=train_and_evaluate) -> list[dict]:
    """Run (or resume) a TPE search maximising validation MRR until ``trials`` trials are
    recorded or in flight in ``out_dir/trials.json``. Test MRR is recorded, never optimised.

    Several processes may run it on one folder (with the same or other seeds): each
    claims a trial number before proposing its point, proposes from every finished trial
    it finds in the file, and adds its record to the file under its lock; together they
    stop at ``trials``."""
    check_trials(trials)
    seed = check_seed(config.protocol["seed"] if seed is None else seed)
    ensure_results_folder(out_dir)
    store = RecordFile(pathlib.Path(out_dir) / "trials.json", kind="trials")
    if len(store.records) + len(store.in_flight) >= trials:
        return store.records
    splits = load_splits(config, data_dir)
    bar = tqdm(total=trials, initial=len(store.records), desc=f"trials {config.name}",
               disable=not progress, unit="trial")
    while True:
        with store.locked():
            if len(store.records) + len(store.in_flight) >= trials:
                break
            number, finished = store.next_number(), list(store.records)
            claim = store.claim({"number": number})
        try:
            vals, params = suggest(config, finished, seed, number)
            arguments = model_arguments(config, params)
            result = run_guarded(train, arguments=arguments, splits=splits, protocol=config.protocol,
                                 seed=seed, device=device, verbose=progress,
                                 early_stopping=config.early_stopping)
            store.append({"number": number, "vals": vals, "arguments": arguments, **result, "seed": seed,
                          "config": config.source, **provenance()}, release=claim)
        except BaseException:
            store.release(claim)
            raise
        best = max((r["valid_mrr"] for r in store.records if r["status"] == "ok"), default=float("nan"))
        bar.set_postfix(best_valid_mrr=f"{best:.4f}")
        bar.update(len(store.records) - bar.n)
    bar.close()
    return store.records


def run_reproduce(configs: list[ExperimentConfig], seeds: int, out_dir, device: str = "auto",
                  data_dir=None, progress: bool = True, train=train_and_evaluate,
                  workers: int = 1, threads: int | None = None) -> list[dict]:
    """Train each config's ``best`` arguments with model seeds 0..seeds-1 (the data split
    stays the protocol's), resuming from ``out_dir/runs.json``.

    ``workers`` > 1 trains that many runs at a time in worker processes, each with
    ``threads`` torch threads (default: the CPUs shared out); the records are the same as
    one at a time (up to float rounding across thread counts) and are written as each run
    ends, so a killed reproduction resumes either way, and workers end when their parent
    does. ``train`` must then be a module-level function (it is pickled). With one worker,
    ``threads`` (when given) holds for the runs and torch's thread count is restored after.

    Several processes may reproduce into one folder: each claims a (model, seed) run
    before training it, so none is trained twice, and adds its record under the file's
    lock."""
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds} (run.py report FOLDER rewrites a report)")
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    ensure_results_folder(out_dir)
    store = RecordFile(pathlib.Path(out_dir) / "runs.json", kind="runs")
    jobs = [(config, seed) for config in configs for seed in range(seeds)]

    def open_jobs() -> list[tuple[ExperimentConfig, int]]:
        done = {(r["model"], r["seed"]) for r in store.records}
        return [(c, s) for c, s in jobs
                if (c.model, s) not in done and not store.claimed({"model": c.model, "seed": s})]

    def claim_next():
        with store.locked():
            todo = open_jobs()
            if not todo:
                return None
            config, seed = todo[0]
            return config, seed, store.claim({"model": config.model, "seed": seed})

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(open_jobs()), desc="runs", disable=not progress, unit="run")

    def record(config, seed, claim, arguments, result):
        store.append({"model": config.model, "dataset": config.dataset, "seed": seed,
                      "arguments": arguments, **result, "published": config.published,
                      "config": config.source, **provenance()}, release=claim)
        bar.update(1)

    if workers == 1 or len(open_jobs()) <= 1:
        before = torch.get_num_threads()
        if threads is not None:
            set_threads(threads)
        try:
            while (job := claim_next()) is not None:
                config, seed, claim = job
                try:
                    result = _reproduce_one(config, seed, device, data_dir, train, progress)
                except BaseException:
                    store.release(claim)
                    raise
                record(config, seed, claim, *result)
        finally:
            set_threads(before)
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")  # no forked torch thread pools
        running: dict = {}
        try:
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                                        initargs=(threads, os.getpid())) as pool:
                while True:
                    while len(running) < workers and (job := claim_next()) is not None:
                        running[pool.submit(_reproduce_one, *job[:2], device, data_dir, train, False)] = job
                    if not running:
                        break
                    finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in finished:
                        outcome = future.result()  # a dead worker raises here: its claim is released below
                        record(*running.pop(future), *outcome)
        finally:
            for _, _, claim in running.values():
                store.release(claim)
    bar.close()
    return store.records


def parse_overrides(pairs: list[str]) -> dict:
    """``["representation_kwargs.dropout=0.25", "n_iter=30"]`` -> a dict of arguments,
    each value read as YAML (numbers, booleans, strings)."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--set expects NAME=VALUE, got {pair!r}")
        try:
            overrides[name.strip()] = read_yaml(value)
        except yaml.YAMLError as error:
            raise UserError(f"--set {pair!r}: unreadable value ({error})".replace("\n", " ")) from error
    return overrides


def run_curve(config: ExperimentConfig, overrides: dict, seed: int, out_dir, every: int = 1,
              device: str = "auto", data_dir=None, progress: bool = True,
              train=train_and_evaluate) -> list[dict]:
    """One run of the config's ``best`` arguments updated with ``overrides``, with the
    validation MRR every ``every`` epochs appended to ``out_dir/curve.json`` as it comes
    (a killed run keeps its curve so far), then a final record with valid and test MRR.
    No early stopping: a curve shows the whole run, to choose epochs or options on
    validation MRR. An existing curve, or one another process is writing, is not
    overwritten."""
    if every < 1:
        raise UserError(f"every must be at least 1, got {every}")
    check_seed(seed)
    ensure_results_folder(out_dir)
    store = RecordFile(pathlib.Path(out_dir) / "curve.json", kind="curve")
    with store.locked():
        if store.records or store.in_flight:
            doing = "holds a curve" if store.records else "is being written by another process"
            raise UserError(f"{store.path} already {doing}; remove it or choose another --out")
        claim = store.claim({"curve": pathlib.Path(out_dir).name})
    try:
        splits = load_splits(config, data_dir)
        arguments = model_arguments(config, {**config.best, **overrides})
        start = time.perf_counter()

        def listener(epoch: int, mrr: float) -> None:
            store.append({"epoch": epoch, "valid_mrr": mrr, "seconds": time.perf_counter() - start})
            if progress:
                print(f"epoch {epoch}: valid MRR {mrr:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)

        result = run_guarded(train, arguments=arguments, splits=splits, protocol=config.protocol, seed=seed,
                             device=device, verbose=progress, monitor=dict(every=every, listener=listener))
        store.append({"final": True, "model": config.model, "dataset": config.dataset, "seed": seed,
                      "overrides": overrides, "arguments": arguments, **result, "config": config.source,
                      **provenance()}, release=claim)
    except BaseException:
        store.release(claim)
        raise
    return store.records


def _reproduce_one(config: ExperimentConfig, seed: int, device: str, data_dir, train, verbose: bool):
    arguments = model_arguments(config, config.best)
    result = run_guarded(train, arguments=arguments, splits=load_splits(config, data_dir),
                         protocol=config.protocol, seed=seed, device=device, verbose=verbose,
                         early_stopping=config.early_stopping)
    return arguments, result


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _start_worker(threads: int, parent: int) -> None:
    """A worker process's start: its torch threads, and a watch that ends it when its
    parent ends (a parent killed with SIGKILL cannot tell it to), so that no idle worker
    holding a dataset stays behind."""
    set_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


def _watch_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)  # the parent is gone: nobody will ever read this worker's result
