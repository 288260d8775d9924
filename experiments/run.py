"""Reproduce and extend the 2018 mLSTM recommender study.

Search (hyperopt TPE on validation MRR; resumes from the results folder):
    python experiments/run.py --dataset ml1m --model mlstm --trials 200

The same search with 4 trials at a time on Ray (local, or a cluster with --ray-address),
stopping poor trials early with ASHA:
    python experiments/run.py --dataset ml1m --model mlstm --backend ray --workers 4 --asha

Reproduce (the study's best configurations over several seeds, with a paired test):
    python experiments/run.py reproduce --dataset ml1m --seeds 5

Rewrite a reproduction's report from its runs.json, with more paired tests (MODEL:AGAINST):
    python experiments/run.py report results/ml1m_reproduce --pairs mlstm:mlstm_hidden

A learning curve (validation MRR every epoch) of a config's best arguments, changed:
    python experiments/run.py curve --dataset ml1m --model mlstm_softmax \
        --set representation_kwargs.dropout=0.25

Learning curves side by side (validation MRR over windows of epochs, one figure); folders
given one label are seeds of one configuration, averaged and paired by seed:
    python experiments/run.py curves results/curves/A results/curves/B --out results/curves/A_vs_B
    python experiments/run.py curves A_seed0 A_seed1 B_seed0 B_seed1 --labels A A B B --out A_vs_B
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from mlstm4reco.protocols import PROTOCOLS  # noqa: E402
from mlstm4reco.study import curves, report  # noqa: E402
from mlstm4reco.study.adjust import (  # noqa: E402
    tuned_config,
    with_minimums,
    with_objective,
    with_protocol,
    with_window,
)
from mlstm4reco.study.config import (  # noqa: E402
    DATASETS,
    check_model_arguments,
    config_path,
    load_config,
    model_arguments,
)
from mlstm4reco.study.errors import UserError  # noqa: E402
from mlstm4reco.study.records import RecordFile  # noqa: E402
from mlstm4reco.study.runners import (  # noqa: E402
    parse_overrides,
    plain_label,
    results_folder,
    run_curve,
    run_reproduce,
    run_search,
    set_threads,
)


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        help=f"dataset to run on: one of {', '.join(d for d in DATASETS if d != 'file')}, or the "
        "path of a CSV, TSV or Parquet file of your own (see --user-col ...)",
    )
    parser.add_argument("--user-col", default=None, help="a file's user column (default user_id)")
    parser.add_argument("--item-col", default=None, help="a file's item column (default item_id)")
    parser.add_argument(
        "--time-col", default=None, help="a file's timestamp column (default timestamp)"
    )
    parser.add_argument("--rating-col", default=None, help="a file's rating column, to filter on")
    parser.add_argument(
        "--min-rating", type=float, default=None, help="keep a file's ratings at or above this"
    )
    parser.add_argument(
        "--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files (else $MLSTM4RECO_DATA, then ~/.cache/mlstm4reco)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "results"), help="results folder (default: results/)"
    )
    parser.add_argument("--config-dir", default=None, help="folder of configs (default: configs/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def protocol_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        default=None,
        choices=sorted(PROTOCOLS),
        help="split protocol instead of the config's: user (the 2018 study's, Spotlight's), "
        "leave_one_out (each user's last item the test target) or temporal (global cutoffs)",
    )
    parser.add_argument(
        "--window",
        default=None,
        metavar="MAX[,MIN[,STEP]]",
        help="sequence windows instead of the config's: training windows of at most MAX "
        "items (at least MIN, default 1, one every STEP, default MAX) and evaluation "
        "sequences of the last MAX (e.g. 200 for SASRec's setting on ML-1M)",
    )
    parser.add_argument(
        "--min-interactions",
        default=None,
        metavar="K[,K_ITEM]",
        help="drop users with fewer than K interactions and items with fewer than K_ITEM "
        "(default K), counted once on the whole data, before the split; the rest numbered "
        "anew (5 is SASRec's and BERT4Rec's preprocessing: 3,416 items on ML-1M)",
    )
    parser.add_argument(
        "--objective",
        default=None,
        help="validation metric to optimise and stop on instead of the config's (default mrr): "
        "mrr, mrr@K, hit_rate@K, ndcg@K, recall@K",
    )


def dataset_name(args) -> str:
    """--dataset as a config's dataset: a built-in name, or 'file' for a path."""
    if args.dataset in DATASETS and args.dataset != "file":
        return args.dataset
    path = pathlib.Path(args.dataset)
    if path.suffix.lower() in (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq") or path.exists():
        return "file"
    known = ", ".join(d for d in DATASETS if d != "file")
    raise UserError(
        f"--dataset {args.dataset!r}: neither a dataset ({known}) nor a .csv, .tsv or .parquet file"
    )


def adjusted(config, args):
    """The config under --protocol, --window, --min-interactions and --objective, where
    given, and for a file (--dataset PATH) with its path and columns."""
    if config.dataset == "file" and dataset_name(args) == "file":
        columns = {
            "user_col": args.user_col,
            "item_col": args.item_col,
            "time_col": args.time_col,
            "rating_col": args.rating_col,
            "min_rating": args.min_rating,
        }
        data = {**config.data, "path": str(pathlib.Path(args.dataset).resolve())}
        data.update({k: v for k, v in columns.items() if v is not None})
        config = dataclasses.replace(config, data=data)
    if args.protocol is not None:
        config = with_protocol(config, args.protocol)
    if args.window is not None:
        config = with_window(config, args.window)
    if args.min_interactions is not None:
        config = with_minimums(config, args.min_interactions)
    if args.objective is not None:
        config = with_objective(config, args.objective)
    return config


def comparison_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        default=None,
        help="model every other is paired against, and epoch times are relative to (default lstm)",
    )
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=[],
        metavar="MODEL:AGAINST",
        help="more paired tests, each of MODEL against AGAINST (e.g. mlstm:mlstm_hidden)",
    )


