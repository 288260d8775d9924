"""The experiment runner end to end: searches, reproductions, resume after SIGKILL,
failed trials, user errors."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, require_archive

from mlstm4reco import search

RUN = [sys.executable, str(ROOT / "experiments" / "run.py")]
sys.path.insert(0, str(ROOT / "experiments"))
import run  # noqa: E402


def tiny_config(folder, dataset="synthetic", model="mlstm", n_iter=(1, 2, 1), **changes):
    protocol = dict(
        seed=72,
        test_percentage=0.2,
        valid_percentage=0.5,
        max_sequence_length=20,
        min_sequence_length=5,
        step_size=20,
        exclude_preceding=True,
    )
    if dataset != "synthetic":
        protocol.update(max_sequence_length=100, min_sequence_length=20, step_size=100)
    config = dict(
        dataset=dataset,
        model=model,
        protocol=protocol,
        fixed=dict(loss="adaptive_hinge", representation=model),
        space=dict(
            batch_size={"quniform": [64, 128, 64]},
            learning_rate={"loguniform": [-5, -3]},
            l2={"loguniform": [-25, -9]},
            n_iter={"quniform": list(n_iter)},
            embedding_dim={"quniform": [8, 16, 8]},
        ),
        best=dict(learning_rate=1e-2, batch_size=64, embedding_dim=8, l2=1e-6, n_iter=2),
        published=dict(valid_mrr=0.2, test_mrr=0.25),
    )
    if dataset == "synthetic":
        config["data"] = dict(num_users=100, num_items=40, num_interactions=6000, random_state=0)
    config.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset}_{model}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_records(path):
    return json.loads(path.read_text())["records"]


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_search_follows_its_objective_and_records_every_metric(tmp_path, capsys):
    """objective: ndcg@10 with metrics [mrr, hit_rate@5]: every trial records the three on
    valid and test (the objective first), TPE learns from the validation NDCG@10, early
    stopping keeps the epoch of the best one, and the report names it."""
    from mlstm4reco.study.tpe import _trials_from_records

    config = tiny_config(
        tmp_path / "configs",
        objective="ndcg@10",
        metrics=["mrr", "hit_rate@5"],
        early_stopping={"every": 1, "patience": 3},
        n_iter=(2, 3, 1),
    )
    assert search.load_config(config).metrics == ["ndcg@10", "mrr", "hit_rate@5"]
    assert (
        run.main(
            [
                "--dataset",
                "synthetic",
                "--model",
                "mlstm",
                "--trials",
                "2",
                "--config",
                str(config),
                "--out",
                str(tmp_path / "out"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "out" / "synthetic_mlstm_ndcg_at_10"  # never the folder of an MRR search
    records = read_records(out / "trials.json")
    for record in records:
        assert record["status"] == "ok" and record["objective"] == "ndcg@10"
        for split in ("valid", "test"):
            assert 0 < record[f"{split}_hit_rate@5"] <= 1 and 0 < record[f"{split}_mrr"] <= 1
            assert 0 < record[f"{split}_ndcg@10"] <= 1
        epoch, value = max(record["valid_history"], key=lambda pair: pair[1])  # the first best
        assert record["best_epoch"] == epoch and record["valid_ndcg@10"] == pytest.approx(value)
    assert _trials_from_records(records).losses() == [-r["valid_ndcg@10"] for r in records]
    best = max(records, key=lambda r: r["valid_ndcg@10"])
    summary = (out / "summary.md").read_text()
    assert (
        f"Best by validation NDCG@10: trial {best['number']}, valid {best['valid_ndcg@10']:.4f}"
        in summary
    )
    header = (out / "trials.csv").read_text().splitlines()[0].split(",")
    assert header[2:8] == [
        "valid_ndcg@10",
        "test_ndcg@10",
        "valid_mrr",
        "test_mrr",
        "valid_hit_rate@5",
        "test_hit_rate@5",
    ]
    assert is_png(out / "valid_ndcg@10.png")


def test_records_without_an_objective_are_read_as_mrr(tmp_path):
    """Records files from before objectives: their valid_mrr/test_mrr are the objective's
    fields; a record that names another objective must carry that one's."""
    path = tmp_path / "runs.json"
    run_record = dict(
        model="mlstm",
        dataset="synthetic",
        seed=0,
        arguments={},
        status="ok",
        seconds=1.0,
        valid_mrr=0.1,
        test_mrr=0.2,
        fit_seconds=1.0,
    )
    path.write_text(json.dumps({"records": [run_record]}))
    assert search.RecordFile(path, kind="runs").records[0]["valid_mrr"] == 0.1
    path.write_text(json.dumps({"records": [dict(run_record, objective="ndcg@10")]}))
    with pytest.raises(search.UserError, match=r"record 0: no field 'valid_ndcg@10'"):
        search.RecordFile(path, kind="runs")


