"""Experiment configs: a YAML file read safely and checked whole before any data is loaded.

A config (see ``configs/``) names a dataset and a model and holds

- ``protocol``: seed, user split percentages, sequence windows, ``exclude_preceding``;
- ``fixed``: model arguments every trial shares (loss, representation, ...);
- ``space``: the hyperopt search space, one distribution per argument;
- ``best``: the best arguments found by the 2018 study (trained by ``reproduce``; with
  ``reproduce --tuned`` a search's best trial takes its place);
- ``published``: the study's valid/test MRR for the row, when it has one;
- ``early_stopping`` (optional): ``{every: E, patience: P}`` evaluates validation MRR
  every E epochs, keeps the best weights and stops after P evaluations without a gain,
  so that ``n_iter`` becomes a maximum;
- ``data`` (optional): arguments of the dataset loader (synthetic, amazon);
- ``objective`` (optional, default ``mrr``): the validation metric the search maximises
  and early stopping and ASHA follow, any name of :data:`mlstm4reco.evaluation.METRICS`
  (``ndcg@10``, ``hit_rate@10``, ...);
- ``metrics`` (optional, default ``[mrr, hit_rate@10, ndcg@10]``): the metrics every
  trial and run records for valid and test (``valid_NAME``, ``test_NAME``); the
  objective always among them, first.

The protocol's ``split`` names its split protocol (:data:`mlstm4reco.protocols.PROTOCOLS`:
``user``, the study's and the default; ``leave_one_out``; ``temporal``), whose options
the rest of the protocol gives.

Every field is checked for its type and range when the file is read; a search space is
checked at the extremes of each distribution (not by sampling a point), so that a space
that can propose a negative learning rate is refused from its bounds. YAML aliases are
refused (an alias bomb of a kilobyte expands to gigabytes) and files over 1 MiB too.
"""

from __future__ import annotations

import inspect
import json
import math
import pathlib
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import yaml
from hyperopt import hp
from hyperopt.pyll.stochastic import sample

from mlstm4reco import datasets, evaluation, protocols
from mlstm4reco.representations import REPRESENTATIONS
from mlstm4reco.sequence_model import ImplicitSequenceModel
from mlstm4reco.study.errors import UserError

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
DATASETS = tuple(datasets.DATASETS)
INTEGER_ARGUMENTS = ("batch_size", "n_iter", "embedding_dim", "num_negative_samples")
DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "qloguniform", "choice")
PROTOCOL_KEYS = {"seed", "exclude_preceding", *protocols.PROTOCOLS["user"].REQUIRED}
"""The keys of the 2018 study's protocol (the user split, the default)."""
RUNNER_SETS = ("random_state", "device", "use_cuda", "optimizer_func")
"""ImplicitSequenceModel arguments the runner sets (seed, --device) or YAML cannot give."""
MAX_CONFIG_BYTES = 1 << 20
DEFAULT_METRICS = ("mrr", "hit_rate@10", "ndcg@10")
"""What every trial and run records for valid and test unless a config says otherwise."""
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*\Z")


