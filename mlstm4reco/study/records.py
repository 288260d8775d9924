"""Records of trials and runs: one JSON file per search, reproduction or curve, shared
safely by every process that works on it.

A records file holds ``{"records": [...], "in_flight": [...]}``. Two processes may share
a results folder (one model per terminal is the natural way to use two cores), so every
change is a read-modify-write under an exclusive lock (``NAME.lock`` beside the file):
take the lock, re-read the file, change it, write it atomically, release. Nothing one
process wrote is lost to another's write.

``in_flight`` lists the work that processes have claimed and not yet recorded (a trial's
number, a (model, seed) run, a curve), each with the claiming process's host, pid and
start time. Claims make trial numbers unique across processes, keep two processes from
training the same run, and count against a search's budget. A claim whose process has
died (on this host) is dropped when the file is next read, so a killed run blocks nothing.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import time
from contextlib import contextmanager

import filelock
import numpy as np

from mlstm4reco.files import atomic_path, check_writable, describe_os_error, leftover_parts
from mlstm4reco.study.errors import UserError

__all__ = ["RecordFile", "ensure_results_folder", "STATUSES", "metric_field", "objective"]

STATUSES = ("ok", "failed", "stopped")
LOCK_TIMEOUT = 120.0
"""Seconds to wait for another process's lock (held for one read and write of the file)."""


def ensure_results_folder(folder) -> pathlib.Path:
    """``folder``, created and checked writable (a probe file written and removed) before
    any data is loaded or any model trained; else a UserError that says why."""
    try:
        return check_writable(folder)
    except OSError as error:
        raise UserError(
            f"{folder}: cannot write to the results folder ({describe_os_error(error)})"
        ) from error


# ---------------------------------------------------------------------------- metrics


def metric_field(split: str, metric: str) -> str:
    """The record field of ``metric`` on ``split`` ('valid' or 'test'): ``valid_mrr``,
    ``test_ndcg@10``. Records hold each measured metric as one such field, the shape every
    records file has had (``valid_mrr``, ``test_mrr``), so old files read as new ones."""
    return f"{split}_{metric}"


def objective(record: dict) -> str:
    """The metric the record's search or run optimised: its ``objective`` field, or
    ``mrr`` for records written before there was a choice."""
    return record.get("objective", "mrr")


# ---------------------------------------------------------------------------- validation


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_CHECKS = {
    "an integer": _is_int,
    "a number": _is_number,
    "a finite number": lambda v: _is_number(v) and math.isfinite(v),
    "a string": lambda v: isinstance(v, str),
    "a mapping": lambda v: isinstance(v, dict),
    f"one of {STATUSES}": lambda v: v in STATUSES,
}

_FIELDS = {
    # kind: (fields of every record, fields of an 'ok' record, fields of a 'stopped' one);
    # VALID and TEST stand for the fields of the record's objective (metric_field('valid', ...))
    "trials": (
        {
            "number": "an integer",
            "vals": "a mapping",
            "arguments": "a mapping",
            "status": f"one of {STATUSES}",
            "seconds": "a number",
        },
        {"VALID": "a finite number", "TEST": "a finite number"},
        {"VALID": "a finite number"},
    ),
    "runs": (
        {
            "model": "a string",
            "dataset": "a string",
            "seed": "an integer",
            "arguments": "a mapping",
            "status": f"one of {STATUSES}",
            "seconds": "a number",
        },
        {"VALID": "a finite number", "TEST": "a finite number", "fit_seconds": "a number"},
        {},
    ),
    "curve_point": ({"epoch": "an integer", "VALID": "a number", "seconds": "a number"}, {}, {}),
    "curve_final": (
        {"status": f"one of {STATUSES}"},
        {"VALID": "a finite number", "TEST": "a finite number"},
        {},
    ),
}