def parse_pairs(texts: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for text in texts:
        model, sep, against = text.partition(":")
        if not sep or not model.strip() or not against.strip():
            raise UserError(f"--pairs expects MODEL:AGAINST, got {text!r}")
        pairs.append((model.strip(), against.strip()))
    return pairs


def check_comparisons(args: argparse.Namespace, models: list[str], where: str) -> dict:
    """The report's baseline and pairs, checked against the models there will be runs of
    (before any training, so a misspelt name costs nothing)."""
    models = list(dict.fromkeys(models))
    if args.baseline is not None and args.baseline not in models:
        raise UserError(
            f"--baseline {args.baseline!r}: no such model in {where} (models: {', '.join(models)})"
        )
    baseline = args.baseline or "lstm"
    pairs = parse_pairs(args.pairs)
    try:
        report.comparisons(models, baseline, pairs)
    except ValueError as error:
        raise UserError(f"--pairs: {error} in {where}") from error
    return dict(baseline=baseline, pairs=pairs)


def read_curves(folders: list[str], labels: list[str] | None) -> dict[str, list[list[dict]]]:
    """``{label: [records, ...]}`` of the ``curve.json`` in each folder, checked. Folders
    given one label are seeds of one configuration: each needs its final record (for its
    seed), and their seeds must differ."""
    if labels is not None and len(labels) != len(folders):
        raise UserError(f"--labels: {len(labels)} labels for {len(folders)} folders")
    labels = labels or [pathlib.Path(folder).name for folder in folders]
    by_label: dict[str, list[list[dict]]] = {}
    seeds: dict[str, dict[int, str]] = {}
    for label, folder in zip(labels, folders):
        path = pathlib.Path(folder) / "curve.json"
        if not path.is_file():
            raise UserError(f"{path}: no such file (is {folder} a folder of 'run.py curve'?)")
        records = RecordFile(path, kind="curve").records
        if not any("epoch" in r for r in records):
            raise UserError(f"{path}: no points of a learning curve")
        by_label.setdefault(label, []).append(records)
        seed = next((r.get("seed") for r in records if r.get("final")), None)
        if labels.count(label) > 1:
            if seed is None:
                raise UserError(
                    f"{path}: no final record with a seed (a run in progress?), so nothing "
                    f"to pair it by under label {label!r}"
                )
            if seed in seeds.setdefault(label, {}):
                raise UserError(
                    f"label {label!r}: {seeds[label][seed]} and {folder} are both seed {seed}"
                )
            seeds[label][seed] = folder
    return by_label


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command")
    find = commands.add_parser("search", help="hyperopt TPE search (the default command)")
    common_options(find)
    protocol_options(find)
    find.add_argument(
        "--model",
        required=True,
        help="model name, e.g. lstm or mlstm (a config <dataset>_<model>.yaml)",
    )
    find.add_argument(
        "--trials", type=int, default=200, help="trials to reach (default 200, as the study)"
    )
    find.add_argument(
        "--seed", type=int, default=None, help="search and model seed (default: the config's, 72)"
    )
    find.add_argument(
        "--config",
        default=None,
        help="run this config file instead of configs/<dataset>_<model>.yaml",
    )
    find.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of a local search (default: torch's, one a core); 1 for two "
        "searches side by side on two cores",
    )
    on_ray = find.add_argument_group('Ray backend (pip install -e ".[ray]")')
    on_ray.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="'local': one trial at a time in this process (default); 'ray': trials in parallel on "
        "Ray Tune",
    )
    on_ray.add_argument("--workers", type=int, default=2, help="trials at a time (default 2)")
    on_ray.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1,
        help="CPUs (and torch threads) per trial (default 1)",
    )
    on_ray.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0,
        help="GPUs per trial, may be fractional (default 0)",
    )
    on_ray.add_argument(
        "--ray-address",
        default=None,
        help="an existing Ray cluster (e.g. ray://head:10001); default: start Ray on this machine",
    )
    on_ray.add_argument(
        "--asha", action="store_true", help="stop poor trials early (ASHA on validation MRR)"
    )
    on_ray.add_argument(
        "--asha-every",
        type=int,
        default=5,
        help="epochs between validation reports (default 5; the config's early_stopping.every if "
        "set)",
    )
    on_ray.add_argument(
        "--grace-period",
        type=int,
        default=10,
        help="ASHA: epochs before a trial can be stopped (default 10)",
    )
    on_ray.add_argument(
        "--reduction-factor",
        type=int,
        default=3,
        help="ASHA: keep 1 in this many at each rung (default 3)",
    )
    again = commands.add_parser(
        "reproduce", help="the study's best configurations over several seeds"
    )
    common_options(again)
    protocol_options(again)
    again.add_argument(
        "--models",
        nargs="+",
        default=["lstm", "mlstm"],
        help="models to compare (default: lstm mlstm)",
    )
    again.add_argument(
        "--tuned",
        action="store_true",
        help="train each model's best trial of its search in --out (run.py search with the "
        "same --protocol, --window and --objective) instead of its config's best; into a "
        "folder of its own (..._tuned)",
    )
    again.add_argument(
        "--seeds", type=int, default=5, help="model seeds per configuration (default 5)"
    )
    again.add_argument(
        "--workers", type=int, default=1, help="runs at a time, in worker processes (default 1)"
    )
    again.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per worker, at least 1 (default: CPUs / workers; torch's own with one "
        "worker)",
    )
    comparison_options(again)
    redo = commands.add_parser(
        "report", help="rewrite a reproduction's table and tests from its runs.json"
    )
    redo.add_argument("folder", help="a reproduction's results folder (holding runs.json)")
    comparison_options(redo)
    curve = commands.add_parser("curve", help="validation MRR every epoch of one run of a config")
    common_options(curve)
    protocol_options(curve)
    curve.add_argument(
        "--model", required=True, help="model name (a config <dataset>_<model>.yaml)"
    )
    curve.add_argument(
        "--config", default=None, help="this config file instead of configs/<dataset>_<model>.yaml"
    )
    curve.add_argument("--seed", type=int, default=0, help="model seed (default 0)")
    curve.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one of the config's best arguments (dotted names for nested ones); repeatable",
    )
    curve.add_argument(
        "--every", type=int, default=1, help="epochs between evaluations (default 1)"
    )
    curve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's, one a core); 1 for two curves side by side on two "
        "cores",
    )
    side = commands.add_parser("curves", help="learning curves of 'curve' side by side")
    side.add_argument("folders", nargs="+", help="folders of 'curve' (each holding curve.json)")
    side.add_argument(
        "--out", required=True, help="folder for curves.md, curves.csv and curves.png"
    )
    side.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="a label per folder (default: the folder names); folders with one label are seeds, "
        "averaged, with paired tests against the first label",
    )
    side.add_argument(
        "--window", type=int, default=10, help="epochs averaged per column (default 10)"
    )
    if argv and argv[0] not in ("search", "reproduce", "report", "curve", "curves", "-h", "--help"):
        argv = ["search", *argv]
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parse(["--help"])
    progress = not getattr(args, "quiet", False)  # report has no progress to show
    threads_before = None
    try:
        if args.command in ("search", "curve"):
            dataset = dataset_name(args)
            path = args.config or config_path(dataset, args.model, args.config_dir)
            config = adjusted(load_config(path), args)
            if config.dataset != dataset:
                raise UserError(f"{path} is for dataset {config.dataset!r}, not {args.dataset!r}")
            out = results_folder(args.out, config.name)
        if args.command in ("search", "curve") and args.threads is not None:
            if args.threads < 1:
                raise UserError(f"--threads must be at least 1, got {args.threads}")
            threads_before = torch.get_num_threads()
            set_threads(args.threads)  # restored below: main() may run inside a process
        if args.command == "curve":
            overrides = parse_overrides(args.set)
            check_model_arguments(
                model_arguments(config, {**config.best, **overrides}),
                f"{path} with --set {' '.join(args.set)}",
            )
            changes = "".join(f"_{name}={value}" for name, value in overrides.items())
            out = results_folder(
                pathlib.Path(args.out) / "curves",
                plain_label(f"{config.name}{changes}_seed{args.seed}"),
            )
            records = run_curve(
                config, overrides, args.seed, out, args.every, args.device, args.data_dir, progress
            )
            paths = curves.write_curve_report(records, out, out.name)
        elif args.command == "search":
            if args.backend == "ray":
                from mlstm4reco.study.ray_tune import run_ray_search

                asha = (
                    dict(
                        every=args.asha_every,
                        grace_period=args.grace_period,
                        reduction_factor=args.reduction_factor,
                    )
                    if args.asha
                    else None
                )
                records = run_ray_search(
                    config,
                    args.trials,
                    out,
                    args.device,
                    args.data_dir,
                    args.seed,
                    progress,
                    workers=args.workers,
                    cpus_per_trial=args.cpus_per_trial,
                    gpus_per_trial=args.gpus_per_trial,
                    address=args.ray_address,
                    asha=asha,
                )
            elif args.asha or args.ray_address:
                raise UserError("--asha and --ray-address need --backend ray")
            else:
                records = run_search(
                    config, args.trials, out, args.device, args.data_dir, args.seed, progress
                )
            paths = report.write_search_report(records, out, config.name)
        elif args.command == "curves":
            if args.window < 1:
                raise UserError(f"--window must be at least 1 epoch, got {args.window}")
            paths = curves.write_curves_comparison(
                read_curves(args.folders, args.labels), args.out, args.window
            )
        elif args.command == "report":
            out = pathlib.Path(args.folder)
            records = RecordFile(out / "runs.json", kind="runs").records
            if not records:
                raise UserError(
                    f"{out / 'runs.json'}: no runs to report (is this a reproduction's folder?)"
                )
            compare = check_comparisons(args, [r["model"] for r in records], out / "runs.json")
            paths = report.write_reproduction_report(records, out, **compare)
        else:
            configs = [
                adjusted(load_config(config_path(dataset_name(args), m, args.config_dir)), args)
                for m in args.models
            ]
            kinds = {(c.split, c.objective) for c in configs}
            if len(kinds) > 1:
                raise UserError(
                    f"--models {' '.join(args.models)}: their configs differ in split protocol or "
                    f"objective ({sorted(kinds)}); reproduce them apart, or give --protocol and "
                    "--objective"
                )
            if args.tuned:
                configs = [tuned_config(c, args.out) for c in configs]
                budgets = {c.model: c.tuned["trials"] for c in configs}
                if len(set(budgets.values())) > 1:
                    print(
                        f"run.py: warning: the searches differ in finished trials ({budgets}): "
                        "the comparison is not of one budget",
                        file=sys.stderr,
                    )
            first = configs[0]
            tuned = "_tuned" if args.tuned else ""
            out = results_folder(
                args.out, f"{first.dataset_label}_reproduce{first.study_suffix}{tuned}"
            )
            stored = [r["model"] for r in RecordFile(out / "runs.json", kind="runs").records]
            compare = check_comparisons(
                args, [*args.models, *stored], "--models and " + str(out / "runs.json")
            )
            records = run_reproduce(
                configs,
                args.seeds,
                out,
                args.device,
                args.data_dir,
                progress,
                workers=args.workers,
                threads=args.threads,
            )
            paths = report.write_reproduction_report(records, out, **compare)
    except UserError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    finally:
        if threads_before is not None:
            set_threads(threads_before)
    print(paths["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
