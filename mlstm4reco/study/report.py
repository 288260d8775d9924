"""Tables, paired tests and plots from the records of searches and reproductions; the
learning curves' are in :mod:`mlstm4reco.study.curves`."""

from __future__ import annotations

import csv
import io
import pathlib
from collections.abc import Sequence

import numpy as np
from scipy import stats

from mlstm4reco import evaluation
from mlstm4reco.files import describe_os_error, write_together
from mlstm4reco.study.errors import UserError
from mlstm4reco.study.records import metric_field, objective


def _objective(records: list[dict]) -> str:
    """The metric the records' search or runs optimised (MRR for records from before the
    choice)."""
    return objective(records[0]) if records else "mrr"


def label(metric: str) -> str:
    """A metric's name as reports print it: MRR, HR@10, NDCG@10, MRR@20."""
    base, at, k = metric.partition("@")
    return {"mrr": "MRR", "hit_rate": "HR", "ndcg": "NDCG"}.get(base, base) + at + k


def recorded_metrics(records: list[dict]) -> list[str]:
    """The metrics the records hold (``valid_NAME`` fields of a known metric), the
    objective first."""
    names = [_objective(records)]
    for record in records:
        for key in record:
            name = key[len("valid_") :] if key.startswith("valid_") else None
            if name and name not in names and _is_metric(name):
                names.append(name)
    return names


def protocol_line(records: list[dict]) -> str:
    """How the records were measured, as a report's line: the split protocol with its
    counts, and whether the input's items were excluded from the ranking; empty for
    records from before they said so."""
    record = next((r for r in records if "protocol" in r), None)
    if record is None:
        return ""
    protocol, notes = record["protocol"], record.get("split_notes") or {}
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in notes.items() if k != "protocol")
    exclude = protocol.get("exclude_preceding")
    return (
        f"Protocol: {protocol.get('split', 'user')} split{f' ({counts})' if counts else ''}; "
        f"every item ranked, the input's items {'excluded' if exclude else 'included'} "
        f"(exclude_preceding: {str(exclude).lower()}).\n\n"
    )


def _is_metric(name: str) -> bool:
    try:
        evaluation.parse_metric(name)
    except ValueError:
        return False
    return True


def _write_all(contents: dict[pathlib.Path, str | bytes]) -> None:
    """A report's files, all replaced or none (a full disk leaves no figure older than its
    table); a write failure becomes one line naming the folder and the reason."""
    try:
        write_together(contents)
    except OSError as error:
        folder = pathlib.Path(next(iter(contents))).parent
        names = ", ".join(pathlib.Path(path).name for path in contents)
        raise UserError(
            f"{folder}: cannot write the report ({names}): {describe_os_error(error)}; "
            "the previous report files are unchanged"
        ) from error


