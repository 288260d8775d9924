"""Tables, paired tests and plots from the records of searches and reproductions."""

from __future__ import annotations

import csv
import io
import pathlib
from collections.abc import Sequence

import numpy as np
from scipy import stats

from mlstm4reco.datasets._download import atomic_path


def _write(path: pathlib.Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _pyplot():
    """matplotlib's pyplot on a file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path) -> None:
    with atomic_path(pathlib.Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _pyplot().close(fig)


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
    return float(np.median([(r["fit_seconds"] - r.get("eval_seconds", 0.0))
                            / r.get("epochs", r["arguments"]["n_iter"]) for r in runs]))


def reproduction_rows(records: list[dict], baseline: str = "lstm") -> list[dict]:
    """One row per model: mean and std of valid/test MRR over seeds beside the study's,
    the median seconds per run (all of it) and per epoch (training only, see
    :func:`_epoch_seconds`), and the epoch time relative to ``baseline``'s."""
    base_ok = _ok([r for r in records if r["model"] == baseline])
    base_epoch = _epoch_seconds(base_ok) if base_ok else None
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        runs = [r for r in records if r["model"] == model]
        ok = _ok(runs)
        published = runs[0].get("published") or {}
        rows.append({
            "dataset": runs[0]["dataset"],
            "model": model,
            "seeds": len(ok),
            "failed": len(runs) - len(ok),
            "valid_mrr": _mean_std([r["valid_mrr"] for r in ok]),
            "test_mrr": _mean_std([r["test_mrr"] for r in ok]),
            "study_valid_mrr": published.get("valid_mrr", ""),
            "study_test_mrr": published.get("test_mrr", ""),
            "seconds_per_run": f"{np.median([r['seconds'] for r in ok]):.0f}" if ok else "n/a",
            "seconds_per_epoch": f"{_epoch_seconds(ok):.2f}" if ok else "n/a",
            f"epoch_vs_{baseline}": f"{_epoch_seconds(ok) / base_epoch:.2f}x" if ok and base_epoch else "n/a",
        })
    return rows


def comparisons(models: list[str], baseline: str = "lstm",
                pairs: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The (model, against) pairs a report tests: every model against ``baseline`` (when
    it is among ``models``), then ``pairs``, each pair once and in that order."""
    unknown = [m for pair in pairs for m in pair if m not in models]
    if unknown:
        raise ValueError(f"no runs of model {unknown[0]!r} to compare (models: {', '.join(models)})")
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
    return dict(metric=metric, a=a, b=b, seeds=len(seeds), mean_difference=float(difference.mean()),
                ci95=(float(difference.mean() - half_width), float(difference.mean() + half_width)),
                t=float(t), p=float(p), b_wins=int((difference > 0).sum()))


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


def describe_test(test: dict | None) -> str:
    if test is None:
        return "- Paired test: needs both models on at least two common seeds.\n"
    low, high = test["ci95"]
    return (
        f"- Paired t-test, {test['b']} vs {test['a']}, {test['metric']} over {test['seeds']} seeds: "
        f"mean difference {test['mean_difference']:+.4f} (95% CI {low:+.4f} to {high:+.4f}), "
        f"t = {test['t']:.2f}, p = {test['p']:.3f}; {test['b']} better on {test['b_wins']} of "
        f"{test['seeds']} seeds.\n"
    )


def write_reproduction_report(records: list[dict], out_dir, baseline: str = "lstm",
                              pairs: Sequence[tuple[str, str]] = ()) -> dict[str, pathlib.Path]:
    """table.md (table and paired tests), table.csv and comparison.png in ``out_dir``.

    The paired tests are those of :func:`comparisons`: each model against ``baseline``,
    then each ``(model, against)`` of ``pairs``."""
    out_dir = pathlib.Path(out_dir)
    rows = reproduction_rows(records, baseline)
    tests = ""
    for model, against in comparisons([row["model"] for row in rows], baseline, pairs):
        for metric in ("test_mrr", "valid_mrr"):
            tests += describe_test(paired_test(records, against, model, metric))
    paths = {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv",
             "plot": out_dir / "comparison.png"}
    times = ("Times are medians over seeds: seconds_per_run of the whole run (the model built, trained, "
             "evaluated), seconds_per_epoch of training alone where the records time the validation "
             "evaluations apart (`eval_seconds`), else with them.\n\n")
    _write(paths["markdown"], markdown_table(rows) + "\n" + times + tests)
    _write(paths["csv"], csv_text(rows))
    plot_comparison(records, paths["plot"])
    return paths


def plot_comparison(records: list[dict], path) -> None:
    """Bars of mean valid/test MRR with std error bars; the study's numbers as marks."""
    models = list(dict.fromkeys(r["model"] for r in records))
    many = len(models) > 6  # then narrower bars and slanted names
    fig, ax = _pyplot().subplots(figsize=(1.8 + (0.9 if many else 1.6) * len(models), 4.2 if many else 3.6))
    width = 0.38
    for offset, metric, color in ((-width / 2, "valid_mrr", "#8da0cb"), (width / 2, "test_mrr", "#fc8d62")):
        for i, model in enumerate(models):
            ok = [r for r in _ok(records) if r["model"] == model]
            values = np.array([r[metric] for r in ok], dtype=float)
            if len(values):
                std = values.std(ddof=1) if len(values) > 1 else 0.0
                ax.bar(i + offset, values.mean(), width, yerr=std, capsize=4, color=color,
                       label=metric.replace("_", " ") if i == 0 else None)
            published = next((r.get("published") or {} for r in records if r["model"] == model), {})
            if metric in published:
                ax.plot(i + offset, published[metric], "k_", markersize=18, mew=2,
                        label="study" if (i == 0 and metric == "test_mrr") else None)
    ax.set_xticks(range(len(models)), models, rotation=35 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("MRR")
    dataset = records[0]["dataset"] if records else ""
    ax.set_title(f"{dataset}: mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def write_search_report(records: list[dict], out_dir, title: str) -> dict[str, pathlib.Path]:
    """summary.md (best trial and all trials), trials.csv and valid_mrr.png."""
    out_dir = pathlib.Path(out_dir)
    records = sorted(records, key=lambda r: r["number"])  # the Ray backend records by end time
    rows = [{"number": r["number"], "status": r["status"],
             "valid_mrr": f"{r['valid_mrr']:.4f}" if r["status"] in ("ok", "stopped") else "",
             "test_mrr": f"{r['test_mrr']:.4f}" if r["status"] == "ok" else "",
             "seconds": f"{r['seconds']:.0f}",
             **{k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in r["arguments"].items()
                if k not in ("loss", "representation")}} for r in records]
    ok = _ok(records)
    best = max(ok, key=lambda r: r["valid_mrr"]) if ok else None
    stopped = sum(r["status"] == "stopped" for r in records)
    head = (f"# Search: {title}\n\n{len(records)} trials, {len(records) - len(ok) - stopped} failed"
            + (f", {stopped} stopped early by ASHA (their MRR: when stopped)" if stopped else "") + ".\n\n")
    if best is not None:
        head += (f"Best by validation MRR: trial {best['number']}, valid {best['valid_mrr']:.4f}, "
                 f"test {best['test_mrr']:.4f}, arguments {best['arguments']}.\n\n")
    paths = {"markdown": out_dir / "summary.md", "csv": out_dir / "trials.csv",
             "plot": out_dir / "valid_mrr.png"}
    _write(paths["markdown"], head + markdown_table(rows))
    _write(paths["csv"], csv_text(rows))
    plot_search(records, paths["plot"], title)
    return paths


def plot_search(records: list[dict], path, title: str) -> None:
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    records = sorted(records, key=lambda r: r["number"])
    ok = _ok(records)
    numbers = [r["number"] for r in ok]
    values = [r["valid_mrr"] for r in ok]
    ax.plot(numbers, values, "o", color="#66c2a5", label="trial")
    if values:
        ax.step(numbers, np.maximum.accumulate(values), where="post", color="k", label="best so far")
    stopped = [r for r in records if r["status"] == "stopped"]
    if stopped:
        ax.plot([r["number"] for r in stopped], [r["valid_mrr"] for r in stopped], ".",
                color="#999999", label="stopped early")
    failed = [r["number"] for r in records if r["status"] == "failed"]
    if failed:
        ax.plot(failed, [min(values, default=0)] * len(failed), "rx", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation MRR")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def write_curve_report(records: list[dict], out_dir, title: str) -> dict[str, pathlib.Path]:
    """curve.md (the final MRRs and the curve) and curve.png from a curve's records."""
    out_dir = pathlib.Path(out_dir)
    points = [r for r in records if not r.get("final")]
    final = next((r for r in records if r.get("final")), None)
    head = f"# Learning curve: {title}\n\n"
    if final is not None and final["status"] == "ok":
        best = max(points, key=lambda r: r["valid_mrr"]) if points else None
        head += (f"After {final['epochs']} epochs: valid MRR {final['valid_mrr']:.4f}, test MRR "
                 f"{final['test_mrr']:.4f}; arguments {final['arguments']}.\n\n")
        if best is not None:
            head += f"Best validation MRR {best['valid_mrr']:.4f} at epoch {best['epoch']}.\n\n"
    elif final is not None:
        head += f"The run failed: {final['error']}\n\n"
    rows = [{"epoch": r["epoch"], "valid_mrr": f"{r['valid_mrr']:.4f}", "seconds": f"{r['seconds']:.0f}"}
            for r in points]
    paths = {"markdown": out_dir / "curve.md", "plot": out_dir / "curve.png"}
    _write(paths["markdown"], head + markdown_table(rows))
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    ax.plot([r["epoch"] for r in points], [r["valid_mrr"] for r in points], "o-", color="#66c2a5")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MRR")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, paths["plot"])
    return paths


def curve_rows(curves: dict[str, list[dict]], window: int = 10) -> list[dict]:
    """One row per learning curve (``{label: records of a curve.json}``): the mean
    validation MRR over each ``window`` epochs (1..window, window+1..2 window, ...; the
    points a curve has there), the best validation MRR and its epoch, and the final
    validation and test MRR. Means over windows rather than single epochs, whose
    validation MRR moves by about as much as the differences one looks for."""
    if window < 1:
        raise ValueError(f"window must be at least 1 epoch, got {window}")
    points = {label: [r for r in records if not r.get("final")] for label, records in curves.items()}
    last = max((p["epoch"] for curve in points.values() for p in curve), default=0)
    windows = [(start, min(start + window - 1, last)) for start in range(1, last + 1, window)]
    rows = []
    for label, records in curves.items():
        curve = points[label]
        final = next((r for r in records if r.get("final") and r["status"] == "ok"), None)
        best = max(curve, key=lambda p: p["valid_mrr"], default=None)
        row = {"curve": label, "epochs": max((p["epoch"] for p in curve), default=0)}
        for low, high in windows:
            inside = [p["valid_mrr"] for p in curve if low <= p["epoch"] <= high]
            row[f"valid_{low}-{high}"] = f"{np.mean(inside):.4f}" if inside else ""
        row["best_valid"] = f"{best['valid_mrr']:.4f} (epoch {best['epoch']})" if best else ""
        row["final_valid"] = f"{final['valid_mrr']:.4f}" if final else ""
        row["final_test"] = f"{final['test_mrr']:.4f}" if final else ""
        rows.append(row)
    return rows


def write_curves_comparison(curves: dict[str, list[dict]], out_dir, window: int = 10) -> dict[str, pathlib.Path]:
    """curves.md (:func:`curve_rows`), curves.csv and curves.png (the curves overlaid)
    in ``out_dir``, for learning curves of ``run.py curve`` side by side."""
    rows = curve_rows(curves, window)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "curves.md", "csv": out_dir / "curves.csv", "plot": out_dir / "curves.png"}
    head = (f"# Learning curves\n\nValidation MRR averaged over windows of {window} epochs, the best "
            "epoch's, and the final model's validation and test MRR.\n\n")
    _write(paths["markdown"], head + markdown_table(rows))
    _write(paths["csv"], csv_text(rows))
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for label, records in curves.items():
        curve = [r for r in records if not r.get("final")]
        ax.plot([p["epoch"] for p in curve], [p["valid_mrr"] for p in curve], ".-", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MRR")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, paths["plot"])
    return paths
