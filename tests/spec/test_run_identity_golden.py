"""Run ids are pinned: every example spec's runs keep the ids they had when the ids were first
recorded (tests/fixtures/example_run_ids.json, written by ibdb at main e68e8bb; the six runs of
sweep_n_train_shared.yaml re-recorded when test_set entered the identity). A change to a spec
model, a task source's fingerprint or the identity rule that moves any of them fails here; a
deliberate change needs a migration of stored runs or a decision record (docs/decisions/).
Below: which fields define a run and which are labels (ibdb.spec.identity)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ibdb.api import Ibdb

from conftest import write_spec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((ROOT / "tests" / "fixtures" / "example_run_ids.json").read_text())
NEEDS = {"mnist1d_kernels.yaml": "mnist1d", "mnist1d_spaces.yaml": "mnist1d",
         "architectures_mnist1d.yaml": "mnist1d", "architectures_mnist1d_kernels.yaml": "mnist1d"}


def test_every_example_spec_is_pinned() -> None:
    assert sorted(GOLDEN) == sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_example_run_ids_unchanged(name: str, tmp_path: Path) -> None:
    package = NEEDS.get(name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{name} needs the {package} package")
    _, runs = Ibdb(tmp_path / "unused.duckdb").validate(ROOT / "examples" / name)
    assert dict(runs) == GOLDEN[name]


# -- what enters the identity, and what does not ----------------------------------------------

BASE = {
    "name": "identity",
    "tasks": [{"name": "t", "source": {"kind": "digits"}, "n_train": 40, "n_test": 30,
               "eps": [0.5]}],
    "spaces": [{"name": "s", "kind": "gp", "kernel": {"kind": "rbf", "bandwidth": 1.0}}],
    "budgets": [{"name": "b", "n_hypotheses": 100}],
}


def _run_id(tmp_path: Path, **changes: dict) -> str:
    spec = json.loads(json.dumps(BASE))
    for part, fields in changes.items():
        spec[part][0].update(fields)
    path = write_spec(tmp_path, spec, name=f"spec{len(list(tmp_path.iterdir()))}.yaml")
    (_, run_id), = Ibdb(tmp_path / "unused.duckdb").validate(path)[1]
    return run_id


# labels and counts: another name, eps, budget size or chunking is the same run (extended)
LABELS = [
    {"tasks": {"name": "other"}}, {"tasks": {"eps": [0.1, 0.2]}},
    {"spaces": {"name": "other"}},
    {"budgets": {"name": "other"}}, {"budgets": {"n_hypotheses": 5000}},
    {"budgets": {"chunk_size": 7}},
    {"budgets": {"splitting": {"particles": 50, "target_bits": 5}}},
]
# what defines hypotheses: each gives a new run
DEFINING = [
    {"tasks": {"n_train": 41}}, {"tasks": {"n_test": 31}}, {"tasks": {"split_seed": 1}},
    {"tasks": {"test_set": "shared"}}, {"tasks": {"preprocess": {"scale": "minmax"}}},
    {"tasks": {"source": {"kind": "synthetic", "intrinsic_dim": 2, "ambient_dim": 4}}},
    {"spaces": {"kernel": {"kind": "rbf", "bandwidth": 2.0}}},
    {"spaces": {"kernel": {"kind": "laplace", "bandwidth": 1.0}}},
    {"spaces": {"amplitude": 2.0}}, {"spaces": {"jitter": 1e-6}},
    {"spaces": {"fit": {"train_mse_max": 0.1}}},
    {"budgets": {"seed": 1}},
]


def test_labels_do_not_change_the_run_id_and_defining_fields_do(tmp_path: Path) -> None:
    base = _run_id(tmp_path)
    for change in LABELS:
        assert _run_id(tmp_path, **change) == base, change
    seen = {base}
    for change in DEFINING:
        run_id = _run_id(tmp_path, **change)
        assert run_id not in seen, change
        seen.add(run_id)


def test_the_flat_and_the_nested_kernel_spellings_are_one_run(tmp_path: Path) -> None:
    nested = _run_id(tmp_path, spaces={"kernel": {"kind": "matern", "nu": 1.5,
                                                  "bandwidth": "median"}})
    flat = _run_id(tmp_path, spaces={"kernel": "matern", "nu": 1.5, "bandwidth": "median"})
    assert nested == flat
    # a default written out is the same run as one left out
    assert _run_id(tmp_path, spaces={"kernel": {"kind": "rbf"}}) == _run_id(tmp_path)
    assert _run_id(tmp_path, spaces={"amplitude": 1.0}) == _run_id(tmp_path)


def test_a_shared_test_set_is_not_the_after_train_run(tmp_path: Path) -> None:
    """Before the identity was explicit, test_set did not enter it: a task with test_set:
    shared and the same task with after_train (other test points) shared one run id. The ids
    of sweep_n_train_shared.yaml changed with the fix (docs/decisions/)."""
    after = GOLDEN["sweep_n_train.yaml"]
    shared = GOLDEN["sweep_n_train_shared.yaml"]
    assert not set(after.values()) & set(shared.values())
    assert _run_id(tmp_path, tasks={"test_set": "shared"}) != _run_id(tmp_path)