@dataclass
class ExperimentConfig:
    dataset: str
    model: str
    protocol: dict
    fixed: dict
    space: dict
    best: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    early_stopping: dict | None = None
    objective: str = "mrr"
    metrics: list = field(default_factory=lambda: list(DEFAULT_METRICS))
    source: str = "<memory>"
    tuned: dict | None = None
    """Where ``best`` came from when a search chose it (``reproduce --tuned``): the
    search's folder, its finished trials and the best one's number and objective."""

    def __post_init__(self) -> None:
        self.metrics = [self.objective, *(m for m in self.metrics if m != self.objective)]

    @property
    def dataset_label(self) -> str:
        """The dataset's name, or for a user's file (``dataset: file``) the file's stem."""
        if self.dataset != "file":
            return self.dataset
        stem = pathlib.Path(str(self.data.get("path", "file"))).stem
        return re.sub(r"[^A-Za-z0-9_.+=-]", "_", stem).lstrip(".-") or "file"

    @property
    def split(self) -> str:
        """The split protocol's name (``user``, the 2018 study's, by default)."""
        return self.protocol.get("split", "user")

    @property
    def name(self) -> str:
        """``DATASET_MODEL``, then :attr:`study_suffix`: results of other protocols or
        objectives never share a folder with the study's."""
        return f"{self.dataset_label}_{self.model}{self.study_suffix}"

    @property
    def study_suffix(self) -> str:
        """``_SPLIT``, ``_minU[_I]`` (rare users and items dropped, :mod:`.protocols.rare`)
        and ``_OBJECTIVE`` where they are not the study's (user split, nothing dropped,
        MRR), for the names of results folders; empty for the study's."""
        suffix = f"_{self.split}" if self.split != "user" else ""
        users, items = (self.protocol.get(key, 1) for key in protocols.rare.OPTIONS)
        if (users, items) != (1, 1):
            suffix += f"_min{users}" if users == items else f"_min{users}_{items}"
        if self.objective != "mrr":
            suffix += "_" + self.objective.replace("@", "_at_")
        return suffix


def check_plain_name(value, where: str) -> str:
    """``value`` if it can name a file or folder inside another (no separator, no ``..``,
    not absolute, not hidden); else a UserError."""
    if not isinstance(value, str) or not _PLAIN_NAME.match(value) or ".." in value:
        raise UserError(
            f"{where} must be a plain name (letters, digits and _ . + = -, no path "
            f"separators or '..'), got {value!r}"
        )
    return value


# ---------------------------------------------------------------------------- YAML


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name``)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not accepted in configs; write the value out",
                mark,
            )
        return super().compose_node(parent, index)


