"""Reports of learning curves (``run.py curve``, ``run.py curves``): one curve's table and
plot, and curves side by side with paired tests over seeds."""

from __future__ import annotations

import pathlib

import numpy as np

from mlstm4reco.study.records import metric_field, objective
from mlstm4reco.study.report import (
    _mean_std,
    _objective,
    _png,
    _pyplot,
    _write_all,
    csv_text,
    label,
    markdown_table,
    paired_line,
    protocol_line,
)


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
    markdown = head + protocol_line(records) + markdown_table(rows)
    _write_all({paths["markdown"]: markdown, paths["plot"]: _png(fig)})
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
    for key, group in curves.items():
        finals = [_curve_final(records) for records in group]
        mean = mean_curve(group)
        best = max(mean, key=mean.get, default=None)
        row = {
            "curve": key,
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