@pytest.mark.parametrize("dataset", ["synthetic", "ml100k"])
def test_search_end_to_end(tmp_path, dataset, capsys):
    if dataset == "ml100k":
        require_archive("ml-100k.zip")
    config = tiny_config(tmp_path / "configs", dataset)
    assert (
        run.main(
            [
                "--dataset",
                dataset,
                "--model",
                "mlstm",
                "--trials",
                "2",
                "--config",
                str(config),
                "--out",
                str(tmp_path / "out"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "out" / f"{dataset}_mlstm"
    records = read_records(out / "trials.json")
    assert [r["number"] for r in records] == [0, 1]
    for record in records:
        assert record["status"] == "ok"
        assert 0 < record["valid_mrr"] <= 1 and 0 < record["test_mrr"] <= 1
        assert record["seed"] == 72 and record["device"] == "cpu" and record["seconds"] > 0
        assert record["versions"]["torch"] and record["versions"]["hyperopt"]
        assert record["versions"]["gpu"] == (
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        )
        assert 1 <= record["arguments"]["n_iter"] <= 2 and record["arguments"]["embedding_dim"] in (
            8,
            16,
        )
    summary = (out / "summary.md").read_text()
    best = max(records, key=lambda r: r["valid_mrr"])
    assert f"Best by validation MRR: trial {best['number']}" in summary
    assert len((out / "trials.csv").read_text().splitlines()) == 3
    assert is_png(out / "valid_mrr.png")
    assert "Best by validation MRR" in capsys.readouterr().out


def test_reproduce_end_to_end(tmp_path):
    configs = tmp_path / "configs"
    for model in ("lstm", "mlstm"):
        tiny_config(configs, model=model)
    assert (
        run.main(
            [
                "reproduce",
                "--dataset",
                "synthetic",
                "--seeds",
                "3",
                "--config-dir",
                str(configs),
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "out" / "synthetic_reproduce"
    records = read_records(out / "runs.json")
    assert sorted((r["model"], r["seed"]) for r in records) == [
        (m, s) for m in ("lstm", "mlstm") for s in range(3)
    ]
    table = (out / "table.md").read_text()
    for model in ("lstm", "mlstm"):
        values = np.array([r["test_mrr"] for r in records if r["model"] == model])
        assert f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" in table
    assert "| 0.2 | 0.25 |" in table  # the published numbers beside ours
    assert "Paired t-test, mlstm vs lstm, test_mrr over 3 seeds" in table
    assert "| 1.00x |" in table  # the LSTM's epoch time relative to itself
    assert (out / "table.csv").read_text().startswith("dataset,model,seeds")
    assert is_png(out / "comparison.png")


def fake_runs(values: dict, seconds_per_epoch: dict) -> list[dict]:
    """Reproduction records of finished runs: ``values[model]`` lists (valid, test) per seed.
    Each fit takes 10 epochs of ``seconds_per_epoch[model]`` plus validation evaluations
    (timed apart) and, at seed 0, a one-off 100 s (as a GPU kernel's compilation)."""
    return [
        dict(
            model=m,
            dataset="synthetic",
            seed=s,
            status="ok",
            valid_mrr=v,
            test_mrr=t,
            seconds=10 * seconds_per_epoch[m] + 3 * s + 100 * (s == 0) + 1,
            fit_seconds=10 * seconds_per_epoch[m] + 3 * s + 100 * (s == 0),
            eval_seconds=3.0 * s,
            arguments=dict(n_iter=10),
            published=None,
        )
        for m, pairs in values.items()
        for s, (v, t) in enumerate(pairs)
    ]


def test_report_rewrites_the_tests_from_runs_json(tmp_path, capsys):
    """`report` pairs each model with --baseline and then each --pairs MODEL:AGAINST, with
    the figures scipy gives; epoch times are training alone, medians over seeds, relative
    to the baseline's."""
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(0)
    values = {m: rng.uniform(0.05, 0.15, size=(4, 2)).tolist() for m in ("a", "b", "c")}
    out = tmp_path / "runs"
    out.mkdir()
    (out / "runs.json").write_text(
        json.dumps({"records": fake_runs(values, dict(a=2.0, b=3.0, c=5.0))})
    )
    assert run.main(["report", str(out), "--baseline", "a", "--pairs", "c:b", "b:a"]) == 0
    table = (out / "table.md").read_text()
    assert "| epoch_vs_a |" in table and "| 3.00 | 1.50x |" in table and "| 5.00 | 2.50x |" in table
    assert "| 2.00 | 1.00x |" in table
    # seconds per run: the median of 10 x 2 + 3 s + 1 over seeds 0..3 (one outlier at seed 0)
    assert (
        f"| {np.median([20 + 3 * s + 100 * (s == 0) + 1 for s in range(4)]):.0f} | 2.00 |" in table
    )
    tests = [line for line in table.splitlines() if line.startswith("- Paired")]
    expected = [
        (m, against, metric)
        for m, against in (("b", "a"), ("c", "a"), ("c", "b"))
        for metric in ("test_mrr", "valid_mrr")
    ]
    assert len(tests) == len(expected)  # b:a is the baseline's pair already: tested once
    for line, (model, against, metric) in zip(tests, expected):
        column = 0 if metric == "valid_mrr" else 1
        x, y = (np.array(values[name])[:, column] for name in (against, model))
        result = ttest_rel(y, x)
        assert line.startswith(
            f"- Paired t-test, {model} vs {against}, {metric} over 4 seeds: "
            f"mean difference {np.mean(y - x):+.4f}"
        ), line
        assert (
            f"t = {result.statistic:.2f}, p = {result.pvalue:.3f}; {model} better on "
            f"{int((y > x).sum())} of 4" in line
        )
    capsys.readouterr()
    for bad, message in (
        (["--pairs", "c"], "--pairs expects MODEL:AGAINST, got 'c'"),
        (["--pairs", "c:lstm"], "no runs of model 'lstm' to compare (models: a, b, c)"),
        (["--pairs", "c:c"], "cannot compare 'c' with itself"),
        (["--baseline", "lstm"], "--baseline 'lstm': no such model"),
    ):
        assert run.main(["report", str(out), *bad]) == 2
        assert message in capsys.readouterr().err
        assert (out / "table.md").read_text() == table  # a refused report keeps the last one
    assert run.main(["report", str(tmp_path / "empty")]) == 2
    assert "empty/runs.json: no runs to report" in capsys.readouterr().err


def test_reproduce_checks_its_pairs_before_training(tmp_path, capsys):
    configs = tmp_path / "configs"
    for model in ("lstm", "mlstm"):
        tiny_config(configs, model=model)
    argv = [
        "reproduce",
        "--dataset",
        "synthetic",
        "--seeds",
        "1",
        "--config-dir",
        str(configs),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--pairs",
        "mlstm:mlstm_hidden",
    ]
    assert run.main(argv) == 2
    assert (
        "no runs of model 'mlstm_hidden' to compare (models: lstm, mlstm)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out" / "synthetic_reproduce" / "runs.json").exists()  # nothing trained


def test_reproduce_with_workers_gives_the_same_runs(tmp_path):
    """Two worker processes of one thread each give the records one process of one
    thread gives, and resume from the same runs.json."""
    import torch

    configs = [
        search.load_config(tiny_config(tmp_path / "configs", model=m)) for m in ("lstm", "mlstm")
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = search.run_reproduce(configs, 2, tmp_path / "alone", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    search.run_reproduce(
        configs[:1], 1, tmp_path / "pool", device="cpu", progress=False
    )  # one run done
    pooled = search.run_reproduce(
        configs, 2, tmp_path / "pool", device="cpu", progress=False, workers=2, threads=1
    )
    key = lambda r: (r["model"], r["seed"])  # noqa: E731
    assert sorted(map(key, pooled)) == sorted(map(key, alone)) and len(pooled) == 4
    by_run = {key(r): r for r in alone}
    for record in pooled:
        assert record["status"] == "ok"
        for name in ("valid_mrr", "test_mrr", "final_loss"):
            assert record[name] == pytest.approx(by_run[key(record)][name], rel=1e-6), (
                key(record),
                name,
            )
    with pytest.raises(search.UserError, match="workers must be at least 1, got 0"):
        search.run_reproduce(configs, 1, tmp_path / "bad", workers=0)
    with pytest.raises(search.UserError, match="seeds must be at least 1, got 0"):
        search.run_reproduce(configs, 0, tmp_path / "bad")
    with pytest.raises(search.UserError, match="trials must be at least 0 .*got -1"):
        search.run_search(configs[0], -1, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def count_threads(**kwargs):
    """A stand-in trainer whose result is the torch thread count it ran with."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "valid_mrr": 0.1,
        "test_mrr": 0.1,
        "fit_seconds": 0.0,
    }


def test_reproduce_threads_hold_for_one_worker_and_are_checked(tmp_path):
    """--threads is not dropped with one worker: the runs see it, and torch's count is back
    after; a count under 1 is refused before anything is written."""
    import torch

    config = search.load_config(tiny_config(tmp_path / "configs"))
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    records = search.run_reproduce(
        [config],
        2,
        tmp_path / "out",
        device="cpu",
        progress=False,
        train=count_threads,
        threads=wanted,
    )
    assert [r["threads"] for r in records] == [wanted, wanted]
    assert torch.get_num_threads() == before
    for bad in (0, -2):
        with pytest.raises(search.UserError, match=f"threads must be at least 1, got {bad}"):
            search.run_reproduce([config], 1, tmp_path / "bad", threads=bad)
    assert not (tmp_path / "bad").exists()


def write_curve(folder, epochs, rng, every=1, final=None):
    """A curve.json of random validation MRRs at epochs every, 2 every, ... epochs."""
    folder.mkdir(parents=True)
    points = [
        dict(epoch=e, valid_mrr=float(rng.uniform(0.05, 0.2)), seconds=float(e))
        for e in range(every, epochs + 1, every)
    ]
    records = points + ([dict(final=True, status="ok", **final)] if final else [])
    (folder / "curve.json").write_text(json.dumps({"records": records}))
    return {p["epoch"]: p["valid_mrr"] for p in points}


def table_rows(table):
    cells = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in table.splitlines()
        if line.startswith("| ")
    ]
    return cells[0], {row[0]: row for row in cells[2:]}


def test_curves_side_by_side(tmp_path, capsys):
    """`curves` averages each curve's validation MRR over windows of epochs (a short curve
    has blanks where it has no points), with its best and final MRR; bad input is refused
    and the last report kept."""
    rng = np.random.default_rng(3)
    folders, values = [], {}
    for name, epochs, every in (("long", 8, 1), ("short", 5, 1), ("sparse", 8, 2)):
        final = dict(valid_mrr=0.3, test_mrr=0.4) if name != "short" else None
        values[name] = write_curve(tmp_path / name, epochs, rng, every, final)
        folders.append(str(tmp_path / name))
    out = tmp_path / "cmp"
    assert run.main(["curves", *folders, "--out", str(out), "--window", "3"]) == 0
    table = (out / "curves.md").read_text()
    header, rows = table_rows(table)
    assert header[:7] == [
        "curve",
        "seeds",
        "epochs",
        "valid_1-3",
        "valid_4-6",
        "valid_7-8",
        "best_valid",
    ]
    for name, curve in values.items():
        expected = [
            f"{np.mean([v for e, v in curve.items() if low <= e <= high]):.4f}"
            if any(low <= e <= high for e in curve)
            else ""
            for low, high in ((1, 3), (4, 6), (7, 8))
        ]
        assert rows[name][1] == "1" and rows[name][3:6] == expected, name
        best = max(curve, key=curve.get)
        assert rows[name][6] == f"{curve[best]:.4f} (epoch {best})"
    assert rows["long"][7:] == ["0.3000", "0.4000"] and rows["short"][7:] == ["", ""]
    assert rows["short"][5] == ""  # no points after epoch 5
    assert "Paired t-test" not in table  # one curve a label: nothing to pair
    assert is_png(out / "curves.png") and (out / "curves.csv").read_text().startswith(
        "curve,seeds,epochs,"
    )
    capsys.readouterr()
    for bad, message in (
        ([folders[0], str(tmp_path)], f"{tmp_path / 'curve.json'}: no such file"),
        ([*folders[:2], "--labels", "a"], "--labels: 1 labels for 2 folders"),
        (
            [folders[1], folders[0], "--labels", "a", "a"],
            f"{tmp_path / 'short' / 'curve.json'}: no final record with a seed (a run in "
            "progress?)",
        ),
        ([folders[0], "--window", "0"], "--window must be at least 1 epoch, got 0"),
    ):
        assert run.main(["curves", *bad, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert (out / "curves.md").read_text() == table


def test_curves_of_several_seeds_are_averaged_and_paired(tmp_path, capsys):
    """Folders under one label are seeds: each window's cell is the mean ± std over seeds
    of their window means, the best epoch is the mean curve's, and the paired tests
    against the first label match scipy's over the seeds both labels have."""
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(5)
    curves, finals, folders, labels = {}, {}, [], []
    for label, seeds in (("lstm", (0, 1, 2)), ("mlstm", (2, 0, 1, 7))):  # seed 7 has no partner
        for seed in seeds:
            final = dict(
                seed=seed,
                valid_mrr=float(rng.uniform(0.1, 0.2)),
                test_mrr=float(rng.uniform(0.1, 0.2)),
            )
            curves.setdefault(label, {})[seed] = write_curve(
                tmp_path / f"{label}{seed}", 6, rng, final=final
            )
            finals.setdefault(label, {})[seed] = final
            folders.append(str(tmp_path / f"{label}{seed}"))
            labels.append(label)
    out = tmp_path / "cmp"
    assert (
        run.main(["curves", *folders, "--labels", *labels, "--out", str(out), "--window", "4"]) == 0
    )
    table = (out / "curves.md").read_text()
    header, rows = table_rows(table)
    assert header[3:5] == ["valid_1-4", "valid_5-6"]

    def mean_std(values):
        return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"

    windows = {
        label: {
            seed: [
                np.mean([v for e, v in c.items() if low <= e <= high])
                for low, high in ((1, 4), (5, 6))
            ]
            for seed, c in by_seed.items()
        }
        for label, by_seed in curves.items()
    }
    for label, by_seed in curves.items():
        assert rows[label][1] == str(len(by_seed))
        assert rows[label][3:5] == [
            mean_std([w[i] for w in windows[label].values()]) for i in (0, 1)
        ]
        mean = {e: np.mean([c[e] for c in by_seed.values()]) for e in range(1, 7)}
        best = max(mean, key=mean.get)
        assert rows[label][5] == f"{mean[best]:.4f} (epoch {best})"
        assert rows[label][6:] == [
            mean_std([f[m] for f in finals[label].values()]) for m in ("valid_mrr", "test_mrr")
        ]
    for metric, value in (
        ("test_mrr", lambda label, s: finals[label][s]["test_mrr"]),
        ("valid_mrr", lambda label, s: finals[label][s]["valid_mrr"]),
        ("valid_5-6", lambda label, s: windows[label][s][1]),
    ):
        a, b = ([value(label, s) for s in (0, 1, 2)] for label in ("lstm", "mlstm"))
        expected = ttest_rel(b, a)
        line = next(
            text for text in table.splitlines() if f"mlstm vs lstm, {metric} over 3 seeds" in text
        )
        assert f"mean difference {np.mean(np.subtract(b, a)):+.4f}" in line
        assert f"t = {expected.statistic:.2f}, p = {expected.pvalue:.3f}" in line
    assert is_png(out / "curves.png")
    capsys.readouterr()
    assert (
        run.main(["curves", folders[0], folders[0], "--labels", "x", "x", "--out", str(out)]) == 2
    )
    assert f"label 'x': {folders[0]} and {folders[0]} are both seed 0" in capsys.readouterr().err


def test_curve_end_to_end(tmp_path, capsys):
    """The validation MRR of every epoch, with the overrides applied; the last point is the
    final model's validation MRR (no early stopping, same weights)."""
    config = tiny_config(tmp_path / "configs")
    argv = [
        "curve",
        "--dataset",
        "synthetic",
        "--model",
        "mlstm",
        "--config",
        str(config),
        "--set",
        "n_iter=3",
        "--set",
        "representation_kwargs.dropout=0.1",
        "--seed",
        "4",
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--quiet",
    ]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert run.main([*argv, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 2  # restored: main() may run inside a process
    finally:
        torch.set_num_threads(threads)
    out = (
        tmp_path
        / "out"
        / "curves"
        / "synthetic_mlstm_n_iter=3_representation_kwargs.dropout=0.1_seed4"
    )
    *points, final = read_records(out / "curve.json")
    assert [p["epoch"] for p in points] == [1, 2, 3]
    assert (
        final["final"] and final["status"] == "ok" and final["seed"] == 4 and final["epochs"] == 3
    )
    assert final["threads"] == 1  # --threads held for the run
    assert (
        final["arguments"]["representation_kwargs"] == {"dropout": 0.1}
        and final["arguments"]["n_iter"] == 3
    )
    assert final["valid_mrr"] == pytest.approx(points[-1]["valid_mrr"], rel=1e-12)
    assert len({p["valid_mrr"] for p in points}) > 1  # the model changed between epochs
    assert (
        f"Best validation MRR {max(p['valid_mrr'] for p in points):.4f}"
        in (out / "curve.md").read_text()
    )
    assert is_png(out / "curve.png")
    capsys.readouterr()
    assert run.main(argv) == 2  # an existing curve is kept, not overwritten
    assert "already holds a curve" in capsys.readouterr().err
    assert run.main([*argv[:5], "--set", "dropout"]) == 2
    assert "--set expects NAME=VALUE, got 'dropout'" in capsys.readouterr().err
    assert run.main([*argv[:5], "--out", str(tmp_path / "other"), "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    for change, message in (
        (
            ["--set", "n_iters=3"],
            "with --set n_iters=3: ImplicitSequenceModel takes no ['n_iters']",
        ),
        (["--set", "representation_kwargs.dropuot=0.1"], "'mlstm' (MLSTMNet) takes no ['dropuot']"),
        (["--set", "loss=hinj"], "unknown loss 'hinj'"),
    ):
        assert run.main([*argv[:7], *change, "--out", str(tmp_path / "other"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "other").exists()  # refused before any data or record


def test_paired_test_matches_scipy():
    from scipy.stats import ttest_rel

    from mlstm4reco.report import paired_test

    a, b = [0.10, 0.12, 0.11, 0.13], [0.12, 0.12, 0.14, 0.15]
    records = [
        dict(model=m, seed=s, status="ok", test_mrr=v)
        for m, values in (("lstm", a), ("mlstm", b))
        for s, v in enumerate(values)
    ]
    result = paired_test(records, "lstm", "mlstm")
    expected = ttest_rel(b, a)
    assert result["p"] == pytest.approx(expected.pvalue) and result["t"] == pytest.approx(
        expected.statistic
    )
    assert result["mean_difference"] == pytest.approx(np.mean(np.subtract(b, a)))
    assert result["b_wins"] == 3


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path):
    config = search.load_config(tiny_config(tmp_path))
    calls = []

    def flaky(arguments, **kwargs):
        calls.append(arguments)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        if len(calls) == 3:
            return search.train_and_evaluate(dict(arguments, learning_rate=float("nan")), **kwargs)
        return dict(
            valid_mrr=0.1 * len(calls), test_mrr=0.2, final_loss=1.0, fit_seconds=0.0, device="cpu"
        )

    records = search.run_search(config, 4, tmp_path / "out", progress=False, train=flaky)
    assert [r["status"] for r in records] == ["ok", "failed", "failed", "ok"]
    assert "RuntimeError: out of memory" in records[1]["error"]
    assert (
        "learning_rate must be a positive number, got nan" in records[2]["error"]
    )  # NaN: the model refuses it
    assert records[3]["valid_mrr"] == pytest.approx(0.4)


def test_resumed_search_proposes_what_an_uninterrupted_one_would(tmp_path):
    config = search.load_config(tiny_config(tmp_path))

    def fake(arguments, **kwargs):
        return dict(
            valid_mrr=arguments["learning_rate"],
            test_mrr=0.0,
            final_loss=1.0,
            fit_seconds=0.0,
            device="cpu",
        )

    whole = search.run_search(config, 4, tmp_path / "a", progress=False, train=fake)
    search.run_search(config, 2, tmp_path / "b", progress=False, train=fake)
    resumed = search.run_search(config, 4, tmp_path / "b", progress=False, train=fake)
    assert [r["vals"] for r in resumed] == [r["vals"] for r in whole]


def test_sigkill_keeps_finished_trials_and_the_rerun_continues(tmp_path):
    config = tiny_config(tmp_path / "configs", n_iter=(3, 4, 1))
    out = tmp_path / "out"
    command = RUN + [
        "--dataset",
        "synthetic",
        "--model",
        "mlstm",
        "--config",
        str(config),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
    ]
    trials_file = out / "synthetic_mlstm" / "trials.json"
    process = subprocess.Popen(
        command + ["--trials", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (
        trials_file.exists() and len(read_records(trials_file)) >= 2
    ):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survived = read_records(trials_file)  # still valid JSON: written atomically
    assert len(survived) >= 2
    target = len(survived) + 1
    subprocess.run(
        command + ["--trials", str(target)], check=True, capture_output=True, timeout=300
    )
    after = read_records(trials_file)
    assert len(after) == target
    assert after[: len(survived)] == survived
    assert after[-1]["number"] == target - 1 and after[-1]["status"] == "ok"
    assert not [p for p in trials_file.parent.iterdir() if p.name.endswith(".part")]


def test_user_errors_are_one_line(tmp_path):
    result = subprocess.run(
        RUN + ["--dataset", "ml1m", "--model", "transformer", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]
        and "no config ml1m_transformer.yaml" in result.stderr
    )
    assert "Traceback" not in result.stderr
    bad = tiny_config(tmp_path, space={"lr": {"normal": [0, 1]}})
    with pytest.raises(search.UserError, match="space.lr must be one distribution"):
        search.load_config(bad)
    wrong = tiny_config(tmp_path / "x", protocol={"seed": 1})
    with pytest.raises(search.UserError, match="protocol needs exactly"):
        search.load_config(wrong)


def test_missing_data_file_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLSTM4RECO_DATA", raising=False)
    config = tiny_config(tmp_path / "configs", dataset="ml1m")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("MLSTM4RECO_DATA", None)
    result = subprocess.run(
        RUN
        + [
            "--dataset",
            "ml1m",
            "--model",
            "mlstm",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ml-1m.zip is not on disk" in result.stderr


def test_shipped_configs_are_valid_and_hold_the_study():
    rows = {}
    from mlstm4reco.sequence_model import ImplicitSequenceModel

    for path in sorted(search.CONFIG_DIR.glob("*.yaml")):
        config = search.load_config(path)
        assert path.stem == config.name
        # Every config proposes a point that builds a model (and its best arguments do).
        _, params = search.suggest(config, [], seed=0)
        for arguments in (
            search.model_arguments(config, params),
            search.model_arguments(config, config.best),
        ):
            ImplicitSequenceModel(**arguments, device="cpu")._initialize(50)
        if config.published:
            rows[config.name] = (config.best, config.published)
    assert rows["ml1m_mlstm"] == (
        dict(learning_rate=1.25e-2, batch_size=240, embedding_dim=120, l2=5.90e-6, n_iter=40),
        dict(valid_mrr=0.1275, test_mrr=0.1386),
    )
    assert rows["amazon_lstm"][0]["l2"] == 2.42e-11
    assert len(rows) == 6  # the study's six rows
    assert not math.isnan(rows["ml10m_lstm"][1]["test_mrr"])


def test_dotted_names_set_representation_options(tmp_path):
    space = dict(
        embedding_dim={"quniform": [8, 16, 8]},
        **{"representation_kwargs.num_components": {"quniform": [2, 3, 1]}},
    )
    config = search.load_config(
        tiny_config(
            tmp_path,
            model="mixture_mlstm",
            space=space,
            fixed=dict(
                loss="bpr", representation="mixture_mlstm", representation_kwargs={"state": "cell"}
            ),
        )
    )
    arguments = search.model_arguments(
        config,
        {"representation_kwargs.num_components": 3.0, "embedding_dim": 16.0, "learning_rate": 0.5},
    )
    assert arguments == dict(
        loss="bpr",
        representation="mixture_mlstm",
        embedding_dim=16,
        learning_rate=0.5,
        representation_kwargs={"state": "cell", "num_components": 3},
    )
    assert config.fixed["representation_kwargs"] == {"state": "cell"}  # not modified
    records = search.run_search(config, 1, tmp_path / "out", device="cpu", progress=False)
    assert records[0]["status"] == "ok", records[0].get("error")
    assert records[0]["arguments"]["representation_kwargs"]["num_components"] in (2, 3)


def test_early_stopping_keeps_the_best_weights(tmp_path):
    config = search.load_config(
        tiny_config(
            tmp_path,
            n_iter=(6, 8, 2),
            early_stopping={"every": 1, "patience": 2},
            space=dict(n_iter={"quniform": [6, 8, 2]}, learning_rate={"loguniform": [-2, -1]}),
        )
    )
    records = search.run_search(config, 2, tmp_path / "out", device="cpu", progress=False)
    for record in records:
        assert record["status"] == "ok", record.get("error")
        history = record["valid_history"]
        assert [epoch for epoch, _ in history] == list(range(1, record["epochs"] + 1))
        best_epoch, best_mrr = max(history, key=lambda pair: pair[1])
        assert record["best_epoch"] == best_epoch
        assert record["valid_mrr"] == pytest.approx(best_mrr)  # the best weights came back
        # Stops after 2 evaluations without a gain, or at n_iter.
        assert record["epochs"] - best_epoch <= 2
        if record["epochs"] < record["arguments"]["n_iter"]:
            assert record["epochs"] - best_epoch == 2
    with pytest.raises(search.UserError, match="early_stopping needs positive"):
        search.load_config(
            tiny_config(tmp_path / "bad", early_stopping={"every": 0, "patience": 1})
        )


def _train_tiny(tmp_path, n_iter: int, early_stopping: dict, verbose: bool = False) -> dict:
    """train_and_evaluate on the tiny config's splits at its best point for ``n_iter``."""
    config = search.load_config(tiny_config(tmp_path))
    splits = search.load_splits(config)
    arguments = search.model_arguments(config, {**config.best, "n_iter": n_iter})
    return search.train_and_evaluate(
        arguments,
        splits,
        config.protocol,
        seed=0,
        device="cpu",
        verbose=verbose,
        early_stopping=early_stopping,
    )


def test_verbose_early_stopping_prints_each_evaluation(tmp_path, capsys):
    """A verbose run prints every validation value the early stopping saw (a long run
    shows where it stands), the same values it records in valid_history."""
    result = _train_tiny(tmp_path, 4, dict(every=2, patience=5), verbose=True)
    printed = re.findall(
        r"epoch (\d+): valid mrr ([0-9.]+) \(best ([0-9.]+)", capsys.readouterr().out
    )
    assert [int(epoch) for epoch, _, _ in printed] == [2, 4]
    history = result["valid_history"]
    assert [float(value) for _, value, _ in printed] == pytest.approx(
        [value for _, value in history], abs=5e-5
    )
    best = max(value for _, value in history)
    assert float(printed[-1][2]) == pytest.approx(best, abs=5e-5)


def test_validation_evaluations_are_timed_apart_from_training(tmp_path, monkeypatch):
    """`eval_seconds` is the time fit spent in validation evaluations: at least what each
    of them took, measured around the evaluation function itself, and none without them."""
    from mlstm4reco import evaluation

    score, durations = evaluation.evaluate, []

    def slow_score(*args, **kwargs):
        start = time.perf_counter()
        time.sleep(0.2)
        result = score(*args, **kwargs)
        durations.append(time.perf_counter() - start)
        return result

    monkeypatch.setattr(evaluation, "evaluate", slow_score)
    result = _train_tiny(tmp_path, 3, dict(every=1, patience=5))
    assert len(durations) == 3 + 2  # one a epoch, then the final valid and test MRR
    during_fit = sum(durations[:3])
    assert during_fit <= result["eval_seconds"] <= during_fit + 0.2
    assert result["eval_seconds"] < result["fit_seconds"]
    durations.clear()
    result = _train_tiny(tmp_path, 3, None)
    assert len(durations) == 2 and result["eval_seconds"] == 0.0


def test_model_arguments_are_checked_when_a_config_is_loaded(tmp_path):
    """A misspelt or bad argument in fixed, best or the space's names is a config error
    naming the file and the argument, not a failed record at every trial."""
    fixed = dict(loss="adaptive_hinge", representation="mlstm")
    cases = [
        (
            dict(fixed={**fixed, "n_iters": 3}),
            r"fixed and best: ImplicitSequenceModel takes no \['n_iters'\]",
        ),
        (dict(best=dict(learning_rate=1e-2, loss="hinj")), "fixed and best: unknown loss 'hinj'"),
        (
            dict(space={"representation_kwargs.dropuot": {"uniform": [0, 0.5]}}),
            r"a point of space .*representation 'mlstm' \(MLSTMNet\) takes no \['dropuot'\]",
        ),
        (
            dict(best={}, space={"loss": {"choice": ["hinj"]}}),
            "a point of space .*unknown loss 'hinj'",
        ),
        (dict(fixed={**fixed, "random_state": 3}), r"takes no \['random_state'\] here"),
    ]
    for number, (changes, message) in enumerate(cases):
        path = tiny_config(tmp_path / str(number), **changes)
        with pytest.raises(search.UserError, match=message) as error:
            search.load_config(path)
        assert str(path) in str(error.value)


def test_bad_bounds_are_a_config_error(tmp_path):
    with pytest.raises(
        search.UserError, match=r"space.n_iter: quniform needs low < high, got 3 and 3"
    ):
        search.load_config(tiny_config(tmp_path, n_iter=(3, 3, 1)))