def read_yaml(text: str):
    """YAML ``text`` read with safe types only and without aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def _read_config_file(path: pathlib.Path):
    if not path.is_file():
        raise UserError(f"no config file at {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: {size:,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: not UTF-8 text ({error.reason})") from error
    try:
        return read_yaml(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from error


# ---------------------------------------------------------------------------- checks


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_protocol(protocol, where: str) -> None:
    """The keys every protocol has (``seed``, ``exclude_preceding``, the optional
    ``split``), then the split's own options through its module
    (:data:`mlstm4reco.protocols.PROTOCOLS`)."""
    if not isinstance(protocol, dict):
        raise UserError(f"{where}: protocol must be a mapping, got {protocol!r}")
    name = protocol.get("split", "user")
    if name not in protocols.PROTOCOLS:
        raise UserError(
            f"{where}: protocol.split must be one of {sorted(protocols.PROTOCOLS)}, got {name!r}"
        )
    module = protocols.PROTOCOLS[name]
    expected = {"seed", "exclude_preceding", *module.REQUIRED}
    allowed = expected | {"split", *module.OPTIONAL, *protocols.rare.OPTIONS}
    if not expected <= set(protocol) <= allowed:
        raise UserError(
            f"{where}: protocol needs exactly {sorted(expected)} for split {name!r} (optional: "
            f"{sorted(allowed - expected)}), got {sorted(protocol)}"
        )
    seed = protocol["seed"]
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise UserError(f"{where}: protocol.seed must be an integer in [0, 2**32), got {seed!r}")
    if not isinstance(protocol["exclude_preceding"], bool):
        raise UserError(
            f"{where}: protocol.exclude_preceding must be true or false, "
            f"got {protocol['exclude_preceding']!r}"
        )
    try:
        protocols.check_options(name, module, split_options(protocol))
    except ValueError as error:
        raise UserError(f"{where}: protocol.{error}") from error


def split_options(protocol: dict) -> dict:
    """The options of a config's protocol that its split takes (all but ``split`` and
    ``exclude_preceding``, which the evaluation takes)."""
    return {k: v for k, v in protocol.items() if k not in ("split", "exclude_preceding")}


def _check_distribution(name, spec, where: str) -> None:
    where = f"{where}: space.{name}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise UserError(
            f"{where} must be one distribution of {DISTRIBUTIONS}, "
            f"e.g. {{quniform: [64, 256, 16]}}; got {spec!r}"
        )
    ((kind, args),) = spec.items()
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: choice needs a non-empty list of options, got {args!r}")
        return
    count = 3 if kind.startswith("q") else 2
    form = "[low, high, q]" if count == 3 else "[low, high]"
    if not isinstance(args, list) or len(args) != count or not all(_is_number(a) for a in args):
        raise UserError(f"{where}: {kind} needs {count} numbers {form}, got {args!r}")
    if not args[0] < args[1]:
        raise UserError(f"{where}: {kind} needs low < high, got {args[0]!r} and {args[1]!r}")
    if count == 3 and not args[2] > 0:
        raise UserError(f"{where}: {kind} needs a step q > 0, got {args[2]!r}")


def extremes(spec: dict) -> list:
    """The smallest and largest values a distribution gives (every option of a choice),
    as hyperopt draws them: ``loguniform`` takes log bounds, ``q*`` rounds to steps."""
    ((kind, args),) = spec.items()
    if kind == "choice":
        return list(args)
    low, high = (math.exp(a) for a in args[:2]) if "log" in kind else args[:2]
    if kind.startswith("q"):
        q = args[2]
        low, high = round(low / q) * q, round(high / q) * q
    return [low, high]


def _check_mapping(raw: dict, name: str, where: str) -> None:
    if name in raw and not isinstance(raw[name], dict):
        raise UserError(f"{where}: {name} must be a mapping, got {raw[name]!r:.80}")


def load_config(path) -> ExperimentConfig:
    """Read a YAML experiment config and check all of it (see the module's docstring)."""
    path = pathlib.Path(path)
    raw = _read_config_file(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    allowed = set(ExperimentConfig.__dataclass_fields__) - {"source", "tuned"}
    unknown = set(raw) - allowed
    missing = {"dataset", "model", "protocol", "fixed", "space"} - set(raw)
    if unknown or missing:
        raise UserError(
            f"{path}: unknown keys {sorted(map(str, unknown))}, missing keys {sorted(missing)}"
        )
    if (
        raw["dataset"] not in datasets.DATASETS
    ):  # the registry itself: a dataset added at run time counts
        raise UserError(
            f"{path}: unknown dataset {raw['dataset']!r}; choose from {tuple(datasets.DATASETS)}"
        )
    check_plain_name(raw["model"], f"{path}: model")
    check_protocol(raw["protocol"], str(path))
    for name in ("fixed", "space", "best", "published", "data"):
        _check_mapping(raw, name, str(path))
    for name, value in (raw.get("published") or {}).items():
        if not _is_number(value):
            raise UserError(f"{path}: published.{name} must be a number, got {value!r}")
    for name, spec in raw["space"].items():
        _check_distribution(name, spec, str(path))
    stopping = raw.get("early_stopping")
    if stopping is not None and (
        not isinstance(stopping, dict)
        or set(stopping) != {"every", "patience"}
        or not all(_is_int(v) and v >= 1 for v in stopping.values())
    ):
        raise UserError(
            f"{path}: early_stopping needs positive integers 'every' and 'patience', got "
            f"{stopping!r}"
        )
    _check_metrics(raw, path)
    raw = {
        k: ({} if v is None and k in ("best", "published", "data") else v) for k, v in raw.items()
    }
    config = ExperimentConfig(**raw, source=str(path))
    if config.best:
        check_model_arguments(model_arguments(config, config.best), f"{path}: fixed and best")
    if config.space:
        _check_space_bounds(config, path)
    return config


def _check_metrics(raw: dict, path) -> None:
    names = raw.get("metrics", [])
    if not isinstance(names, list):
        raise UserError(f"{path}: metrics must be a list of metric names, got {names!r:.80}")
    for where, name in [
        ("objective", raw.get("objective", "mrr")),
        *(("metrics", n) for n in names),
    ]:
        try:
            evaluation.parse_metric(name)
        except ValueError as error:
            raise UserError(f"{path}: {where}: {error}") from error


def _check_space_bounds(config: ExperimentConfig, path) -> None:
    """Each distribution at its extremes, the others at one sampled point, through the
    model's own checks."""
    try:
        space = build_space(config.space)
        point = sample(space, rng=np.random.default_rng(0))
    except (TypeError, ValueError) as error:
        raise UserError(f"{path}: bad search space ({error})") from error
    check_model_arguments(
        model_arguments(config, point), f"{path}: fixed and a point of space {point}"
    )
    for name, spec in config.space.items():
        for value in extremes(spec):
            kind = next(iter(spec))
            where = f"{path}: space.{name} can give {value!r} ({kind} {spec[kind]})"
            check_model_arguments(model_arguments(config, {**point, name: value}), where)


def check_model_arguments(arguments: dict, where: str) -> None:
    """Refuse what ImplicitSequenceModel would refuse (an unknown or misspelt name, a bad
    value) before any data is loaded or any run recorded; ``where`` says whence they came."""
    accepted = set(inspect.signature(ImplicitSequenceModel).parameters) - set(RUNNER_SETS)
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        raise UserError(
            f"{where}: ImplicitSequenceModel takes no {unknown} here; "
            f"its arguments are {sorted(accepted)}"
        )
    try:
        ImplicitSequenceModel(**arguments, device="cpu")  # checks the values; builds no network
        representation = arguments.get("representation", "pooling")
        if isinstance(representation, str):  # the representation's own options, on a tiny net
            with torch.random.fork_rng(devices=[]):
                REPRESENTATIONS[representation](
                    2,
                    int(arguments.get("embedding_dim", 32)),
                    **arguments.get("representation_kwargs") or {},
                )
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: {error}") from error


def config_path(dataset: str, model: str, config_dir=None) -> pathlib.Path:
    """``configs/<dataset>_<model>.yaml`` (or in ``config_dir``)."""
    check_plain_name(model, "--model")
    folder = pathlib.Path(config_dir) if config_dir else CONFIG_DIR
    path = folder / f"{dataset}_{model}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.yaml"))
        raise UserError(f"no config {path.name} in {folder}; available: {available}")
    return path


