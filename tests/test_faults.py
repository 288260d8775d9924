"""Faults a user meets: an unwritable or full results folder, bad data files, a parent
killed under its workers. Each is one line of run.py (exit 2) and loses nothing."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import pytest
from conftest import ROOT
from test_experiments import RUN, tiny_config

from mlstm4reco import files
from mlstm4reco.study import records, runners

sys.path.insert(0, str(ROOT / "experiments"))
import run  # noqa: E402


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert (
        error.startswith("run.py: error: ") and error.count("\n") == 1 and "Traceback" not in error
    ), error
    return error


def search_args(config, out, trials=1):
    return [
        "--dataset",
        "synthetic",
        "--model",
        "mlstm",
        "--trials",
        str(trials),
        "--config",
        str(config),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
    ]


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the results folder was checked")

    monkeypatch.setattr(runners, "load_splits", refuse)


def full_disk_for(name_part: str, monkeypatch):
    """Writes of files whose names hold ``name_part`` fail as on a full disk."""
    write_bytes, write_text = pathlib.Path.write_bytes, pathlib.Path.write_text

    def check(path):
        if name_part in path.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(
        pathlib.Path, "write_bytes", lambda p, *a, **k: (check(p), write_bytes(p, *a, **k))[1]
    )
    monkeypatch.setattr(
        pathlib.Path, "write_text", lambda p, *a, **k: (check(p), write_text(p, *a, **k))[1]
    )


def test_an_out_that_is_a_file_is_refused_before_any_data(tmp_path, capsys, no_data):
    (tmp_path / "file").write_text("")
    config = tiny_config(tmp_path / "configs")
    assert run.main(search_args(config, tmp_path / "file" / "results")) == 2
    assert "cannot write to the results folder" in one_line_error(capsys)
    assert (
        run.main(
            [
                "reproduce",
                "--dataset",
                "synthetic",
                "--models",
                "mlstm",
                "--config-dir",
                str(tmp_path / "configs"),
                "--out",
                str(tmp_path / "file"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "cannot write to the results folder" in one_line_error(capsys)


def test_a_full_out_is_refused_before_any_data(tmp_path, capsys, monkeypatch, no_data):
    config = tiny_config(tmp_path / "configs")
    full_disk_for(".write-probe", monkeypatch)
    assert run.main(search_args(config, tmp_path / "out")) == 2
    error = one_line_error(capsys)
    assert "synthetic_mlstm: cannot write to the results folder (No space left on device)" in error
    assert (
        run.main(
            [
                "curve",
                "--dataset",
                "synthetic",
                "--model",
                "mlstm",
                "--config",
                str(config),
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "cannot write to the results folder (No space left on device)" in one_line_error(capsys)


def test_a_records_file_that_cannot_be_written_later_is_one_line(tmp_path, capsys, monkeypatch):
    config = tiny_config(tmp_path / "configs")
    assert run.main(search_args(config, tmp_path / "out", trials=1)) == 0
    capsys.readouterr()
    trials = tmp_path / "out" / "synthetic_mlstm" / "trials.json"
    before = trials.read_bytes()
    full_disk_for(".trials.json.", monkeypatch)  # the records file's temporary files
    assert run.main(search_args(config, tmp_path / "out", trials=2)) == 2
    error = one_line_error(capsys)
    assert f"{trials}: cannot write the results file (No space left on device)" in error
    assert trials.read_bytes() == before
    assert not list(trials.parent.glob(".trials.json.*.part"))


def test_a_full_disk_leaves_the_whole_previous_report(tmp_path, capsys, monkeypatch):
    """The report's files are replaced together: when the figure cannot be written, the
    summary is not updated beside a stale figure."""
    config = tiny_config(tmp_path / "configs")
    assert run.main(search_args(config, tmp_path / "out", trials=1)) == 0
    out = tmp_path / "out" / "synthetic_mlstm"
    before = {
        name: (out / name).read_bytes() for name in ("summary.md", "trials.csv", "valid_mrr.png")
    }
    full_disk_for(".valid_mrr.png.", monkeypatch)
    assert run.main(search_args(config, tmp_path / "out", trials=2)) == 2
    error = one_line_error(capsys)
    assert (
        "cannot write the report (summary.md, trials.csv, valid_mrr.png): No space left on device"
        in error
    )
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (
        len(json.loads((out / "trials.json").read_text())["records"]) == 2
    )  # the trial itself is kept
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def test_write_together_replaces_all_or_none(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.png"
    files.write_together({a: "one", b: b"one"})
    full_disk_for(".b.png.", monkeypatch)
    with pytest.raises(OSError):
        files.write_together({a: "two", b: b"two"})
    assert (a.read_text(), b.read_bytes()) == ("one", b"one")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.png"]


@pytest.mark.parametrize(
    "lines,message",
    [
        (
            "196\t242\t3\t881250949\n196.0\t302\t3\t891717742\n",
            r"u.data, line 2: expected an integer user_id, got '196.0'",
        ),
        (
            "196\t242\t3\t881250949\n1\t12345678901234567890123\t3\t5\n",
            r"u.data, line 2: item_id 1234.* is over",
        ),
        ("196\t0\t3\t881250949\n", r"u.data, line 1: item_id 0, which pads sequences"),
    ],
)
def test_bad_data_files_are_one_line_naming_file_line_and_value(tmp_path, capsys, lines, message):
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "ml-100k.zip", "w") as archive:
        archive.writestr("ml-100k/u.data", lines)
    config = tiny_config(tmp_path / "configs", dataset="ml100k")
    code = run.main(
        [
            "--dataset",
            "ml100k",
            "--model",
            "mlstm",
            "--trials",
            "1",
            "--config",
            str(config),
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert code == 2
    import re

    assert re.search(message, one_line_error(capsys))


def test_a_folder_in_place_of_the_archive_is_one_line(tmp_path, capsys):
    (tmp_path / "data" / "ml-100k.zip").mkdir(parents=True)
    config = tiny_config(tmp_path / "configs", dataset="ml100k")
    code = run.main(
        [
            "--dataset",
            "ml100k",
            "--model",
            "mlstm",
            "--trials",
            "1",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert (
        code == 2
        and "ml-100k.zip: a folder, where the file ml-100k.zip was looked for"
        in one_line_error(capsys)
    )


def children(pid: int) -> list[int]:
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    return records._process_start(pid) is not None  # gone, or a zombie: finished


@pytest.mark.skipif(
    not pathlib.Path("/proc/self/stat").exists(), reason="reads processes from /proc"
)
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """`reproduce --workers 2` killed with SIGKILL: its workers (and multiprocessing's
    resource tracker) end too, instead of idling forever."""
    config = tiny_config(
        tmp_path / "configs",
        best=dict(learning_rate=1e-2, batch_size=64, embedding_dim=8, l2=1e-6, n_iter=500),
    )
    process = subprocess.Popen(
        RUN
        + [
            "reproduce",
            "--dataset",
            "synthetic",
            "--models",
            "mlstm",
            "--seeds",
            "2",
            "--workers",
            "2",
            "--threads",
            "1",
            "--config-dir",
            str(config.parent),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    runs = tmp_path / "out" / "synthetic_reproduce" / "runs.json"
    deadline = time.time() + 120
    while time.time() < deadline:  # both runs claimed: both workers have started
        assert process.poll() is None, process.stderr.read().decode()
        if (
            runs.exists()
            and len(json.loads(runs.read_text()).get("in_flight", [])) == 2
            and len(children(process.pid)) >= 3
        ):
            break
        time.sleep(0.2)
    time.sleep(2)  # the workers into their runs
    spawned = children(process.pid)
    assert len(spawned) >= 3  # two workers and the resource tracker
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(running(pid) for pid in spawned):
        time.sleep(0.2)
    left = [pid for pid in spawned if running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after their parent was killed: {left}"
    # the claims of the killed runs block nothing: they are dropped when the file is read
    assert records.RecordFile(runs, kind="runs").in_flight == []


def test_a_seed_numpy_refuses_is_one_line_before_any_data(tmp_path, capsys, no_data):
    config = tiny_config(tmp_path / "configs")
    assert run.main(search_args(config, tmp_path / "out") + ["--seed", "-1"]) == 2
    assert "seed must be an integer in [0, 2**32), got -1" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()
