"""Configs are checked whole when read: types, ranges, the space from its bounds, plain
names, no YAML aliases; every mistake is one line of run.py, before any data is loaded."""

import sys

import pytest
import yaml
from conftest import ROOT
from test_experiments import tiny_config

from mlstm4reco import search
from mlstm4reco.study import protocol, runners

sys.path.insert(0, str(ROOT / "experiments"))
import run  # noqa: E402


def edited(tmp_path, **changes):
    path = tiny_config(tmp_path / "configs")
    raw = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        target = raw
        *outer, last = dotted.split("__")
        for key in outer:
            target = target[key]
        target[last] = value
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(protocol=5), r"protocol must be a mapping, got 5"),
        (dict(space=[1, 2]), r"space must be a mapping, got \[1, 2\]"),
        (dict(fixed="lstm"), r"fixed must be a mapping"),
        (
            dict(space__n_iter={"quniform": [1, 3, 0]}),
            r"space.n_iter: quniform needs a step q > 0, got 0",
        ),
        (
            dict(space__n_iter={"quniform": [1, 3]}),
            r"space.n_iter: quniform needs 3 numbers \[low, high, q\]",
        ),
        (dict(space__n_iter={"uniform": ["a", 3]}), r"space.n_iter: uniform needs 2 numbers"),
        (dict(space__loss={"choice": []}), r"space.loss: choice needs a non-empty list"),
        (
            dict(protocol__test_percentage=1.5),
            r"protocol.test_percentage must be a number in \(0, 1\), got 1.5",
        ),
        (
            dict(protocol__valid_percentage=0),
            r"protocol.valid_percentage must be a number in \(0, 1\), got 0",
        ),
        (
            dict(protocol__max_sequence_length=0),
            r"protocol.max_sequence_length must be a positive integer, got 0",
        ),
        (
            dict(protocol__min_sequence_length=50),
            r"protocol.min_sequence_length must be an integer in \[1, 20\]",
        ),
        (dict(protocol__step_size=2.5), r"protocol.step_size must be a positive integer, got 2.5"),
        (
            dict(protocol__seed="abc"),
            r"protocol.seed must be an integer in \[0, 2\*\*32\), got 'abc'",
        ),
        (dict(protocol__seed=True), r"protocol.seed must be an integer"),
        (
            dict(protocol__exclude_preceding="yes please"),
            r"protocol.exclude_preceding must be true or false",
        ),
        (
            dict(early_stopping={"every": 2, "patience": 0.5}),
            r"early_stopping needs positive integers",
        ),
        (
            dict(published={"valid_mrr": "high"}),
            r"published.valid_mrr must be a number, got 'high'",
        ),
        (
            dict(objective="precision@10"),
            r"objective: unknown metric 'precision@10'; the metrics are mrr, hit_rate@k",
        ),
        (dict(objective="ndcg"), r"objective: metric 'ndcg' needs a cutoff, e.g. ndcg@10"),
        (
            dict(metrics=["mrr", "hit_rate@0"]),
            r"metrics: metric 'hit_rate@0': the cutoff after '@' must be",
        ),
        (dict(metrics="ndcg@10"), r"metrics must be a list of metric names, got 'ndcg@10'"),
        # a space that can propose a bad value is refused from its bounds, whatever point is sampled
        (
            dict(space__learning_rate={"uniform": [-0.01, 0.1]}),
            r"space.learning_rate can give -0.01 .*learning_rate must be a positive number, got "
            r"-0.01",
        ),
        (
            dict(space__batch_size={"quniform": [0, 128, 64]}),
            r"space.batch_size can give 0 .*batch_size must be a positive integer, got 0",
        ),
        (
            dict(space__l2={"choice": [0.0, -1.0]}),
            r"space.l2 can give -1.0 .*l2 must be a non-negative number",
        ),
        (
            dict(**{"space__representation_kwargs.dropout": {"uniform": [0.0, 1.5]}}),
            r"space.representation_kwargs.dropout can give 1.5 .*dropout must be in \[0, 1\), got "
            r"1.5",
        ),
        (dict(model="../../../x"), r"model must be a plain name .*got '\.\./\.\./\.\./x'"),
        (dict(model="/etc/x"), r"model must be a plain name"),
        (dict(model="a..b"), r"model must be a plain name"),
        (dict(model=7), r"model must be a plain name .*got 7"),
    ],
)
def test_config_mistakes_are_refused_when_read(tmp_path, changes, message):
    path = edited(tmp_path, **changes)
    with pytest.raises(search.UserError, match=message):
        search.load_config(path)


def test_config_mistakes_are_one_line_of_run_py_before_any_data(tmp_path, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded for a bad config")

    monkeypatch.setattr(runners, "load_splits", no_data)
    monkeypatch.setattr(protocol, "load_dataset", no_data)
    for changes in (
        dict(protocol__seed="abc"),
        dict(space__n_iter={"quniform": [1, 3, 0]}),
        dict(model="../../../x"),
    ):
        path = edited(tmp_path / str(len(changes)), **changes)
        code = run.main(
            [
                "--dataset",
                "synthetic",
                "--model",
                "mlstm",
                "--config",
                str(path),
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        error = capsys.readouterr().err
        assert code == 2 and error.startswith("run.py: error: ") and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


def test_a_config_model_never_names_a_path_outside_out(tmp_path, capsys):
    """`model: ../../../x` used to write trials.json and the report outside --out."""
    path = edited(tmp_path, model="../escape")
    code = run.main(
        [
            "--dataset",
            "synthetic",
            "--model",
            "mlstm",
            "--trials",
            "1",
            "--config",
            str(path),
            "--out",
            str(tmp_path / "out" / "inner"),
            "--quiet",
        ]
    )
    assert code == 2 and "must be a plain name" in capsys.readouterr().err
    assert not list(tmp_path.rglob("trials.json"))
    with pytest.raises(search.UserError, match="plain name"):
        search.results_folder(tmp_path, "..")
    assert (
        search.plain_label("ml1m_mlstm_representation=a/../b_seed0")
        == "ml1m_mlstm_representation=a---b_seed0"
    )


def test_non_utf8_and_oversized_configs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"dataset: synthetic\nmodel: caf\xe9\n")
    with pytest.raises(search.UserError, match=r"bad.yaml, line 2: not UTF-8 text"):
        search.load_config(bad)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(
        search.UserError, match=r"big.yaml: 1,048,579 bytes, more than a config's 1,048,576"
    ):
        search.load_config(big)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """A billion-laughs config (seven levels of ten aliases; gigabytes once expanded) is
    refused at its first alias."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 2000
    with pytest.raises(
        search.UserError, match=r"bomb.yaml: not valid YAML .*aliases \(\*name\) are not accepted"
    ):
        search.load_config(bomb)
    with pytest.raises(search.UserError, match=r"aliases"):
        search.parse_overrides(["n_iter=[&a [1, 1], *a]"])


def test_shipped_configs_pass_the_schema():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = search.load_config(path)
        assert config.name == path.stem
