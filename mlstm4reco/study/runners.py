"""The runners: a TPE search, a multi-seed reproduction and a learning curve, each filling
a results file that several processes may share (:mod:`mlstm4reco.study.records`), so
that a killed run resumes and two runs on one folder lose nothing."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pathlib
import re
import threading
import time

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from mlstm4reco.study.config import ExperimentConfig, check_plain_name, model_arguments, read_yaml
from mlstm4reco.study.errors import UserError
from mlstm4reco.study.protocol import load_splits, save_id_mapping, split_notes
from mlstm4reco.study.records import RecordFile, ensure_results_folder, metric_field
from mlstm4reco.study.tpe import suggest
from mlstm4reco.study.trial import provenance, run_guarded, train_and_evaluate


def results_folder(root, name: str) -> pathlib.Path:
    """``root/name``, refused unless ``name`` is a plain name and the folder resolves
    inside ``root`` (a name from a config never writes elsewhere)."""
    check_plain_name(name, "a results folder's name")
    root = pathlib.Path(root)
    folder = root / name
    if not folder.resolve().is_relative_to(root.resolve()):
        raise UserError(
            f"{folder} resolves to {folder.resolve()}, outside the results folder {root}"
        )
    return folder


def plain_label(text: str) -> str:
    """``text`` with every character a file name should not hold replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9_.+=-]", "-", text).replace("..", "-")


