"""Experiments as data: configs, the 2018 protocol, hyperopt searches and multi-seed
reproductions, with every finished trial saved atomically so a killed run resumes.

A config (YAML, see ``configs/``) names a dataset and a model and holds

- ``protocol``: seed, user split percentages, sequence windows, ``exclude_preceding``;
- ``fixed``: model arguments every trial shares (loss, representation, ...);
- ``space``: the hyperopt search space, one distribution per argument;
- ``best``: the best arguments found by the 2018 study (trained by ``reproduce``);
- ``published``: the study's valid/test MRR for the row, when it has one;
- ``early_stopping`` (optional): ``{every: E, patience: P}`` evaluates validation MRR
  every E epochs, keeps the best weights and stops after P evaluations without a gain,
  so that ``n_iter`` becomes a maximum;
- ``data`` (optional): arguments of the dataset loader (synthetic, amazon).
"""

from __future__ import annotations

import json
import math
import pathlib
import platform
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import yaml
from tqdm.auto import tqdm

from mlstm4reco.cross_validation import user_based_train_test_split
from mlstm4reco.datasets._download import atomic_path

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
DATASETS = ("synthetic", "ml100k", "ml1m", "ml10m", "amazon")
INTEGER_ARGUMENTS = ("batch_size", "n_iter", "embedding_dim", "num_negative_samples")
DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "qloguniform", "choice")


class UserError(ValueError):
    """A mistake in the user's input (config, dataset name, missing file): the CLI prints
    its message on one line, without a traceback."""


@dataclass
class ExperimentConfig:
    dataset: str
    model: str
    protocol: dict
    fixed: dict
    space: dict
    best: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    early_stopping: dict | None = None
    source: str = "<memory>"

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.model}"


PROTOCOL_KEYS = {
    "seed", "test_percentage", "valid_percentage", "max_sequence_length",
    "min_sequence_length", "step_size", "exclude_preceding",
}


def load_config(path) -> ExperimentConfig:
    """Read and check a YAML experiment config."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"no config file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    allowed = set(ExperimentConfig.__dataclass_fields__) - {"source"}
    unknown = set(raw) - allowed
    missing = {"dataset", "model", "protocol", "fixed", "space"} - set(raw)
    if unknown or missing:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    if raw["dataset"] not in DATASETS:
        raise UserError(f"{path}: unknown dataset {raw['dataset']!r}; choose from {DATASETS}")
    if set(raw["protocol"]) != PROTOCOL_KEYS:
        raise UserError(
            f"{path}: protocol needs exactly {sorted(PROTOCOL_KEYS)}, got {sorted(raw['protocol'])}"
        )
    for name, spec in raw["space"].items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise UserError(
                f"{path}: space.{name} must be one distribution of {DISTRIBUTIONS}, "
                f"e.g. {{quniform: [64, 256, 16]}}; got {spec!r}"
            )
    stopping = raw.get("early_stopping")
    if stopping is not None and (set(stopping) != {"every", "patience"} or min(stopping.values()) < 1):
        raise UserError(f"{path}: early_stopping needs positive 'every' and 'patience', got {stopping!r}")
    try:
        space = build_space(raw["space"])
    except (TypeError, ValueError) as error:
        raise UserError(f"{path}: bad search space ({error})") from error
    config = ExperimentConfig(**raw, source=str(path))
    if config.best:
        check_model_arguments(model_arguments(config, config.best), f"{path}: fixed and best")
    if config.space:
        from hyperopt.pyll.stochastic import sample

        point = sample(space, rng=np.random.default_rng(0))
        check_model_arguments(model_arguments(config, point), f"{path}: fixed and a point of space {point}")
    return config


RUNNER_SETS = ("random_state", "device", "use_cuda", "optimizer_func")
"""ImplicitSequenceModel arguments the runner sets (seed, --device) or YAML cannot give."""


def check_model_arguments(arguments: dict, where: str) -> None:
    """Refuse what ImplicitSequenceModel would refuse (an unknown or misspelt name, a bad
    value) before any data is loaded or any run recorded; ``where`` says whence they came."""
    import inspect

    from mlstm4reco.sequence_model import ImplicitSequenceModel

    accepted = set(inspect.signature(ImplicitSequenceModel).parameters) - set(RUNNER_SETS)
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        raise UserError(f"{where}: ImplicitSequenceModel takes no {unknown} here; "
                        f"its arguments are {sorted(accepted)}")
    try:
        ImplicitSequenceModel(**arguments, device="cpu")  # checks the values; builds no network
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: {error}") from error


def config_path(dataset: str, model: str, config_dir=None) -> pathlib.Path:
    folder = pathlib.Path(config_dir) if config_dir else CONFIG_DIR
    path = folder / f"{dataset}_{model}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.yaml"))
        raise UserError(f"no config {path.name} in {folder}; available: {available}")
    return path


# ---------------------------------------------------------------------------- data


def load_dataset(config: ExperimentConfig, data_dir=None):
    """The dataset of a config as Interactions (file errors become UserErrors)."""
    from mlstm4reco.datasets import get_amazon_dataset, get_movielens_dataset, get_synthetic_dataset

    try:
        if config.dataset == "synthetic":
            return get_synthetic_dataset(**config.data)
        if config.dataset == "amazon":
            return get_amazon_dataset(**config.data, data_dir=data_dir)
        variant = {"ml100k": "100K", "ml1m": "1M", "ml10m": "10M"}[config.dataset]
        return get_movielens_dataset(variant, data_dir=data_dir)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from error


_SPLITS: dict = {}
"""Splits already built in this process, by dataset, protocol, loader arguments and folder."""


def load_splits(config: ExperimentConfig, data_dir=None):
    """(train, valid, test) of a config's dataset under its protocol, built once per process."""
    key = (config.dataset, json.dumps(config.protocol, sort_keys=True), json.dumps(config.data, sort_keys=True),
           str(data_dir))
    if key not in _SPLITS:
        _SPLITS[key] = protocol_split(load_dataset(config, data_dir), config.protocol)
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