def model_arguments(config: ExperimentConfig, params: dict) -> dict:
    """ImplicitSequenceModel arguments: ``fixed`` updated with ``params``. A dotted name
    such as ``representation_kwargs.num_components`` sets a nested argument; values of
    quantised distributions with a whole step, and the known integer arguments, become
    ints."""
    arguments = json.loads(json.dumps(config.fixed))  # a deep copy
    for name, value in params.items():
        spec = config.space.get(name, {})
        ((kind, args),) = spec.items() if spec else (("", ()),)
        whole_step = kind in ("quniform", "qloguniform") and float(args[-1]).is_integer()
        if (whole_step or name.split(".")[-1] in INTEGER_ARGUMENTS) and _is_number(value):
            value = int(round(value))
        target = arguments
        *outer, last = name.split(".")
        for key in outer:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise UserError(
                    f"{config.source}: {name} sets a field inside {key!r}, which is not a mapping"
                )
        target[last] = value
    return arguments


def build_space(space: dict) -> dict:
    """hyperopt expressions from the config's ``space`` (loguniform takes log bounds)."""
    expressions = {}
    for name, spec in space.items():
        ((kind, args),) = spec.items()
        expressions[name] = (
            getattr(hp, kind)(name, args) if kind == "choice" else getattr(hp, kind)(name, *args)
        )
    return expressions