def check_seed(seed, name: str = "seed") -> int:
    """A model or search seed: an integer NumPy's RandomState takes."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise UserError(f"{name} must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def check_trials(trials: int) -> None:
    if trials < 0:
        raise UserError(
            f"trials must be at least 0 (0 or the count already run rewrites the report), "
            f"got {trials}"
        )


def run_search(
    config: ExperimentConfig,
    trials: int,
    out_dir,
    device: str = "auto",
    data_dir=None,
    seed: int | None = None,
    progress: bool = True,
    train=train_and_evaluate,
) -> list[dict]:
    """Run (or resume) a TPE search maximising the config's validation ``objective`` (MRR
    by default) until ``trials`` trials are recorded or in flight in
    ``out_dir/trials.json``. The config's ``metrics`` on test are recorded, never optimised.

    Several processes may run it on one folder (with the same or other seeds): each
    claims a trial number before proposing its point, proposes from every finished trial
    it finds in the file, and adds its record to the file under its lock; together they
    stop at ``trials``."""
    check_trials(trials)
    seed = check_seed(config.protocol["seed"] if seed is None else seed)
    ensure_results_folder(out_dir)
    store = RecordFile(pathlib.Path(out_dir) / "trials.json", kind="trials")
    check_same_study(store, config)
    if len(store.records) + len(store.in_flight) >= trials:
        return store.records
    splits = load_splits(config, data_dir)
    notes = split_notes(config, data_dir)
    save_id_mapping(config, data_dir, out_dir)
    bar = tqdm(
        total=trials,
        initial=len(store.records),
        desc=f"trials {config.name}",
        disable=not progress,
        unit="trial",
    )
    while True:
        with store.locked():
            if len(store.records) + len(store.in_flight) >= trials:
                break
            number, finished = store.next_number(), list(store.records)
            claim = store.claim({"number": number})
        try:
            vals, params = suggest(config, finished, seed, number)
            arguments = model_arguments(config, params)
            result = run_guarded(
                train,
                arguments=arguments,
                splits=splits,
                protocol=config.protocol,
                seed=seed,
                device=device,
                verbose=progress,
                early_stopping=config.early_stopping,
                metrics=config.metrics,
            )
            store.append(
                {
                    "number": number,
                    "vals": vals,
                    "arguments": arguments,
                    **result,
                    "seed": seed,
                    **study_fields(config),
                    "split_notes": notes,
                    "config": config.source,
                    **provenance(),
                },
                release=claim,
            )
        except BaseException:
            store.release(claim)
            raise
        valid = metric_field("valid", config.objective)
        best = max(
            (r[valid] for r in store.records if r["status"] == "ok" and valid in r),
            default=float("nan"),
        )
        bar.set_postfix({f"best {valid}": f"{best:.4f}"})
        bar.update(len(store.records) - bar.n)
    bar.close()
    return store.records


def run_reproduce(
    configs: list[ExperimentConfig],
    seeds: int,
    out_dir,
    device: str = "auto",
    data_dir=None,
    progress: bool = True,
    train=train_and_evaluate,
    workers: int = 1,
    threads: int | None = None,
) -> list[dict]:
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
        raise UserError(
            f"seeds must be at least 1, got {seeds} (run.py report FOLDER rewrites a report)"
        )
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    ensure_results_folder(out_dir)
    store = RecordFile(pathlib.Path(out_dir) / "runs.json", kind="runs")
    for config in configs:
        check_same_study(store, config)
    jobs = [(config, seed) for config in configs for seed in range(seeds)]
    for config in configs:
        if (
            config.dataset == "file"
        ):  # its raw ids beside the runs (the others need no loading here)
            save_id_mapping(config, data_dir, out_dir)

    def open_jobs() -> list[tuple[ExperimentConfig, int]]:
        done = {(r["model"], r["seed"]) for r in store.records}
        return [
            (c, s)
            for c, s in jobs
            if (c.model, s) not in done and not store.claimed({"model": c.model, "seed": s})
        ]

    def claim_next():
        with store.locked():
            todo = open_jobs()
            if not todo:
                return None
            config, seed = todo[0]
            return config, seed, store.claim({"model": config.model, "seed": seed})

    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(open_jobs()),
        desc="runs",
        disable=not progress,
        unit="run",
    )

    def record(config, seed, claim, arguments, result):
        store.append(
            {
                "model": config.model,
                "dataset": config.dataset,
                "seed": seed,
                "arguments": arguments,
                **result,
                **study_fields(config),
                "published": config.published,
                **({"tuned": config.tuned} if config.tuned else {}),
                "config": config.source,
                **provenance(),
            },
            release=claim,
        )
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
            with concurrent.futures.ProcessPoolExecutor(
                workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(threads, os.getpid()),
            ) as pool:
                while True:
                    while len(running) < workers and (job := claim_next()) is not None:
                        running[
                            pool.submit(_reproduce_one, *job[:2], device, data_dir, train, False)
                        ] = job
                    if not running:
                        break
                    finished, _ = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in finished:
                        outcome = (
                            future.result()
                        )  # a dead worker raises here: its claim is released below
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
            raise UserError(
                f"--set {pair!r}: unreadable value ({error})".replace("\n", " ")
            ) from error
    return overrides


def run_curve(
    config: ExperimentConfig,
    overrides: dict,
    seed: int,
    out_dir,
    every: int = 1,
    device: str = "auto",
    data_dir=None,
    progress: bool = True,
    train=train_and_evaluate,
) -> list[dict]:
    """One run of the config's ``best`` arguments updated with ``overrides``, with the
    validation objective (MRR by default) every ``every`` epochs appended to
    ``out_dir/curve.json`` as it comes (a killed run keeps its curve so far), then a final
    record with the config's metrics on valid and test. No early stopping: a curve shows
    the whole run, to choose epochs or options on validation scores. An existing curve, or
    one another process is writing, is not overwritten."""
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
        save_id_mapping(config, data_dir, out_dir)
        arguments = model_arguments(config, {**config.best, **overrides})
        start = time.perf_counter()

        valid = metric_field("valid", config.objective)

        def listener(epoch: int, value: float) -> None:
            store.append(
                {
                    "epoch": epoch,
                    valid: value,
                    "seconds": time.perf_counter() - start,
                    "objective": config.objective,
                }
            )
            if progress:
                print(
                    f"epoch {epoch}: {valid} {value:.4f} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )

        result = run_guarded(
            train,
            arguments=arguments,
            splits=splits,
            protocol=config.protocol,
            seed=seed,
            device=device,
            verbose=progress,
            monitor=dict(every=every, listener=listener),
            metrics=config.metrics,
        )
        store.append(
            {
                "final": True,
                "model": config.model,
                "dataset": config.dataset,
                "seed": seed,
                "overrides": overrides,
                "arguments": arguments,
                **result,
                **study_fields(config),
                "split_notes": split_notes(config, data_dir),
                "config": config.source,
                **provenance(),
            },
            release=claim,
        )
    except BaseException:
        store.release(claim)
        raise
    return store.records


def _reproduce_one(
    config: ExperimentConfig, seed: int, device: str, data_dir, train, verbose: bool
):
    arguments = model_arguments(config, config.best)
    result = run_guarded(
        train,
        arguments=arguments,
        splits=load_splits(config, data_dir),
        protocol=config.protocol,
        seed=seed,
        device=device,
        verbose=verbose,
        early_stopping=config.early_stopping,
        metrics=config.metrics,
    )
    result["split_notes"] = split_notes(config, data_dir)
    return arguments, result


def study_fields(config: ExperimentConfig) -> dict:
    """What every record says of how it was measured: the objective and the protocol (its
    split, windows and ``exclude_preceding``), and for a user's file its path."""
    fields = {"objective": config.objective, "protocol": config.protocol}
    if config.dataset == "file":
        fields["data_path"] = str(config.data.get("path"))
    return fields


def check_same_study(store: RecordFile, config: ExperimentConfig) -> None:
    """A UserError when ``store`` holds records measured otherwise than ``config`` would
    (another objective, protocol or file: a search's TPE and a reproduction's paired
    tests would mix them); records from before these were recorded count as the study's
    objective, MRR, and are not compared on the rest."""
    expected = study_fields(config)
    for record in store.records:
        found = {key: record[key] for key in expected if key in record}
        found.setdefault("objective", "mrr")
        differs = sorted(key for key, value in found.items() if value != expected[key])
        if differs:
            raise UserError(
                f"{store.path}: holds records of another {' and '.join(differs)} "
                f"({', '.join(f'{k}: {found[k]!r}' for k in differs)}); this run's is "
                f"{', '.join(f'{k}: {expected[k]!r}' for k in differs)}: choose another --out"
            )


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
