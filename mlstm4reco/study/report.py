"""Tables, paired tests and plots from the records of searches and reproductions."""

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


def reproduction_rows(records: list[dict], baseline: str = "lstm") -> list[dict]:
    """One row per model: mean and std over seeds of each recorded metric on valid and test
    (the objective, MRR by default, first and beside the study's), the median seconds per
    run (all of it) and per epoch (training only, see :func:`_epoch_seconds`), and the
    epoch time relative to ``baseline``'s."""
    metrics = recorded_metrics(records)
    valid, test = metric_field("valid", metrics[0]), metric_field("test", metrics[0])
    base_ok = _ok([r for r in records if r["model"] == baseline])
    base_epoch = _epoch_seconds(base_ok) if base_ok else None
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        runs = [r for r in records if r["model"] == model]
        ok = _ok(runs)
        published = runs[0].get("published") or {}
        rows.append(
            {
                "dataset": runs[0]["dataset"],
                "model": model,
                "seeds": len(ok),
                "failed": len(runs) - len(ok),
                valid: _mean_std([r[valid] for r in ok]),
                test: _mean_std([r[test] for r in ok]),
                f"study_{valid}": published.get(valid, ""),
                f"study_{test}": published.get(test, ""),
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
            paths["markdown"]: markdown_table(rows) + "\n" + times + tests,
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
            paths["markdown"]: head + markdown_table(rows),
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


def _curve_points(records: list[dict]) -> list[dict]:
    return [r for r in records if not r.get("final")]


def write_curve_report(records: list[dict], out_dir, title: str) -> dict[str, pathlib.Path]:
    """curve.md (the final scores and the curve) and curve.png from a curve's records."""
    out_dir = pathlib.Path(out_dir)
    points = _curve_points(records)
    final = next((r for r in records if r.get("final")), None)
    name = _objective(records)
    valid, test, shown = metric_field("valid", name), metric_field("test", name), label(name)
    head = f"# Learning curve: {title}\n\n"
    if final is not None and final["status"] == "ok":
        best = max(points, key=lambda r: r[valid]) if points else None
        head += (
            f"After {final['epochs']} epochs: valid {shown} {final[valid]:.4f}, test {shown} "
            f"{final[test]:.4f}; arguments {final['arguments']}.\n\n"
        )
        if best is not None:
            head += f"Best validation {shown} {best[valid]:.4f} at epoch {best['epoch']}.\n\n"
    elif final is not None:
        head += f"The run failed: {final['error']}\n\n"
    rows = [
        {"epoch": r["epoch"], valid: f"{r[valid]:.4f}", "seconds": f"{r['seconds']:.0f}"}
        for r in points
    ]
    paths = {"markdown": out_dir / "curve.md", "plot": out_dir / "curve.png"}
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    ax.plot([r["epoch"] for r in points], [r[valid] for r in points], "o-", color="#66c2a5")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {shown}")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _write_all({paths["markdown"]: head + markdown_table(rows), paths["plot"]: _png(fig)})
    return paths


def _curve_final(records: list[dict]) -> dict | None:
    return next((r for r in records if r.get("final") and r["status"] == "ok"), None)


def _curve_windows(curves: dict[str, list[list[dict]]], window: int) -> list[tuple[int, int]]:
    if window < 1:
        raise ValueError(f"window must be at least 1 epoch, got {window}")
    last = max(
        (
            p["epoch"]
            for group in curves.values()
            for records in group
            for p in _curve_points(records)
        ),
        default=0,
    )
    return [(start, min(start + window - 1, last)) for start in range(1, last + 1, window)]


def _window_mean(records: list[dict], low: int, high: int) -> float | None:
    valid = metric_field("valid", _objective(records))
    inside = [p[valid] for p in _curve_points(records) if low <= p["epoch"] <= high]
    return float(np.mean(inside)) if inside else None


def _cell(values: list) -> str:
    """One value as it is, several (one a seed) as mean ± std; blank if any is missing."""
    if not values or any(v is None for v in values):
        return ""
    return f"{values[0]:.4f}" if len(values) == 1 else _mean_std(values)


def mean_curve(group: list[list[dict]]) -> dict[int, float]:
    """``{epoch: validation objective}`` averaged over a group's curves (one a seed), at
    the epochs every one of them has."""
    by_curve = [
        {p["epoch"]: p[metric_field("valid", _objective(records))] for p in _curve_points(records)}
        for records in group
    ]
    epochs = sorted(set.intersection(*(set(c) for c in by_curve))) if by_curve else []
    return {e: float(np.mean([c[e] for c in by_curve])) for e in epochs}


def curve_rows(curves: dict[str, list[list[dict]]], window: int = 10) -> list[dict]:
    """One row per label of ``{label: [records of a curve.json, ...]}`` (several curves
    under one label are seeds of one configuration): the mean validation objective (MRR by
    default) over each ``window`` epochs (1..window, window+1..2 window, ...), the best
    epoch of the mean curve, and the final validation and test score; over seeds, mean ±
    std. Means over windows rather than single epochs, whose validation scores move by
    about as much as the differences one looks for. A cell is blank where a curve has no
    point (or no final record)."""
    windows = _curve_windows(curves, window)
    rows = []
    for label, group in curves.items():
        finals = [_curve_final(records) for records in group]
        mean = mean_curve(group)
        best = max(mean, key=mean.get, default=None)
        row = {
            "curve": label,
            "seeds": len(group),
            "epochs": max(
                (p["epoch"] for records in group for p in _curve_points(records)), default=0
            ),
        }
        for low, high in windows:
            row[f"valid_{low}-{high}"] = _cell(
                [_window_mean(records, low, high) for records in group]
            )
        row["best_valid"] = f"{mean[best]:.4f} (epoch {best})" if best is not None else ""
        for split in ("valid", "test"):
            row[f"final_{split}"] = _cell(
                [f[metric_field(split, objective(f))] if f else None for f in finals]
            )
        rows.append(row)
    return rows


def curve_tests(curves: dict[str, list[list[dict]]], window: int = 10) -> str:
    """Paired t-tests (:func:`paired_test`, curves matched by the seed of their final
    record) of every label against the first: on the final test and validation MRR and on
    the mean validation MRR of the last window of epochs. Empty unless some label has
    several curves."""
    if all(len(group) < 2 for group in curves.values()):
        return ""
    low, high = _curve_windows(curves, window)[-1]
    last = f"valid_{low}-{high}"
    name = _objective(next(iter(curves.values()))[0])
    valid, test = metric_field("valid", name), metric_field("test", name)
    records = [
        {
            "model": key,
            "seed": final["seed"],
            "status": "ok",
            test: final[test],
            valid: final[valid],
            last: _window_mean(group_records, low, high),
        }
        for key, group in curves.items()
        for group_records in group
        if (final := _curve_final(group_records)) is not None and "seed" in final
    ]
    records = [r for r in records if r[last] is not None]
    baseline, *others = curves
    return "".join(
        paired_line(records, baseline, key, metric)
        for key in others
        for metric in (test, valid, last)
    )


def write_curves_comparison(
    curves: dict[str, list[list[dict]]], out_dir, window: int = 10
) -> dict[str, pathlib.Path]:
    """curves.md (:func:`curve_rows`, then :func:`curve_tests`), curves.csv and
    curves.png (the curves overlaid; a label's seeds thin, their mean bold) in
    ``out_dir``, for learning curves of ``run.py curve`` side by side."""
    rows = curve_rows(curves, window)
    tests = curve_tests(curves, window)
    out_dir = pathlib.Path(out_dir)
    paths = {
        "markdown": out_dir / "curves.md",
        "csv": out_dir / "curves.csv",
        "plot": out_dir / "curves.png",
    }
    shown = label(_objective(next(iter(curves.values()))[0])) if curves else "MRR"
    head = (
        f"# Learning curves\n\nValidation {shown} averaged over windows of {window} epochs, the "
        "best "
        "epoch of the curve (with several seeds, of their mean curve), and the final model's "
        f"validation and test {shown}; with several seeds, mean ± std over them.\n\n"
    )
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for key, group in curves.items():
        mean = mean_curve(group)
        (line,) = ax.plot(
            list(mean),
            list(mean.values()),
            ".-" if len(group) == 1 else "-",
            lw=1.5 if len(group) == 1 else 2,
            label=key + (f" ({len(group)} seeds)" if len(group) > 1 else ""),
        )
        if len(group) > 1:
            for records in group:
                points = _curve_points(records)
                valid = metric_field("valid", _objective(records))
                ax.plot(
                    [p["epoch"] for p in points],
                    [p[valid] for p in points],
                    "-",
                    color=line.get_color(),
                    lw=0.6,
                    alpha=0.35,
                )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {shown}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _write_all(
        {
            paths["markdown"]: head + markdown_table(rows) + ("\n" + tests if tests else ""),
            paths["csv"]: csv_text(rows),
            paths["plot"]: _png(fig),
        }
    )
    return paths
