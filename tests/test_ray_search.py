"""The Ray backend of the search: a local Ray on loopback with 2 CPUs, synthetic data.
Skipped when ``ray[tune]`` is not installed (CI installs it)."""

import os
import pathlib
import sys

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.tune")

from conftest import ROOT  # noqa: E402
from test_experiments import read_records, run, tiny_config  # noqa: E402

from mlstm4reco import ray_search, search  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (run_ray_search leaves a Ray it did not start running)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fakes below
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 << 20,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()


def by_learning_rate(arguments, **kwargs):
    """A fast stand-in for training: the validation MRR is the learning rate."""
    return dict(
        valid_mrr=arguments["learning_rate"],
        test_mrr=0.0,
        final_loss=1.0,
        fit_seconds=0.0,
        device="cpu",
    )


def test_two_workers_give_the_local_backends_records_and_tables(tmp_path):
    config = tiny_config(tmp_path / "configs")
    common = [
        "--dataset",
        "synthetic",
        "--model",
        "mlstm",
        "--trials",
        "4",
        "--config",
        str(config),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert run.main(common + ["--out", str(tmp_path / "local")]) == 0
    assert (
        run.main(common + ["--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2"])
        == 0
    )
    local = read_records(tmp_path / "local" / "synthetic_mlstm" / "trials.json")
    remote = read_records(tmp_path / "ray" / "synthetic_mlstm" / "trials.json")
    assert sorted(r["number"] for r in remote) == [0, 1, 2, 3]
    assert len({r["worker"] for r in remote}) >= 1
    for record in remote:
        assert record["status"] == "ok" and record["backend"] == "ray"
        assert 0 < record["valid_mrr"] <= 1 and 0 < record["test_mrr"] <= 1
        assert set(local[0]) <= set(record)  # every field of a local record, and more
    # the first two points do not depend on finished trials: both backends train them alike
    first = {r["number"]: r for r in remote}
    for number in (0, 1):
        assert first[number]["vals"] == local[number]["vals"]
        assert first[number]["valid_mrr"] == pytest.approx(local[number]["valid_mrr"], rel=1e-4)
    for name in ("summary.md", "trials.csv", "valid_mrr.png"):
        assert (tmp_path / "ray" / "synthetic_mlstm" / name).is_file()
    local_csv = (tmp_path / "local" / "synthetic_mlstm" / "trials.csv").read_text().splitlines()
    remote_csv = (tmp_path / "ray" / "synthetic_mlstm" / "trials.csv").read_text().splitlines()
    assert remote_csv[0] == local_csv[0] and len(remote_csv) == 5
    best = max(remote, key=lambda r: r["valid_mrr"])
    summary = (tmp_path / "ray" / "synthetic_mlstm" / "summary.md").read_text()
    assert (
        f"Best by validation MRR: trial {best['number']}, valid {best['valid_mrr']:.4f}" in summary
    )


def test_one_worker_proposes_the_local_points_and_resumes(tmp_path):
    config = search.load_config(tiny_config(tmp_path))
    local = search.run_search(config, 5, tmp_path / "local", progress=False, train=by_learning_rate)
    ray_search.run_ray_search(
        config, 2, tmp_path / "ray", workers=1, progress=False, train=by_learning_rate
    )
    resumed = ray_search.run_ray_search(
        config, 5, tmp_path / "ray", workers=1, progress=False, train=by_learning_rate
    )
    assert [r["vals"] for r in resumed] == [r["vals"] for r in local]
    assert [r["valid_mrr"] for r in resumed] == [r["valid_mrr"] for r in local]


def test_failed_trials_and_dead_workers_are_recorded_and_the_search_goes_on(tmp_path):
    config = search.load_config(tiny_config(tmp_path))
    calls = tmp_path / "calls"
    calls.mkdir()

    def flaky(arguments, **kwargs):
        call = len(list(calls.iterdir()))
        (calls / str(call)).touch()
        if call == 1:
            raise RuntimeError("out of memory")
        if call == 2:
            os._exit(1)  # the worker process dies
        return by_learning_rate(arguments)

    records = ray_search.run_ray_search(
        config, 5, tmp_path / "out", workers=1, progress=False, train=flaky
    )
    assert [r["status"] for r in sorted(records, key=lambda r: r["number"])] == [
        "ok",
        "failed",
        "failed",
        "ok",
        "ok",
    ]
    assert "RuntimeError: out of memory" in records[1]["error"]
    assert "Ray worker failed" in records[2]["error"]


def test_two_workers_stay_two_after_one_dies(tmp_path):
    """After a worker process dies (while another trial runs), the search goes on two
    trials at a time: some later trials overlap in time. With reused workers and trials
    this short, Tune went on with the one surviving worker, one trial after another."""
    import itertools
    import json
    import time

    config = search.load_config(tiny_config(tmp_path))
    calls = tmp_path / "calls"
    calls.mkdir()

    def dies_once(arguments, **kwargs):
        call = len(list(calls.glob("*.start")))
        (calls / f"{call}.start").write_text(str(time.time()))
        if call == 1:
            time.sleep(1)
            os._exit(1)
        time.sleep(3)
        (calls / f"{call}.end").write_text(str(time.time()))
        return by_learning_rate(arguments)

    records = ray_search.run_ray_search(
        config, 8, tmp_path / "out", workers=2, progress=False, train=dies_once
    )
    assert sorted(r["status"] for r in records).count("failed") == 1 and len(records) == 8
    spans = [
        (float((calls / f"{n}.start").read_text()), float((calls / f"{n}.end").read_text()))
        for n in range(2, 8)
    ]
    overlapping = [
        (a, b) for a, b in itertools.combinations(spans, 2) if a[0] < b[1] and b[0] < a[1]
    ]
    assert overlapping, json.dumps(spans)
    assert [r["number"] for r in sorted(records, key=lambda r: r["number"])] == list(range(8))


def test_asha_stops_poor_trials_early(tmp_path):
    config = search.load_config(tiny_config(tmp_path, n_iter=(8, 9, 1)))

    def reporting(arguments, monitor, **kwargs):
        for epoch in range(1, arguments["n_iter"] + 1):
            monitor["listener"](epoch, arguments["learning_rate"])
        return by_learning_rate(arguments)

    asha = dict(every=1, grace_period=1, reduction_factor=2)
    records = ray_search.run_ray_search(
        config, 8, tmp_path / "out", workers=1, progress=False, train=reporting, asha=asha
    )
    stopped = [r for r in records if r["status"] == "stopped"]
    finished = [r for r in records if r["status"] == "ok"]
    assert stopped and finished and len(records) == 8
    assert max(r["valid_mrr"] for r in stopped) < max(r["valid_mrr"] for r in finished)
    for record in stopped:
        assert record["test_mrr"] is None and 1 <= record["epochs"] < record["arguments"]["n_iter"]
        assert record["valid_mrr"] == record["arguments"]["learning_rate"]
    from mlstm4reco.report import write_search_report

    summary = write_search_report(records, tmp_path / "out", "asha")["markdown"].read_text()
    assert f"{len(stopped)} stopped early by ASHA" in summary


def test_asha_follows_the_configs_objective(tmp_path):
    """With objective ndcg@10, trials report validation NDCG@10 to ASHA, a stopped trial is
    recorded with the best NDCG@10 it reached, and TPE learns from that field."""
    from mlstm4reco.study.adjust import with_objective
    from mlstm4reco.study.tpe import _trials_from_records

    config = with_objective(search.load_config(tiny_config(tmp_path, n_iter=(8, 9, 1))), "ndcg@10")

    def reporting(arguments, monitor, metrics, **kwargs):
        assert metrics[0] == "ndcg@10"
        for epoch in range(1, arguments["n_iter"] + 1):
            monitor["listener"](epoch, arguments["learning_rate"])
        scores = {f"{split}_{name}": 0.0 for split in ("valid", "test") for name in metrics}
        return {
            **scores,
            "valid_ndcg@10": arguments["learning_rate"],
            "final_loss": 1.0,
            "fit_seconds": 0.0,
            "device": "cpu",
        }

    asha = dict(every=1, grace_period=1, reduction_factor=2)
    records = ray_search.run_ray_search(
        config, 6, tmp_path / "out", workers=1, progress=False, train=reporting, asha=asha
    )
    stopped = [r for r in records if r["status"] == "stopped"]
    assert stopped and len(records) == 6
    for record in stopped:
        assert record["objective"] == "ndcg@10" and record["test_ndcg@10"] is None
        assert record["valid_ndcg@10"] == record["arguments"]["learning_rate"]
    ordered = sorted(records, key=lambda r: r["number"])
    assert _trials_from_records(ordered).losses() == [-r["valid_ndcg@10"] for r in ordered]


def test_max_epochs_reads_fixed_or_the_top_of_the_space(tmp_path):
    config = search.load_config(tiny_config(tmp_path, n_iter=(3, 9, 1)))
    assert ray_search.max_epochs(config) == 9
    config.fixed["n_iter"] = 4
    assert ray_search.max_epochs(config) == 4


def test_bad_worker_counts_are_user_errors(tmp_path):
    config = search.load_config(tiny_config(tmp_path))
    with pytest.raises(search.UserError, match="workers >= 1"):
        ray_search.run_ray_search(config, 2, tmp_path / "out", workers=0)
    assert not (tmp_path / "out" / "trials.json").exists()


def test_asha_needs_the_ray_backend(tmp_path, capsys):
    config = tiny_config(tmp_path / "configs")
    assert (
        run.main(
            [
                "--dataset",
                "synthetic",
                "--model",
                "mlstm",
                "--config",
                str(config),
                "--out",
                str(tmp_path / "out"),
                "--asha",
                "--quiet",
            ]
        )
        == 2
    )
    assert "--asha and --ray-address need --backend ray" in capsys.readouterr().err


def test_the_core_library_imports_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None; import mlstm4reco, mlstm4reco.search, "
        "mlstm4reco.ray_search as r\n"
        "try:\n r._import_ray()\nexcept Exception as e: print(type(e).__name__, e)"
    )
    import subprocess

    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=pathlib.Path(ROOT),
    ).stdout
    assert output.startswith("UserError") and 'pip install -e ".[ray]"' in output


def test_a_killed_ray_search_resumes_without_losing_or_reusing_trials(tmp_path):
    import signal
    import subprocess
    import time

    from test_experiments import RUN

    config = tiny_config(tmp_path / "configs", n_iter=(3, 4, 1))
    command = RUN + [
        "--dataset",
        "synthetic",
        "--model",
        "mlstm",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--quiet",
        "--backend",
        "ray",
        "--workers",
        "2",
    ]
    trials_file = tmp_path / "out" / "synthetic_mlstm" / "trials.json"
    # its own session, so that the kill takes the driver's local Ray with it
    process = subprocess.Popen(
        command + ["--trials", "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and not (
        trials_file.exists() and len(read_records(trials_file)) >= 3
    ):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survived = read_records(trials_file)
    target = len(survived) + 2
    subprocess.run(
        command + ["--trials", str(target)], check=True, capture_output=True, timeout=300
    )
    after = read_records(trials_file)
    assert len(after) == target and after[: len(survived)] == survived
    numbers = [r["number"] for r in after]
    assert len(set(numbers)) == target  # a number lost in flight is not given twice
    assert min(numbers[len(survived) :]) > max(r["number"] for r in survived)
    assert all(r["status"] == "ok" for r in after)
