"""Records files: shared by processes without losing a record, validated when opened,
claims of dead processes dropped, what killed writers left cleaned up."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT
from test_experiments import tiny_config

from mlstm4reco import search
from mlstm4reco.study import runners
from mlstm4reco.study.records import RecordFile

HELPER = ROOT / "tests" / "concurrent_runs.py"


def trial(number, **changes):
    return {
        "number": number,
        "vals": {"learning_rate": -4.0},
        "arguments": {"n_iter": 1},
        "status": "ok",
        "seconds": 1.0,
        "valid_mrr": 0.1,
        "test_mrr": 0.2,
        **changes,
    }


def start(*args):
    return subprocess.Popen(
        [sys.executable, str(HELPER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process):
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output


def test_two_searches_on_one_folder_lose_nothing(tmp_path):
    """Two processes searching one folder (seeds 1 and 2, their trials overlapping in
    time) keep every trial either ran, with unique numbers, until the folder holds the
    budget; each proposes from the trials the other finished too."""
    config = tiny_config(tmp_path / "configs")
    together = tmp_path / "together"
    together.mkdir()
    out = tmp_path / "out"
    processes = [start("search", config, out, seed, together, 2) for seed in (1, 2)]
    for process in processes:
        finish(process)
    records = json.loads((out / "trials.json").read_text())["records"]
    assert sorted(r["number"] for r in records) == list(range(6))
    assert {r["seed"] for r in records} == {1, 2}  # both processes' trials are kept
    assert len({r["pid"] for r in records}) == 2
    assert "in_flight" not in json.loads((out / "trials.json").read_text())
    assert not list(out.glob(".trials.json.*.part"))


def test_two_reproductions_on_one_folder_keep_both(tmp_path):
    """`reproduce --models A` beside `reproduce --models B` on one folder: runs.json
    holds the runs of both."""
    configs = [tiny_config(tmp_path / "configs", model=model) for model in ("mlstm", "lstm")]
    together = tmp_path / "together"
    together.mkdir()
    out = tmp_path / "out"
    processes = [
        start("reproduce", path, out, name, together, 2)
        for name, path in zip("ab", configs, strict=True)
    ]
    for process in processes:
        finish(process)
    records = json.loads((out / "runs.json").read_text())["records"]
    assert sorted((r["model"], r["seed"]) for r in records) == [
        (m, s) for m in ("lstm", "mlstm") for s in range(3)
    ]


def test_two_reproductions_of_one_model_share_the_runs(tmp_path):
    """Two processes reproducing the same model claim runs, so that no (model, seed) is
    trained twice."""
    config = tiny_config(tmp_path / "configs")
    together = tmp_path / "together"
    together.mkdir()
    out = tmp_path / "out"
    processes = [start("reproduce", config, out, name, together, 2) for name in "ab"]
    for process in processes:
        finish(process)
    records = json.loads((out / "runs.json").read_text())["records"]
    assert sorted(r["seed"] for r in records) == [0, 1, 2]


def test_claims_of_dead_processes_are_dropped(tmp_path):
    path = tmp_path / "trials.json"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    store = RecordFile(path, kind="trials")
    with store.locked():
        mine = store.claim({"number": 0})
    data = json.loads(path.read_text())
    data["in_flight"].append({**mine, "key": {"number": 1}, "pid": int(dead.stdout)})
    path.write_text(json.dumps(data))
    again = RecordFile(path, kind="trials")
    assert [c["key"] for c in again.in_flight] == [{"number": 0}]  # the live one only
    assert again.next_number() == 1
    again.append(trial(0), release=mine)
    assert RecordFile(path, kind="trials").in_flight == []


def test_numbers_after_an_interrupted_search_are_not_reused(tmp_path):
    """A search resumed from records numbered 0, 1, 3 (trial 2 lost in flight, as an
    interrupted Ray search leaves them) goes on with number 4, and proposes a point
    unlike trial 3's."""
    config = search.load_config(tiny_config(tmp_path / "configs"))
    out = tmp_path / "out"
    out.mkdir()

    def by_rate(arguments, **kwargs):
        return dict(
            valid_mrr=arguments["learning_rate"],
            test_mrr=0.0,
            final_loss=1.0,
            fit_seconds=0.0,
            device="cpu",
        )

    first = search.run_search(config, 4, tmp_path / "whole", progress=False, train=by_rate)
    kept = [first[0], first[1], {**first[3], "number": 3}]
    (out / "trials.json").write_text(json.dumps({"records": kept}))
    records = search.run_search(config, 4, out, progress=False, train=by_rate)
    assert [r["number"] for r in records] == [0, 1, 3, 4]
    assert records[3]["vals"] != records[2]["vals"]


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"records": []}))
    left = tmp_path / ".runs.json.abcd1234.part"
    left.write_text("")
    other = tmp_path / ".table.md.abcd1234.part"  # not this file's: left alone
    other.write_text("")
    RecordFile(path, kind="runs")
    assert not left.exists() and other.exists()


