"""Spec loading: strict validation with messages naming file, field and value."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from ibdb.core.errors import SpecError
from ibdb.spec.file import experiment_json_schema, load_experiment

from conftest import spec_dict, write_spec


def test_valid_spec_expands_to_runs(tmp_path):
    spec = spec_dict()
    spec["spaces"].append({"name": "gp2", "kind": "gp", "bandwidth": "median"})
    exp = load_experiment(write_spec(tmp_path, spec))
    runs = exp.runs()
    assert [r.label for r in runs] == ["tiny/toy/gp/b", "tiny/toy/gp2/b"]
    assert runs[1].space.kernel.bandwidth == "median"
    assert exp.tasks[0].eps == [0.3, 0.2, 0.1]


def _net(kind="mlp", **kw):
    arch = {"width": 16, "depth": 1} if kind == "mlp" else {"channels": 4, "layers": 2}
    space = {"name": "net", "kind": kind, **arch,
             "optimizer": {"kind": "adam", "lr": 1e-3, "epochs": 5, "batch_size": 8}}
    for key, value in kw.items():
        target = space["optimizer"] if key in {"lr", "batch_size", "momentum", "betas"} else space
        target[key] = value
    return space


def _set_space(spec, space):
    spec["spaces"][0] = space


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: _set_space(s, _net(width=0)), "spaces.0.width: Input should be greater than 0 "
                                                 "(got 0)"),
        (lambda s: _set_space(s, _net(depth=-1)), "spaces.0.depth: Input should be greater than "
                                                  "or equal to 0 (got -1)"),
        (lambda s: _set_space(s, _net(batch_size=0)), "spaces.0.optimizer.batch_size: Input "
                                                      "should be greater than 0 (got 0)"),
        (lambda s: _set_space(s, _net(batch_size="all")), "spaces.0.optimizer.batch_size: Input "
                                                          "should be 'full' (got 'all')"),
        (lambda s: _set_space(s, _net(lr=-0.1)), "spaces.0.optimizer.lr: Input should be "
                                                 "greater than 0 (got -0.1)"),
        (lambda s: _set_space(s, _net(momentum=0.9)), "spaces.0.optimizer.momentum: Extra "
                                                      "inputs are not permitted (got 0.9)"),
        (lambda s: _set_space(s, _net(activation="swish")), "spaces.0.activation: Input should "
                                                            "be 'relu', 'tanh', 'gelu' or "
                                                            "'sigmoid' (got 'swish')"),
        (lambda s: _set_space(s, _net("cnn", kernel_size=4)), "spaces.0.kernel_size: Value "
                                                              "error, kernel_size must be odd"),
        (lambda s: _set_space(s, _net(kind="svm")), "spaces.0.kind: Input should be one of gp, "
                                                    "mlp, cnn, torch (got 'svm')"),
        (lambda s: _set_space(s, _net(fit={"criterion": "train_mse"})),
         "spaces.0.fit: Value error, criterion 'train_mse' needs train_mse_max"),
        (lambda s: _set_space(s, _net(fit={"train_mse_max": 0.1})),
         "train_mse_max = 0.1 applies only to criterion 'train_mse'"),
        (lambda s: s["tasks"][0].update(colour="red"), "tasks.0.colour: Extra inputs are not "
                                                       "permitted (got 'red')"),
        (lambda s: s["budgets"][0].update(n_hypotheses=-5), "budgets.0.n_hypotheses: Input "
                                                            "should be greater than 0 (got -5)"),
        (lambda s: s["tasks"][0].update(eps=[0.1, 0.0]), "tasks.0.eps.1: Input should be "
                                                         "greater than 0 (got 0.0)"),
        (lambda s: s["tasks"][0].update(n_train="30"), "tasks.0.n_train: Input should be a "
                                                       "valid integer (got '30')"),
        (lambda s: s["spaces"][0].update(bandwidth="mean"), "spaces.0.kernel.bandwidth"),
        (lambda s: s["tasks"].append(dict(s["tasks"][0])), "tasks names must be unique; "
                                                            "repeated: toy"),
        (lambda s: s["tasks"][0].update(source={"kind": "imagenet"}),
         "tasks.0.source.kind: Input should be one of digits, npz, mnist, fashion-mnist, "
         "cifar10, parquet, synthetic, pendulum, omniglot, mnist1d (got 'imagenet')"),
        (lambda s: s["tasks"][0].update(source={"kind": "mnist"}),
         "tasks.0.source.root: Field required"),
        (lambda s: s["tasks"][0].update(source={"kind": "synthetic", "intrinsic_dim": 5,
                                                "ambient_dim": 3}),
         "tasks.0.source: Value error, intrinsic_dim = 5 exceeds ambient_dim = 3"),
        (lambda s: s["tasks"][0].update(source={"kind": "pendulum", "n_bins": 1}),
         "tasks.0.source.n_bins: Input should be greater than or equal to 2 (got 1)"),
        (lambda s: s["tasks"][0].update(preprocess={"pca_dim": 0}),
         "tasks.0.preprocess.pca_dim: Input should be greater than 0 (got 0)"),
        (lambda s: s["tasks"][0].update(preprocess={"classes": [1, 2, 1]}),
         "tasks.0.preprocess.classes: Value error, classes must be distinct; repeated: [1]"),
        (lambda s: s["tasks"][0].update(preprocess={"scale": "zscore"}),
         "tasks.0.preprocess.scale: Input should be 'none', 'standardize' or 'minmax' "
         "(got 'zscore')"),
        (lambda s: s["spaces"][0].update(kernel="matern"),
         "spaces.0.kernel.nu: Field required"),
        (lambda s: s["spaces"][0].update(kernel={"kind": "matern", "bandwidth": 1.0}),
         "spaces.0.kernel.nu: Field required"),
        (lambda s: s["spaces"][0].update(kernel="matern", nu=2),
         "spaces.0.kernel.nu: Input should be 0.5, 1.5 or 2.5 (got 2)"),
        (lambda s: s["spaces"][0].update(bias_variance=1.0),
         "spaces.0: Value error, bias_variance = 1.0 applies to kernel 'arccos', not to 'rbf'"),
        (lambda s: s["spaces"][0].update(kernel="poly"),
         "spaces.0.kernel: Input should be one of rbf, laplace, matern, arccos, nngp, ntk, "
         "empirical_nngp, empirical_ntk (got 'poly')"),
        (lambda s: s["spaces"][0].update(kernel={"kind": "poly"}),
         "spaces.0.kernel.kind: Input should be one of rbf, laplace, matern, arccos, nngp, "
         "ntk, empirical_nngp, empirical_ntk (got 'poly')"),
    ],
)
def test_bad_fields_are_named_with_their_value(tmp_path, mutate, expected):
    spec = spec_dict()
    mutate(spec)
    path = write_spec(tmp_path, spec)
    with pytest.raises(SpecError) as err:
        load_experiment(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_network_spaces_parse_with_defaults(tmp_path):
    spec = spec_dict()
    spec["spaces"] = [
        {"name": "gp-no-kind", "bandwidth": 2.0},  # a space without kind is a gp space
        _net(betas=[0.8, 0.99]),
        _net("cnn", name="conv", pooling="avg", batch_size="full"),
    ]
    gp, mlp, cnn = (run.space for run in load_experiment(write_spec(tmp_path, spec)).runs())
    assert gp.kind == "gp" and gp.kernel.bandwidth == 2.0
    assert (mlp.kind, mlp.width, mlp.depth, mlp.activation, mlp.init_scale) == (
        "mlp", 16, 1, "relu", 1.0)
    assert mlp.optimizer.kind == "adam" and mlp.optimizer.betas == [0.8, 0.99]
    assert mlp.optimizer.weight_decay == 0.0
    assert (mlp.fit.criterion, mlp.fit.stop_when_fit, mlp.fit.train_mse_max) == (
        "train_accuracy", True, None)
    assert (cnn.kernel_size, cnn.pooling, cnn.optimizer.batch_size) == (3, "avg", "full")


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_experiment(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntasks: [\n  - oops: }\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML at line \d"):
        load_experiment(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_experiment(path)


def test_committed_json_schema_matches_the_models():
    committed = resources.files("ibdb.schemas").joinpath("experiment.schema.json")
    assert json.loads(committed.read_text()) == experiment_json_schema(), (
        "schemas/experiment.schema.json is stale: run `ibdb schema` and commit the result")


def test_examples_validate():
    folder = resources.files("ibdb.examples")
    names = [e.name for e in folder.iterdir() if e.name.endswith(".yaml")]
    assert "quickstart.yaml" in names
    for name in names:
        with resources.as_file(folder.joinpath(name)) as path:
            assert load_experiment(path).runs()


def _splitting(spec, **kw):
    spec["budgets"][0]["splitting"] = {"target_bits": 40, **kw}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"particles": 0}, "budgets.0.splitting.particles: Input should be greater than 0 (got 0)"),
        ({"p0": 0.0}, "budgets.0.splitting.p0: Input should be greater than 0 (got 0.0)"),
        ({"p0": 1.0}, "budgets.0.splitting.p0: Input should be less than 1 (got 1.0)"),
        ({"p0": "0.1"}, "budgets.0.splitting.p0: Input should be a valid number (got '0.1')"),
        ({"p0": 0.001, "particles": 100},
         "budgets.0.splitting: Value error, p0 * particles = 0.001 * 100 rounds to 0 seeds; it "
         "must be between 1 and particles - 1"),
        ({"p0": 0.999, "particles": 100},
         "p0 * particles = 0.999 * 100 rounds to 100 seeds"),
        ({"rho": 1.0}, "budgets.0.splitting.rho: Input should be less than 1 (got 1.0)"),
        ({"rho": -0.1}, "budgets.0.splitting.rho: Input should be greater than or equal to 0 "
                        "(got -0.1)"),
        ({"target_acceptance": 0.0}, "budgets.0.splitting.target_acceptance: Input should be "
                                     "greater than 0 (got 0.0)"),
        ({"target_acceptance": 1.0}, "budgets.0.splitting.target_acceptance: Input should be "
                                     "less than 1 (got 1.0)"),
        ({"target_bits": None},
         "budgets.0.splitting: Value error, splitting needs target_bits (a depth in bits, e.g. "
         "40) or target_eps (a test MSE)"),
        ({"target_bits": 0}, "budgets.0.splitting.target_bits: Input should be greater than 0 "
                             "(got 0)"),
        ({"target_eps": -0.5}, "budgets.0.splitting.target_eps: Input should be greater than 0 "
                               "(got -0.5)"),
        ({"target_eps": float("inf")}, "budgets.0.splitting.target_eps: Input should be a finite "
                                       "number (got inf)"),
        ({"max_evaluations": 500},
         "budgets.0.splitting: Value error, max_evaluations = 500 is below particles = 1000"),
        ({"max_evaluations": 0}, "budgets.0.splitting.max_evaluations: Input should be greater "
                                 "than 0 (got 0)"),
        ({"repeats": 0}, "budgets.0.splitting.repeats: Input should be greater than 0 (got 0)"),
        ({"max_levels": 0}, "budgets.0.splitting.max_levels: Input should be greater than 0 "
                            "(got 0)"),
        ({"levels": 5}, "budgets.0.splitting.levels: Extra inputs are not permitted (got 5)"),
    ],
)
def test_bad_splitting_fields_are_named_with_their_value(tmp_path, kw, expected):
    spec = spec_dict()
    _splitting(spec, **kw)
    path = write_spec(tmp_path, spec)
    with pytest.raises(SpecError) as err:
        load_experiment(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_splitting_parses_with_defaults_and_gives_its_settings(tmp_path):
    spec = spec_dict()
    _splitting(spec, target_bits=None, target_eps=0.05, repeats=3)
    budget = load_experiment(write_spec(tmp_path, spec)).budgets[0]
    split = budget.splitting
    assert (split.particles, split.p0, split.rho, split.target_acceptance) == (1000, 0.1, 0.9, 0.4)
    assert (split.target_bits, split.target_eps, split.max_evaluations, split.repeats,
            split.max_levels) == (None, 0.05, 1_000_000, 3, 200)
    from ibdb.run.splitting import SplittingSettings

    settings = SplittingSettings.from_spec(split, seed=7)
    assert (settings.n_particles, settings.p0, settings.rho, settings.target_acceptance,
            settings.target_eps, settings.target_bits, settings.max_evaluations,
            settings.max_levels, settings.seed) == (1000, 0.1, 0.9, 0.4, 0.05, None, 1_000_000,
                                                    200, 7)
    assert settings.n_seeds == 100
    assert budget.model_dump()["splitting"]["repeats"] == 3


def test_budget_identity_is_its_seed(tmp_path):
    budget = load_experiment(write_spec(tmp_path, spec_dict())).budgets[0]
    assert budget.splitting is None
    assert budget.identity() == {"seed": 0}
    assert type(budget).model_validate(budget.model_dump(mode="json")) == budget


def test_splitting_leaves_the_run_id_unchanged(toy_spec):
    from ibdb.api import Ibdb

    api = Ibdb(toy_spec.parent / "store.duckdb")
    _, without = api.validate(toy_spec)
    spec = spec_dict()
    _splitting(spec, particles=500, repeats=2)
    _, with_splitting = api.validate(write_spec(toy_spec.parent, spec, "split.yaml"))
    assert with_splitting == without


@pytest.mark.parametrize("example", sorted(
    (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_spec_validates(example):
    """The specs the README and docs/findings.md point to parse, load their data and plan."""
    from ibdb.api import Ibdb

    _, runs = Ibdb(":memory:").validate(example)
    assert runs and all(len(run_id) == 16 for _, run_id in runs)
    # every example states its run time, measured on 2 CPU cores (issue 14); the README's
    # examples table lists the same number
    text = example.read_text(encoding="utf-8")
    stated = re.search(r"#[^\n]*?(\d[\w +.]*?) on 2 CPU cores, measured", text)
    assert stated, f"{example.name}: state its run time as '# <time> on 2 CPU cores, measured'"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    row = next((line for line in readme.splitlines() if line.startswith(f"| `{example.stem}`")),
               None)
    assert row is not None, f"README's examples table has no row for {example.stem}"
    assert row.rstrip(" |").rsplit("|", 1)[1].strip() == stated.group(1), (row, stated.group(1))


def test_a_budget_seed_past_two_to_the_63_is_refused_by_name(tmp_path):
    """Hypothesis seeds hash the run seed as a uint64: 2**64 used to overflow deep in the plan
    (a traceback); the spec now says which field and what range."""
    from click.testing import CliRunner

    from ibdb.cli import main

    from conftest import make_npz, spec_dict, write_spec

    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(seed=2**64)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "s.duckdb"), "validate",
                                       str(write_spec(tmp_path, spec))])
    assert result.exit_code == 2 and "seed" in result.output and "less than" in result.output
    assert "Traceback" not in result.output
    spec["budgets"][0]["seed"] = 2**63 - 1
    ok = CliRunner().invoke(main, ["--db", str(tmp_path / "s.duckdb"), "validate",
                                   str(write_spec(tmp_path, spec))])
    assert ok.exit_code == 0, ok.output