def check_record(record, kind: str, where: str) -> None:
    """Refuse a record of the wrong shape with one message naming ``where`` (the file and
    the record), the field and its value."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a mapping, got {type(record).__name__} {record!r:.80}")
    if kind == "curve":
        kind = "curve_final" if record.get("final") else "curve_point"
    always, ok, stopped = _FIELDS[kind]
    fields = dict(always)
    status = record.get("status")
    fields.update(ok if status == "ok" else stopped if status == "stopped" else {})
    if not isinstance(record.get("objective", ""), str):
        raise UserError(
            f"{where}: field 'objective' must be a metric's name, got {record['objective']!r:.80}"
        )
    named = {
        "VALID": metric_field("valid", objective(record)),
        "TEST": metric_field("test", objective(record)),
    }
    fields = {named.get(name, name): what for name, what in fields.items()}
    for name, what in fields.items():
        if name not in record:
            raise UserError(f"{where}: no field {name!r} (expected {what})")
        if not _CHECKS[what](record[name]):
            raise UserError(f"{where}: field {name!r} must be {what}, got {record[name]!r:.80}")


# ---------------------------------------------------------------------------- processes


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), which tells a
    live process from a later one given the same pid; None where it cannot be read."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has finished


def _alive(claim: dict) -> bool:
    """Whether the process that made ``claim`` still runs (assumed so on another host)."""
    if claim.get("host") != socket.gethostname():
        return True
    pid = claim.get("pid")
    if not _is_int(pid) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    start = _process_start(pid)
    if pathlib.Path("/proc/self/stat").exists():
        return start is not None and start == claim.get("process_start", start)
    return True


def _me() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": _process_start(os.getpid()),
    }


# ---------------------------------------------------------------------------- the file


class RecordFile:
    """A JSON file of records (trials, runs or a curve's points), validated when read and
    changed only under its lock.

    Parameters
    ----------
    path: path of the file (it need not exist yet).
    kind: 'trials', 'runs' or 'curve': the shape every record must have; None checks
        only that the file holds a list of records.

    Attributes
    ----------
    records: the records as last read (every change re-reads first).
    in_flight: the live claims as last read.
    """

    def __init__(self, path, kind: str | None = None, timeout: float = LOCK_TIMEOUT) -> None:
        if kind is not None and kind not in ("trials", "runs", "curve"):
            raise ValueError(f"kind must be 'trials', 'runs', 'curve' or None, got {kind!r}")
        self.path = pathlib.Path(path)
        self.kind = kind
        self.records: list[dict] = []
        self.in_flight: list[dict] = []
        self._lock = filelock.FileLock(f"{self.path}.lock", timeout=timeout)
        self._depth = 0
        if leftover_parts(self.path) and os.access(self.path.parent, os.W_OK):
            with self.locked():  # which removes what killed writers left
                pass
        else:  # the writes are atomic, so a read needs no lock (nor a lock file beside it)
            self._read()

    def __getstate__(self) -> dict:  # Ray pickles its searcher, which holds the file
        state = dict(self.__dict__)
        state["_lock"] = self._lock.timeout
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = filelock.FileLock(f"{self.path}.lock", timeout=state["_lock"])
        self._depth = 0

    # -- reading

    def _read(self) -> None:
        if not self.path.exists():
            self.records, self.in_flight = [], []
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise UserError(f"{self.path}: unreadable results file ({error})") from error
        if not isinstance(data, dict) or not isinstance(data.get("records"), list):
            shape = type(data).__name__ if not isinstance(data, dict) else f"keys {sorted(data)}"
            raise UserError(
                f"{self.path}: not a results file: expected a mapping with a list "
                f"'records', got {shape}"
            )
        in_flight = data.get("in_flight", [])
        if not isinstance(in_flight, list) or not all(isinstance(c, dict) for c in in_flight):
            raise UserError(
                f"{self.path}: 'in_flight' must be a list of mappings, got {in_flight!r:.80}"
            )
        for index, record in enumerate(data["records"]):
            number = (
                f" (number {record['number']})"
                if isinstance(record, dict) and "number" in record
                else ""
            )
            if self.kind is not None:
                check_record(record, self.kind, f"{self.path}: record {index}{number}")
            elif not isinstance(record, dict):
                raise UserError(
                    f"{self.path}: record {index}: expected a mapping, got {record!r:.80}"
                )
        self.records = data["records"]
        self.in_flight = [c for c in in_flight if _alive(c)]

    # -- writing

    @contextmanager
    def locked(self):
        """Hold the file's lock, with the file re-read: changes made inside are
        :meth:`claim`, :meth:`release` and :meth:`append`."""
        if self._depth:
            yield self
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except filelock.Timeout as error:
            raise UserError(
                f"{self.path}: another process has held its lock for over "
                f"{self._lock.timeout:.0f} s (remove {self._lock.lock_file} if none runs)"
            ) from error
        except OSError as error:
            raise UserError(
                f"{self.path}: cannot lock the results file ({describe_os_error(error)})"
            ) from error
        self._depth += 1
        try:
            for part in leftover_parts(
                self.path
            ):  # every writer holds the lock: these are a killed one's
                part.unlink(missing_ok=True)
            self._read()
            yield self
        finally:
            self._depth -= 1
            self._lock.release()

    def _write(self) -> None:
        data = {"records": self.records}
        if self.in_flight:
            data["in_flight"] = self.in_flight
        text = json.dumps(data, indent=1, default=_jsonable)
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except OSError as error:
            raise UserError(
                f"{self.path}: cannot write the results file ({describe_os_error(error)}); "
                f"it still holds the {len(self.records) - 1} records before this one"
            ) from error

    def append(self, record: dict, release: dict | None = None) -> None:
        """Add ``record`` (checked against the file's kind) and drop the claim ``release``
        in the same write."""
        if self.kind is not None:
            check_record(
                json.loads(json.dumps(record, default=_jsonable)),
                self.kind,
                f"{self.path}: new record",
            )
        with self.locked():
            self.records.append(record)
            if release is not None:
                self._drop(release)
            self._write()

    def claim(self, key: dict) -> dict:
        """Claim the work ``key`` (e.g. ``{"number": 3}``) for this process; the claim is
        written at once. Call inside :meth:`locked` after checking :meth:`claimed`."""
        with self.locked():
            claim = {"key": key, **_me(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            self.in_flight.append(claim)
            self._write()
            return claim

    def release(self, claim: dict) -> None:
        """Drop ``claim`` (work given up without a record)."""
        with self.locked():
            if self._drop(claim):
                self._write()

    def _drop(self, claim: dict) -> bool:
        before = len(self.in_flight)
        self.in_flight = [
            c
            for c in self.in_flight
            if (c.get("key"), c.get("host"), c.get("pid"))
            != (claim["key"], claim["host"], claim["pid"])
        ]
        return len(self.in_flight) != before

    def claimed(self, key: dict) -> bool:
        """Whether a live process has claimed ``key``."""
        return any(c.get("key") == key for c in self.in_flight)

    def next_number(self) -> int:
        """One more than every trial number recorded or claimed."""
        numbers = [r["number"] for r in self.records if _is_int(r.get("number"))]
        numbers += [
            c["key"]["number"]
            for c in self.in_flight
            if isinstance(c.get("key"), dict) and _is_int(c["key"].get("number"))
        ]
        return max(numbers, default=-1) + 1


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