@pytest.mark.parametrize(
    "content,message",
    [
        ("[]", r"not a results file: expected a mapping with a list 'records', got list"),
        (
            '{"records": 5}',
            r"not a results file: expected a mapping with a list 'records', got keys \['records'\]",
        ),
        ('{"records": [5]}', r"record 0: expected a mapping, got int 5"),
        (
            '{"records": [{"vals": {}, "arguments": {}, "status": "ok", "seconds": 1}]}',
            r"record 0: no field 'number'",
        ),
        (
            json.dumps({"records": [trial(0, vals=None)]}),
            r"record 0 \(number 0\): field 'vals' must be a mapping",
        ),
        (json.dumps({"records": [trial(0, status="done")]}), r"field 'status' must be one of"),
        (
            json.dumps({"records": [trial(0), trial(1, valid_mrr="0.3")]}),
            r"record 1 \(number 1\): field 'valid_mrr' must be a finite number, got '0.3'",
        ),
        (
            json.dumps({"records": [{k: v for k, v in trial(0).items() if k != "valid_mrr"}]}),
            r"record 0 \(number 0\): no field 'valid_mrr'",
        ),
        ('{"records": [], "in_flight": 3}', r"'in_flight' must be a list of mappings"),
        ("{not json", r"unreadable results file"),
        (b"\xff\xfe".decode("latin-1"), r"unreadable results file"),
    ],
)
def test_records_of_the_wrong_shape_are_refused_when_opened(tmp_path, content, message):
    path = tmp_path / "trials.json"
    path.write_text(content, encoding="latin-1")
    before = path.read_bytes()
    with pytest.raises(search.UserError, match=str(path).replace(".", r"\.") + ": .*" + message):
        RecordFile(path, kind="trials")
    assert path.read_bytes() == before


def test_a_bad_records_file_stops_a_search_before_any_training(tmp_path, capsys):
    config = tiny_config(tmp_path / "configs")
    out = tmp_path / "out" / "synthetic_mlstm"
    out.mkdir(parents=True)
    (out / "trials.json").write_text(json.dumps({"records": [trial(0, valid_mrr="0.3")]}))
    sys.path.insert(0, str(ROOT / "experiments"))
    import run

    def no_training(*args, **kwargs):
        raise AssertionError("trained despite a bad records file")

    original, runners.load_splits = runners.load_splits, no_training
    try:
        code = run.main(
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
                "--quiet",
            ]
        )
    finally:
        runners.load_splits = original
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert "record 0 (number 0): field 'valid_mrr' must be a finite number, got '0.3'" in error


def test_runs_and_curve_records_are_checked_too(tmp_path):
    runs = tmp_path / "runs.json"
    runs.write_text(
        json.dumps(
            {
                "records": [
                    {
                        "model": "lstm",
                        "dataset": "ml1m",
                        "seed": "0",
                        "arguments": {},
                        "status": "ok",
                        "seconds": 1.0,
                    }
                ]
            }
        )
    )
    with pytest.raises(
        search.UserError, match="record 0: field 'seed' must be an integer, got '0'"
    ):
        RecordFile(runs, kind="runs")
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"records": [{"epoch": 1, "valid_mrr": None, "seconds": 1.0}]}))
    with pytest.raises(
        search.UserError, match="record 0: field 'valid_mrr' must be a number, got None"
    ):
        RecordFile(curve, kind="curve")
