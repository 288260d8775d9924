"""The experiment layer under its old name: every name here lives in :mod:`mlstm4reco.study`
(config, protocol, trial, records, tpe, runners) and is re-exported for code that imports
``mlstm4reco.search``. New code imports from the study's modules."""

from mlstm4reco.study.config import (  # noqa: F401
    CONFIG_DIR,
    DATASETS,
    DISTRIBUTIONS,
    INTEGER_ARGUMENTS,
    PROTOCOL_KEYS,
    RUNNER_SETS,
    ExperimentConfig,
    build_space,
    check_model_arguments,
    check_plain_name,
    config_path,
    load_config,
    model_arguments,
    read_yaml,
)
from mlstm4reco.study.errors import UserError  # noqa: F401
from mlstm4reco.study.protocol import load_dataset, load_splits, protocol_split  # noqa: F401
from mlstm4reco.study.records import RecordFile, _jsonable, ensure_results_folder  # noqa: F401
from mlstm4reco.study.runners import (  # noqa: F401
    check_seed,
    check_trials,
    parse_overrides,
    plain_label,
    results_folder,
    run_curve,
    run_reproduce,
    run_search,
    set_threads,
)
from mlstm4reco.study.tpe import suggest  # noqa: F401
from mlstm4reco.study.trial import (  # noqa: F401
    EarlyStopping,
    provenance,
    run_guarded,
    train_and_evaluate,
    versions,
)