def model_arguments(config: ExperimentConfig, params: dict) -> dict:
    """ImplicitSequenceModel arguments: ``fixed`` updated with ``params``. A dotted name
    such as ``representation_kwargs.num_components`` sets a nested argument; values of
    quantised distributions with a whole step, and the known integer arguments, become
    ints."""
    arguments = json.loads(json.dumps(config.fixed))  # a deep copy
    for name, value in params.items():
        spec = config.space.get(name, {})
        (kind, args), = spec.items() if spec else (("", ()),)
        whole_step = kind in ("quniform", "qloguniform") and float(args[-1]).is_integer()
        if whole_step or name.split(".")[-1] in INTEGER_ARGUMENTS:
            value = int(round(value))
        target = arguments
        *outer, last = name.split(".")
        for key in outer:
            target = target.setdefault(key, {})
        target[last] = value
    return arguments


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
        from mlstm4reco.evaluation import sequence_mrr_score

        mrr = float(sequence_mrr_score(self.model, self.valid, exclude_preceding=self.exclude).mean())
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
    from mlstm4reco.evaluation import sequence_mrr_score
    from mlstm4reco.sequence_model import ImplicitSequenceModel

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
    valid_mrr = float(sequence_mrr_score(model, valid, exclude_preceding=exclude).mean())
    test_mrr = float(sequence_mrr_score(model, test, exclude_preceding=exclude).mean())
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
    import hyperopt
    import torch

    import mlstm4reco

    return dict(mlstm4reco=mlstm4reco.__version__, torch=torch.__version__,
                numpy=np.__version__, hyperopt=hyperopt.__version__,
                python=platform.python_version(),
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


# ---------------------------------------------------------------------------- records


class RecordFile:
    """A JSON list of records (trials or runs), rewritten atomically after each one."""

    def __init__(self, path) -> None:
        self.path = pathlib.Path(path)
        self.records: list[dict] = []
        if self.path.is_file():
            try:
                self.records = json.loads(self.path.read_text())["records"]
            except (ValueError, KeyError) as error:
                raise UserError(f"{self.path}: unreadable results file ({error})") from error

    def append(self, record: dict) -> None:
        self.records.append(record)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({"records": self.records}, indent=1, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


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


def build_space(space: dict) -> dict:
    """hyperopt expressions from the config's ``space`` (loguniform takes log bounds)."""
    from hyperopt import hp

    expressions = {}
    for name, spec in space.items():
        (kind, args), = spec.items()
        expressions[name] = getattr(hp, kind)(name, args) if kind == "choice" else getattr(hp, kind)(name, *args)
    return expressions


def _trials_from_records(records: list[dict]):
    """A hyperopt Trials holding the finished trials, so TPE resumes where it stopped."""
    from hyperopt import JOB_STATE_DONE, STATUS_FAIL, STATUS_OK, Trials

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
    from hyperopt import STATUS_OK, fmin, space_eval, tpe

    space = build_space(config.space)
    trials = _trials_from_records(records)
    # fmin only proposes the point: the placeholder result is thrown away with `trials`.
    fmin(lambda _: {"status": STATUS_OK, "loss": 0.0}, space, algo=tpe.suggest, trials=trials,
         max_evals=len(records) + 1, rstate=np.random.default_rng([seed, number]),
         show_progressbar=False, return_argmin=False)
    vals = {k: v[0].item() if hasattr(v[0], "item") else v[0]  # plain numbers for JSON
            for k, v in trials.trials[-1]["misc"]["vals"].items() if v}
    return vals, space_eval(space, vals)


def check_trials(trials: int) -> None:
    if trials < 0:
        raise UserError(f"trials must be at least 0 (0 or the count already run rewrites the report), "
                        f"got {trials}")


def run_search(config: ExperimentConfig, trials: int, out_dir, device: str = "auto",
               data_dir=None, seed: int | None = None, progress: bool = True,
               train=train_and_evaluate) -> list[dict]:
    """Run (or resume) a TPE search maximising validation MRR until ``trials`` trials are
    recorded in ``out_dir/trials.json``. Test MRR is recorded, never optimised."""
    check_trials(trials)
    seed = config.protocol["seed"] if seed is None else seed
    store = RecordFile(pathlib.Path(out_dir) / "trials.json")
    if len(store.records) >= trials:
        return store.records
    splits = load_splits(config, data_dir)
    bar = tqdm(total=trials, initial=len(store.records), desc=f"trials {config.name}",
               disable=not progress, unit="trial")
    while len(store.records) < trials:
        vals, params = suggest(config, store.records, seed)
        arguments = model_arguments(config, params)
        result = run_guarded(train, arguments=arguments, splits=splits, protocol=config.protocol,
                             seed=seed, device=device, verbose=progress,
                             early_stopping=config.early_stopping)
        store.append({"number": len(store.records), "vals": vals, "arguments": arguments,
                      **result, "seed": seed, "config": config.source, **provenance()})
        best = max((r["valid_mrr"] for r in store.records if r["status"] == "ok"), default=float("nan"))
        bar.set_postfix(best_valid_mrr=f"{best:.4f}")
        bar.update(1)
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
    ends, so a killed reproduction resumes either way. ``train`` must then be a
    module-level function (it is pickled). With one worker, ``threads`` (when given) holds
    for the runs and torch's thread count is restored after."""
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds} (run.py report FOLDER rewrites a report)")
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    store = RecordFile(pathlib.Path(out_dir) / "runs.json")
    done = {(r["model"], r["seed"]) for r in store.records}
    todo = [(c, s) for c in configs for s in range(seeds) if (c.model, s) not in done]
    bar = tqdm(total=len(configs) * seeds, initial=len(configs) * seeds - len(todo),
               desc="runs", disable=not progress, unit="run")

    def record(config, seed, arguments, result):
        store.append({"model": config.model, "dataset": config.dataset, "seed": seed,
                      "arguments": arguments, **result, "published": config.published,
                      "config": config.source, **provenance()})
        bar.update(1)

    if workers == 1 or len(todo) <= 1:
        import torch

        before = torch.get_num_threads()
        if threads is not None:
            set_threads(threads)
        try:
            for config, seed in todo:
                record(config, seed, *_reproduce_one(config, seed, device, data_dir, train, progress))
        finally:
            set_threads(before)
    else:
        import concurrent.futures
        import multiprocessing
        import os

        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=set_threads,
                                                    initargs=(threads,)) as pool:
            futures = {pool.submit(_reproduce_one, config, seed, device, data_dir, train, False): (config, seed)
                       for config, seed in todo}
            for future in concurrent.futures.as_completed(futures):
                record(*futures[future], *future.result())
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
            overrides[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise UserError(f"--set {pair!r}: unreadable value ({error})") from error
    return overrides


def run_curve(config: ExperimentConfig, overrides: dict, seed: int, out_dir, every: int = 1,
              device: str = "auto", data_dir=None, progress: bool = True,
              train=train_and_evaluate) -> list[dict]:
    """One run of the config's ``best`` arguments updated with ``overrides``, with the
    validation MRR every ``every`` epochs appended to ``out_dir/curve.json`` as it comes
    (a killed run keeps its curve so far), then a final record with valid and test MRR.
    No early stopping: a curve shows the whole run, to choose epochs or options on
    validation MRR. An existing curve is not overwritten."""
    if every < 1:
        raise UserError(f"every must be at least 1, got {every}")
    store = RecordFile(pathlib.Path(out_dir) / "curve.json")
    if store.records:
        raise UserError(f"{store.path} already holds a curve; remove it or choose another --out")
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
                  **provenance()})
    return store.records


def _reproduce_one(config: ExperimentConfig, seed: int, device: str, data_dir, train, verbose: bool):
    arguments = model_arguments(config, config.best)
    result = run_guarded(train, arguments=arguments, splits=load_splits(config, data_dir),
                         protocol=config.protocol, seed=seed, device=device, verbose=verbose,
                         early_stopping=config.early_stopping)
    return arguments, result


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
