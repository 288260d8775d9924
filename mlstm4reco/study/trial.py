"""One trial: train a model at one point, evaluate it, time it, and turn any failure into a
failed record instead of a crash."""

from __future__ import annotations

import math
import platform
import time
import traceback

import hyperopt
import numpy as np
import torch
import tqdm

import mlstm4reco
from mlstm4reco import evaluation
from mlstm4reco.sequence_model import ImplicitSequenceModel
from mlstm4reco.study.records import metric_field


class EarlyStopping:
    """A ``fit`` callback: the validation ``objective`` (a name of
    :data:`mlstm4reco.evaluation.METRICS`, default MRR) every ``every`` epochs; the best
    weights are kept, and training stops after ``patience`` evaluations without a gain
    (never when ``patience`` is None). ``listener(epoch, value)``, when given, hears every
    evaluation (the Ray backend reports them to its scheduler)."""

    def __init__(
        self,
        model,
        valid,
        exclude_preceding: bool,
        every: int,
        patience: int | None,
        listener=None,
        objective: str = "mrr",
        verbose: bool = False,
    ) -> None:
        self.model, self.valid, self.exclude = model, valid, exclude_preceding
        self.verbose = verbose
        self.every, self.patience, self.listener = every, patience, listener
        self.objective = objective
        self.best_value, self.best_epoch, self.best_state, self.stale = -math.inf, None, None, 0
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
        value = evaluation.evaluate(
            self.model, self.valid, [self.objective], exclude_preceding=self.exclude
        )
        value = value[self.objective]
        self.history.append((epoch + 1, value))
        if self.listener is not None:
            self.listener(epoch + 1, value)
        improved = value > self.best_value
        if self.verbose:
            best = value if improved else self.best_value
            tqdm.tqdm.write(
                f"epoch {epoch + 1}: valid {self.objective} {value:.4f} (best {best:.4f}"
                f"{'' if improved else f' at epoch {self.best_epoch}'})"
            )
        if improved:
            self.best_value, self.best_epoch, self.stale = value, epoch + 1, 0
            if self.patience is not None:  # a monitor that never stops never restores
                self.best_state = {
                    k: v.detach().clone() for k, v in self.model.net.state_dict().items()
                }
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.net.load_state_dict(self.best_state)


def train_and_evaluate(
    arguments: dict,
    splits,
    protocol: dict,
    seed: int,
    device: str,
    verbose: bool = False,
    early_stopping: dict | None = None,
    monitor: dict | None = None,
    metrics=("mrr",),
) -> dict:
    """Fit one model and return each of ``metrics`` on valid and test (fields
    ``valid_NAME``, ``test_NAME``; the first metric is the objective, which early stopping
    follows: with it, of the weights with the best validation value) and timings:
    ``fit_seconds`` for ``fit`` and, of those, ``eval_seconds`` in validation evaluations
    during it. ``monitor`` (``{every: E, listener: f}``) calls ``f(epoch, valid_value)``
    every E epochs (every ``early_stopping.every`` epochs when early stopping is on) and
    changes nothing else."""
    train, valid, test = splits
    exclude = protocol["exclude_preceding"]
    metrics = list(metrics)
    objective = metrics[0]
    model = ImplicitSequenceModel(**arguments, random_state=seed, device=device)
    listener = monitor["listener"] if monitor else None
    if early_stopping:
        stopper = EarlyStopping(
            model,
            valid,
            exclude,
            **early_stopping,
            listener=listener,
            objective=objective,
            verbose=verbose,
        )
    elif monitor:
        stopper = EarlyStopping(
            model, valid, exclude, monitor["every"], None, listener, objective, verbose
        )
    else:
        stopper = None
    start = time.perf_counter()
    losses = model.fit(train, verbose=verbose, callback=stopper)
    fit_seconds = time.perf_counter() - start
    extra = {}
    if early_stopping:
        stopper.restore()
        extra = dict(best_epoch=stopper.best_epoch, valid_history=stopper.history)
    scores = {}
    for split, interactions in (("valid", valid), ("test", test)):
        for name, value in evaluation.evaluate(
            model, interactions, metrics, exclude_preceding=exclude
        ).items():
            scores[metric_field(split, name)] = value
    if not all(math.isfinite(value) for value in scores.values()):
        raise ValueError(f"non-finite metrics: {scores}")
    return dict(
        **scores,
        final_loss=losses[-1],
        epochs=len(losses),
        fit_seconds=fit_seconds,
        eval_seconds=stopper.seconds if stopper is not None else 0.0,
        device=str(model.device),
        threads=torch.get_num_threads(),  # the times depend on it
        **extra,
    )


def provenance() -> dict:
    """What every trial or run record carries about where it came from."""
    return {"versions": versions(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def versions() -> dict:
    return dict(
        mlstm4reco=mlstm4reco.__version__,
        torch=torch.__version__,
        numpy=np.__version__,
        hyperopt=hyperopt.__version__,
        python=platform.python_version(),
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )


def run_guarded(function, **kwargs) -> dict:
    """Run one trial; a raised error or a NaN becomes a failed record, not a crash."""
    start = time.perf_counter()
    try:
        result = {"status": "ok", **function(**kwargs)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - any failure of one trial is recorded
        result = {
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=5),
        }
    result["seconds"] = time.perf_counter() - start
    return result
