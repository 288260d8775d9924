"""What a comparison of models needs beyond a reproduction: one set of windows for all
(--window), each model's own search's best (reproduce --tuned), and the cost of a model
in epochs and seconds to its best validation score."""

import csv
import json
import os
import subprocess

import numpy as np
import pytest
from conftest import ROOT
from test_experiments import fake_runs, read_records, run, tiny_config

from mlstm4reco.study.adjust import with_window
from mlstm4reco.study.config import load_config
from mlstm4reco.study.errors import UserError
from mlstm4reco.study.protocol import load_splits


def test_window_sets_training_windows_and_evaluation_length(tmp_path):
    config = with_window(load_config(tiny_config(tmp_path)), "12,3")
    assert {k: config.protocol[k] for k in ("max_sequence_length", "min_sequence_length")} == {
        "max_sequence_length": 12,
        "min_sequence_length": 3,
    }
    assert config.protocol["step_size"] == 12  # STEP defaults to MAX
    train, valid, test = load_splits(config)[:3]
    assert train.sequences.shape[1] == valid.sequences.shape[1] == test.sequences.shape[1] == 12
    lengths = (train.sequences > 0).sum(axis=1)
    assert lengths.min() >= 3 and lengths.max() <= 12
    assert with_window(config, "8").protocol["min_sequence_length"] == 1
    assert with_window(config, "8,2,4").protocol["step_size"] == 4
    for bad in ("0", "a", "8,9", "8,2,0", "1,1,1,1", ""):
        with pytest.raises(UserError, match="--window"):
            with_window(config, bad)


def _search(tmp_path, configs, model, *extra):
    argv = ["--dataset", "synthetic", "--model", model, "--trials", "3", "--quiet"]
    argv += ["--config-dir", str(configs), "--out", str(tmp_path / "out"), *extra]
    assert run.main(argv) == 0
    return read_records(tmp_path / "out" / f"synthetic_{model}" / "trials.json")


def test_reproduce_tuned_trains_each_models_search_best(tmp_path, capsys):
    configs = tmp_path / "configs"
    for model in ("lstm", "mlstm"):
        tiny_config(configs, model=model)
    trials = {m: _search(tmp_path, configs, m, "--window", "12,3") for m in ("lstm", "mlstm")}
    argv = ["reproduce", "--dataset", "synthetic", "--seeds", "2", "--tuned", "--quiet"]
    argv += ["--config-dir", str(configs), "--out", str(tmp_path / "out")]
    assert run.main([*argv, "--window", "12,3"]) == 0
    runs = read_records(tmp_path / "out" / "synthetic_reproduce_tuned" / "runs.json")
    assert sorted((r["model"], r["seed"]) for r in runs) == [
        (m, s) for m in ("lstm", "mlstm") for s in range(2)
    ]
    for record in runs:
        finished = [t for t in trials[record["model"]] if t["status"] == "ok"]
        best = finished[int(np.argmax([t["valid_mrr"] for t in finished]))]
        assert record["arguments"] == best["arguments"]
        assert record["tuned"]["trial"] == best["number"] and record["tuned"]["trials"] == 3
        assert record["protocol"]["max_sequence_length"] == 12
    with open(tmp_path / "out" / "synthetic_reproduce_tuned" / "table.csv") as file:
        assert [row["trials"] for row in csv.DictReader(file)] == ["3", "3"]
    # the searches measured windows of 12: without --window the study differs, refused
    capsys.readouterr()
    assert run.main(argv) == 2
    error = capsys.readouterr().err
    assert "holds records of another protocol" in error and "synthetic_lstm" in error
    # a model without a search is refused with what to run
    tiny_config(configs, model="gru")
    assert run.main([*argv, "--window", "12,3", "--models", "lstm", "gru"]) == 2
    error = capsys.readouterr().err
    assert "synthetic_gru" in error and "run.py search" in error


def test_reproduce_tuned_warns_when_budgets_differ(tmp_path, capsys):
    configs = tmp_path / "configs"
    for model in ("lstm", "mlstm"):
        tiny_config(configs, model=model)
    _search(tmp_path, configs, "lstm")
    argv = ["--dataset", "synthetic", "--model", "mlstm", "--trials", "2", "--quiet"]
    assert run.main([*argv, "--config-dir", str(configs), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    argv = ["reproduce", "--dataset", "synthetic", "--seeds", "1", "--tuned", "--quiet"]
    assert run.main([*argv, "--config-dir", str(configs), "--out", str(tmp_path / "out")]) == 0
    assert "not of one budget" in capsys.readouterr().err


def test_report_gives_epochs_and_seconds_to_the_best_validation_score(tmp_path):
    rng = np.random.default_rng(1)
    values = {m: rng.uniform(0.05, 0.15, size=(3, 2)).tolist() for m in ("a", "b")}
    records = fake_runs(values, dict(a=2.0, b=4.0))
    for record in records:
        record.update(best_epoch=int(rng.integers(1, 11)), epochs=10)
    out = tmp_path / "runs"
    out.mkdir()
    (out / "runs.json").write_text(json.dumps({"records": records}))
    assert run.main(["report", str(out), "--baseline", "a"]) == 0
    with open(out / "table.csv") as file:
        rows = {row["model"]: row for row in csv.DictReader(file)}
    for model in ("a", "b"):
        mine = [r for r in records if r["model"] == model]
        epochs = sorted(r["best_epoch"] for r in mine)[1]  # the median of three
        per_epoch = [(r["fit_seconds"] - r["eval_seconds"]) / r["epochs"] for r in mine]
        seconds = sorted(r["best_epoch"] * e for r, e in zip(mine, per_epoch))[1]
        assert float(rows[model]["epochs_to_best"]) == epochs
        assert rows[model]["seconds_to_best"] == f"{seconds:.0f}"
    # nothing published: no empty study columns
    assert not any(name.startswith("study_") for name in rows["a"])


def test_compare_script_searches_each_model_then_reproduces_the_best(tmp_path):
    """experiments/compare.sh: a search of TRIALS per model, then SEEDS runs of each
    search's best, under the given protocol, windows and objective."""
    configs = tmp_path / "configs"
    for model in ("lstm", "mlstm"):
        tiny_config(configs, model=model)
    env = dict(
        os.environ,
        MODELS="lstm mlstm",
        BASELINE="mlstm",
        TRIALS="2",
        SEEDS="2",
        THREADS="1",
        CONFIG_DIR=str(configs),
        OUT=str(tmp_path / "out"),
        DEVICE="cpu",
    )
    script = ROOT / "experiments" / "compare.sh"
    argv = ["bash", str(script), "synthetic", "leave_one_out", "12,3", "ndcg@10"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    suffix = "_leave_one_out_ndcg_at_10"
    for model in ("lstm", "mlstm"):
        trials = read_records(tmp_path / "out" / f"synthetic_{model}{suffix}" / "trials.json")
        assert len(trials) == 2 and all(t["protocol"]["split"] == "leave_one_out" for t in trials)
    runs = read_records(tmp_path / "out" / f"synthetic_reproduce{suffix}_tuned" / "runs.json")
    assert sorted((r["model"], r["seed"]) for r in runs) == [
        (m, s) for m in ("lstm", "mlstm") for s in range(2)
    ]
    assert all(r["threads"] == 1 and r["protocol"]["max_sequence_length"] == 12 for r in runs)
    assert "Paired t-test, lstm vs mlstm, test_ndcg@10" in done.stdout
    wrong = subprocess.run(["bash", str(script), "synthetic"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "compare.sh DATASET PROTOCOL WINDOW OBJECTIVE" in wrong.stderr
