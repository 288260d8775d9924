"""The popularity baseline (score = training count) under each split protocol: the counts
of the split and HR@10, NDCG@10 and MRR over all items, the input's items excluded and
not, for validation and test. A sanity anchor for the models' figures.

    MLSTM4RECO_DATA=../shared/data python experiments/popularity.py --dataset ml1m \\
        --window 200 1 200 --out docs/results/popularity_ml1m.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from mlstm4reco.baselines import PopularityModel  # noqa: E402
from mlstm4reco.datasets import DATASETS, get_dataset  # noqa: E402
from mlstm4reco.evaluation import evaluate  # noqa: E402
from mlstm4reco.files import atomic_path  # noqa: E402
from mlstm4reco.protocols import PROTOCOLS, split  # noqa: E402

METRICS = ("hit_rate@10", "ndcg@10", "mrr")
USER_SPLIT = dict(seed=72, test_percentage=0.2, valid_percentage=0.5)  # the 2018 study's


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--window",
        type=int,
        nargs=3,
        default=(200, 1, 200),
        metavar=("MAX", "MIN", "STEP"),
        help="training windows (default 200 1 200)",
    )
    parser.add_argument(
        "--protocols", nargs="+", default=sorted(PROTOCOLS), choices=sorted(PROTOCOLS)
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=None, help="also write the figures as JSON"
    )
    args = parser.parse_args(argv)
    data = get_dataset(args.dataset, args.data_dir)
    window = dict(zip(("max_sequence_length", "min_sequence_length", "step_size"), args.window))
    results = {}
    for name in args.protocols:
        parts = split(data, name, **window, **(USER_SPLIT if name == "user" else {}))
        model = PopularityModel().fit(parts.train)
        result = {"notes": parts.notes}
        print(
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in parts.notes.items() if k != "protocol")
        )
        for exclude in (True, False):
            for part, sequences in (("valid", parts.valid), ("test", parts.test)):
                scores = evaluate(model, sequences, METRICS, exclude_preceding=exclude)
                result[f"{part}, input's items {'excluded' if exclude else 'included'}"] = scores
                print(
                    f"  {part:<5} {'excluded' if exclude else 'included':<8} "
                    + "  ".join(f"{m} {v:.4f}" for m, v in scores.items())
                )
        results[name] = result
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(
                json.dumps(
                    {"dataset": args.dataset, "window": window, "results": results}, indent=1
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