def _pyplot():
    """matplotlib's pyplot on a file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return buffer.getvalue()


def _ok(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "ok"]


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "n/a"
    std = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.4f} ± {std:.4f}"


def _epoch_seconds(runs: list[dict]) -> float:
    """Median over runs of the training seconds per epoch: ``fit`` less the validation
    evaluations during it (records from before those were timed include them). A median,
    so that one run's one-off cost (a GPU kernel's compilation in the first run) does not
    move it."""
    return float(
        np.median(
            [
                (r["fit_seconds"] - r.get("eval_seconds", 0.0))
                / r.get("epochs", r["arguments"]["n_iter"])
                for r in runs
            ]
        )
    )


def _to_best(runs: list[dict]) -> tuple[str, str]:
    """Median epochs to the best validation score (early stopping's ``best_epoch``) and
    median training seconds to it, over the runs that recorded one; 'n/a' without."""
    stopped = [r for r in runs if r.get("best_epoch")]
    if not stopped:
        return "n/a", "n/a"
    epochs = np.median([r["best_epoch"] for r in stopped])
    seconds = np.median([r["best_epoch"] * _epoch_seconds([r]) for r in stopped])
    return f"{epochs:g}", f"{seconds:.0f}"


def reproduction_rows(records: list[dict], baseline: str = "lstm") -> list[dict]:
    """One row per model: mean and std over seeds of each recorded metric on valid and test
    (the objective, MRR by default, first and beside the study's where a config has
    published figures), the median seconds per run (all of it) and per epoch (training
    only, see :func:`_epoch_seconds`), the epoch time relative to ``baseline``'s, the
    median epochs and training seconds to the best validation score (what a model that
    needs many epochs costs), and for a tuned reproduction the trials each search had."""
    metrics = recorded_metrics(records)
    valid, test = metric_field("valid", metrics[0]), metric_field("test", metrics[0])
    base_ok = _ok([r for r in records if r["model"] == baseline])
    base_epoch = _epoch_seconds(base_ok) if base_ok else None
    published_any = any(r.get("published") for r in records)
    tuned_any = any(r.get("tuned") for r in records)
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        runs = [r for r in records if r["model"] == model]
        ok = _ok(runs)
        published = runs[0].get("published") or {}
        epochs_to_best, seconds_to_best = _to_best(ok)
        rows.append(
            {
                "dataset": runs[0]["dataset"],
                "model": model,
                "seeds": len(ok),
                "failed": len(runs) - len(ok),
                **({"trials": (runs[0].get("tuned") or {}).get("trials", "")} if tuned_any else {}),
                valid: _mean_std([r[valid] for r in ok]),
                test: _mean_std([r[test] for r in ok]),
                **(
                    {
                        f"study_{valid}": published.get(valid, ""),
                        f"study_{test}": published.get(test, ""),
                    }
                    if published_any
                    else {}
                ),
                **{
                    metric_field(split, name): _mean_std([r[metric_field(split, name)] for r in ok])
                    for name in metrics[1:]
                    for split in ("valid", "test")
                },
                "seconds_per_run": f"{np.median([r['seconds'] for r in ok]):.0f}" if ok else "n/a",
                "seconds_per_epoch": f"{_epoch_seconds(ok):.2f}" if ok else "n/a",
                f"epoch_vs_{baseline}": f"{_epoch_seconds(ok) / base_epoch:.2f}x"
                if ok and base_epoch
                else "n/a",
                "epochs_to_best": epochs_to_best,
                "seconds_to_best": seconds_to_best,
            }
        )
    return rows


def comparisons(
    models: list[str], baseline: str = "lstm", pairs: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The (model, against) pairs a report tests: every model against ``baseline`` (when
    it is among ``models``), then ``pairs``, each pair once and in that order."""
    unknown = [m for pair in pairs for m in pair if m not in models]
    if unknown:
        raise ValueError(
            f"no runs of model {unknown[0]!r} to compare (models: {', '.join(models)})"
        )
    same = [pair for pair in pairs if pair[0] == pair[1]]
    if same:
        raise ValueError(f"cannot compare {same[0][0]!r} with itself")
    default = [(m, baseline) for m in models if m != baseline] if baseline in models else []
    return list(dict.fromkeys([*default, *pairs]))


def paired_test(records: list[dict], a: str, b: str, metric: str = "test_mrr") -> dict | None:
    """Paired t-test of model ``b`` against ``a`` over the seeds both finished."""
    by_seed = {m: {r["seed"]: r[metric] for r in _ok(records) if r["model"] == m} for m in (a, b)}
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    if len(seeds) < 2:
        return None
    x = np.array([by_seed[a][s] for s in seeds])
    y = np.array([by_seed[b][s] for s in seeds])
    difference = y - x
    t, p = stats.ttest_rel(y, x)
    half_width = stats.t.ppf(0.975, len(seeds) - 1) * difference.std(ddof=1) / np.sqrt(len(seeds))
    return dict(
        metric=metric,
        a=a,
        b=b,
        seeds=len(seeds),
        mean_difference=float(difference.mean()),
        ci95=(float(difference.mean() - half_width), float(difference.mean() + half_width)),
        t=float(t),
        p=float(p),
        b_wins=int((difference > 0).sum()),
    )


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def describe_test(test: dict) -> str:
    low, high = test["ci95"]
    return (
        f"- Paired t-test, {test['b']} vs {test['a']}, {test['metric']} over {test['seeds']} "
        "seeds: "
        f"mean difference {test['mean_difference']:+.4f} (95% CI {low:+.4f} to {high:+.4f}), "
        f"t = {test['t']:.2f}, p = {test['p']:.3f}; {test['b']} better on {test['b_wins']} of "
        f"{test['seeds']} seeds.\n"
    )


def paired_line(records: list[dict], a: str, b: str, metric: str) -> str:
    """:func:`paired_test` of ``b`` against ``a`` on ``metric``, as a line of a report."""
    test = paired_test(records, a, b, metric)
    if test is None:
        return f"- Paired test, {b} vs {a}, {metric}: needs both on at least two common seeds.\n"
    return describe_test(test)


def write_reproduction_report(
    records: list[dict], out_dir, baseline: str = "lstm", pairs: Sequence[tuple[str, str]] = ()
) -> dict[str, pathlib.Path]:
    """table.md (table and paired tests), table.csv and comparison.png in ``out_dir``.

    The paired tests are those of :func:`comparisons`: each model against ``baseline``,
    then each ``(model, against)`` of ``pairs``."""
    out_dir = pathlib.Path(out_dir)
    rows = reproduction_rows(records, baseline)
    tests = ""
    metrics = [
        metric_field(split, name)
        for name in recorded_metrics(records)
        for split in ("test", "valid")
    ]
    for model, against in comparisons([row["model"] for row in rows], baseline, pairs):
        for metric in metrics:
            tests += paired_line(records, against, model, metric)
    paths = {
        "markdown": out_dir / "table.md",
        "csv": out_dir / "table.csv",
        "plot": out_dir / "comparison.png",
    }
    times = (
        "Times are medians over seeds: seconds_per_run of the whole run (the model built, trained, "
        "evaluated), seconds_per_epoch of training alone where the records time the validation "
        "evaluations apart (`eval_seconds`), else with them.\n\n"
    )
    _write_all(
        {
            paths["markdown"]: protocol_line(records) + markdown_table(rows) + "\n" + times + tests,
            paths["csv"]: csv_text(rows),
            paths["plot"]: plot_comparison(records),
        }
    )
    return paths


def plot_comparison(records: list[dict]) -> bytes:
    """Bars of the mean valid/test objective (MRR by default) with std error bars; the
    study's numbers as marks."""
    name = _objective(records)
    valid, test = metric_field("valid", name), metric_field("test", name)
    models = list(dict.fromkeys(r["model"] for r in records))
    many = len(models) > 6  # then narrower bars and slanted names
    fig, ax = _pyplot().subplots(
        figsize=(1.8 + (0.9 if many else 1.6) * len(models), 4.2 if many else 3.6)
    )
    width = 0.38
    for offset, metric, color in ((-width / 2, valid, "#8da0cb"), (width / 2, test, "#fc8d62")):
        for i, model in enumerate(models):
            ok = [r for r in _ok(records) if r["model"] == model]
            values = np.array([r[metric] for r in ok], dtype=float)
            if len(values):
                std = values.std(ddof=1) if len(values) > 1 else 0.0
                ax.bar(
                    i + offset,
                    values.mean(),
                    width,
                    yerr=std,
                    capsize=4,
                    color=color,
                    label=metric.replace("_", " ") if i == 0 else None,
                )
            published = next((r.get("published") or {} for r in records if r["model"] == model), {})
            if metric in published:
                ax.plot(
                    i + offset,
                    published[metric],
                    "k_",
                    markersize=18,
                    mew=2,
                    label="study" if (i == 0 and metric == test) else None,
                )
    ax.set_xticks(
        range(len(models)), models, rotation=35 if many else 0, ha="right" if many else "center"
    )
    ax.set_ylabel(label(name))
    dataset = records[0]["dataset"] if records else ""
    ax.set_title(f"{dataset}: mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def write_search_report(records: list[dict], out_dir, title: str) -> dict[str, pathlib.Path]:
    """summary.md (best trial and all trials), trials.csv and valid_NAME.png (NAME the
    objective: valid_mrr.png by default)."""
    out_dir = pathlib.Path(out_dir)
    records = sorted(records, key=lambda r: r["number"])  # the Ray backend records by end time
    name = _objective(records)
    valid, test, shown = metric_field("valid", name), metric_field("test", name), label(name)
    others = recorded_metrics(records)[1:]
    rows = [
        {
            "number": r["number"],
            "status": r["status"],
            valid: f"{r[valid]:.4f}" if r["status"] in ("ok", "stopped") else "",
            test: f"{r[test]:.4f}" if r["status"] == "ok" else "",
            **{
                metric_field(split, other): f"{r[metric_field(split, other)]:.4f}"
                if r["status"] == "ok"
                else ""
                for other in others
                for split in ("valid", "test")
            },
            "seconds": f"{r['seconds']:.0f}",
            **{
                k: (f"{v:.3g}" if isinstance(v, float) else v)
                for k, v in r["arguments"].items()
                if k not in ("loss", "representation")
            },
        }
        for r in records
    ]
    ok = _ok(records)
    best = max(ok, key=lambda r: r[valid]) if ok else None
    stopped = sum(r["status"] == "stopped" for r in records)
    head = (
        f"# Search: {title}\n\n{len(records)} trials, {len(records) - len(ok) - stopped} failed"
        + (f", {stopped} stopped early by ASHA (their {shown}: when stopped)" if stopped else "")
        + ".\n\n"
    )
    if best is not None:
        head += (
            f"Best by validation {shown}: trial {best['number']}, valid {best[valid]:.4f}, "
            f"test {best[test]:.4f}, arguments {best['arguments']}.\n\n"
        )
    paths = {
        "markdown": out_dir / "summary.md",
        "csv": out_dir / "trials.csv",
        "plot": out_dir / f"{valid}.png",
    }
    _write_all(
        {
            paths["markdown"]: head + protocol_line(records) + markdown_table(rows),
            paths["csv"]: csv_text(rows),
            paths["plot"]: plot_search(records, title),
        }
    )
    return paths


def plot_search(records: list[dict], title: str) -> bytes:
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    records = sorted(records, key=lambda r: r["number"])
    name = _objective(records)
    valid = metric_field("valid", name)
    ok = _ok(records)
    numbers = [r["number"] for r in ok]
    values = [r[valid] for r in ok]
    ax.plot(numbers, values, "o", color="#66c2a5", label="trial")
    if values:
        ax.step(
            numbers, np.maximum.accumulate(values), where="post", color="k", label="best so far"
        )
    stopped = [r for r in records if r["status"] == "stopped"]
    if stopped:
        ax.plot(
            [r["number"] for r in stopped],
            [r[valid] for r in stopped],
            ".",
            color="#999999",
            label="stopped early",
        )
    failed = [r["number"] for r in records if r["status"] == "failed"]
    if failed:
        ax.plot(failed, [min(values, default=0)] * len(failed), "rx", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {label(name)}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
