"""Spec loading: strict validation with messages naming file, field and value."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from ibdb.errors import SpecError
from ibdb.specs import experiment_json_schema, load_experiment

from conftest import spec_dict, write_spec


def test_valid_spec_expands_to_runs(tmp_path):
    spec = spec_dict()
    spec["spaces"].append({"name": "gp2", "kind": "gp", "bandwidth": "median"})
    exp = load_experiment(write_spec(tmp_path, spec))
    runs = exp.runs()
    assert [r.label for r in runs] == ["tiny/toy/gp/b", "tiny/toy/gp2/b"]
    assert runs[1].space.bandwidth == "median"
    assert exp.tasks[0].eps == [0.3, 0.2, 0.1]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["tasks"][0].update(colour="red"), "tasks.0.colour: Extra inputs are not "
                                                       "permitted (got 'red')"),
        (lambda s: s["budgets"][0].update(n_hypotheses=-5), "budgets.0.n_hypotheses: Input "
                                                            "should be greater than 0 (got -5)"),
        (lambda s: s["tasks"][0].update(eps=[0.1, 0.0]), "tasks.0.eps.1: Input should be "
                                                         "greater than 0 (got 0.0)"),
        (lambda s: s["tasks"][0].update(n_train="30"), "tasks.0.n_train: Input should be a "
                                                       "valid integer (got '30')"),
        (lambda s: s["spaces"][0].update(bandwidth="mean"), "spaces.0.bandwidth"),
        (lambda s: s["tasks"].append(dict(s["tasks"][0])), "tasks names must be unique; "
                                                            "repeated: toy"),
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
