"""Reproduce and extend the 2018 mLSTM recommender study.

Search (hyperopt TPE on validation MRR; resumes from the results folder):
    python experiments/run.py --dataset ml1m --model mlstm --trials 200

Reproduce (the study's best configurations over several seeds, with a paired test):
    python experiments/run.py reproduce --dataset ml1m --seeds 5
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from mlstm4reco import report, search  # noqa: E402
from mlstm4reco.search import DATASETS, UserError  # noqa: E402


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="dataset to run on")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the dataset files (else $MLSTM4RECO_DATA, then ~/.cache/mlstm4reco)")
    parser.add_argument("--out", default=str(ROOT / "results"), help="results folder (default: results/)")
    parser.add_argument("--config-dir", default=None, help="folder of configs (default: configs/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    find = commands.add_parser("search", help="hyperopt TPE search (the default command)")
    common_options(find)
    find.add_argument("--model", required=True, help="model name, e.g. lstm or mlstm (a config <dataset>_<model>.yaml)")
    find.add_argument("--trials", type=int, default=200, help="trials to reach (default 200, as the study)")
    find.add_argument("--seed", type=int, default=None, help="search and model seed (default: the config's, 72)")
    find.add_argument("--config", default=None, help="run this config file instead of configs/<dataset>_<model>.yaml")
    again = commands.add_parser("reproduce", help="the study's best configurations over several seeds")
    common_options(again)
    again.add_argument("--models", nargs="+", default=["lstm", "mlstm"], help="models to compare (default: lstm mlstm)")
    again.add_argument("--seeds", type=int, default=5, help="model seeds per configuration (default 5)")
    if argv and argv[0] not in ("search", "reproduce", "-h", "--help"):
        argv = ["search", *argv]
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parse(["--help"])
    progress = not args.quiet
    try:
        if args.command == "search":
            path = args.config or search.config_path(args.dataset, args.model, args.config_dir)
            config = search.load_config(path)
            if config.dataset != args.dataset:
                raise UserError(f"{path} is for dataset {config.dataset!r}, not {args.dataset!r}")
            out = pathlib.Path(args.out) / config.name
            records = search.run_search(config, args.trials, out, args.device, args.data_dir,
                                        args.seed, progress)
            paths = report.write_search_report(records, out, config.name)
        else:
            configs = [search.load_config(search.config_path(args.dataset, m, args.config_dir))
                       for m in args.models]
            out = pathlib.Path(args.out) / f"{args.dataset}_reproduce"
            records = search.run_reproduce(configs, args.seeds, out, args.device, args.data_dir, progress)
            paths = report.write_reproduction_report(records, out)
    except UserError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    print(paths["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
