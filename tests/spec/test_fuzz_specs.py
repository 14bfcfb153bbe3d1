"""Fuzzing `ibdb validate` with mutated specs: whatever the spec, the CLI answers with exit 0
(valid) or 2 (one paragraph saying what to fix), never 1 (a bug) or a traceback, prints under
10 KB and finishes quickly (issue "Hardening: no traceback, no hang").

Each case starts from a valid spec (tests/conftest.spec_dict over a small npz task) and applies
one to three mutations at random places of its tree: drop a key, replace a value (wrong types,
huge, negative, NaN and infinite numbers, unicode strings, deep nesting, other kinds), or add an
unknown key. The cases are derandomized, so CI runs the same N_CASES every time.
"""

from __future__ import annotations

import copy
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibdb.cli import main

from conftest import make_npz, spec_dict

N_CASES = 150
MAX_OUTPUT = 10_000
MAX_SECONDS = 5.0

KINDS = ["gp", "mlp", "cnn", "sgd", "adam", "npz", "digits", "synthetic", "pendulum", "mnist",
         "cifar10", "parquet", "omniglot", "fashion-mnist", "rbf", "nngp", "ntk", "matern",
         "train_mse", "median", "marginal_likelihood", "full", "auto", "none", "sin"]


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


WEIRD_NUMBERS = [0, -1, 1, 2, 3, 10**6, 10**9, 10**12, 10**30, 2**63 - 1, 2**63, 2**64,
                 -(2**63), 0.5, -0.0, 1e-300, 1e308, float("nan"), float("inf"), float("-inf")]
WEIRD_STRINGS = ["", " ", "ñandú", "😀" * 50, "a" * 5000, "日本語", "\u202e\u0000x", "-1",
                 "1e3", "true", "null", "../../etc/passwd", "{a: b}"]

values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.sampled_from(WEIRD_NUMBERS), st.integers(),
              st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WEIRD_STRINGS),
              st.sampled_from(KINDS), st.text(max_size=30),
              st.sampled_from([nested(10), nested(70), nested(300)])),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)

mutation = st.tuples(st.sampled_from(["drop", "replace", "add"]),
                     st.integers(min_value=0, max_value=10**6), values,
                     st.text(min_size=1, max_size=12))


def _slots(tree: Any, path: tuple = ()) -> list[tuple]:
    """Every (container path, key) slot of the spec tree, containers first (not inside what a
    mutation nested deep: the spec's own slots are the interesting ones)."""
    out: list[tuple] = []
    if len(path) > 8:
        return out
    items = tree.items() if isinstance(tree, dict) else \
        enumerate(tree) if isinstance(tree, list) else ()
    for key, child in items:
        out.append((*path, key))
        out.extend(_slots(child, (*path, key)))
    return out


def mutate(spec: dict, mutations: list[tuple]) -> Any:
    spec = copy.deepcopy(spec)
    for kind, pick, value, new_key in mutations:
        value = copy.deepcopy(value)  # (sampled values are shared between cases)
        slots = _slots(spec)
        if not slots:
            return value if kind == "replace" else spec
        where = slots[pick % len(slots)]
        parent: Any = spec
        for key in where[:-1]:
            parent = parent[key]
        key = where[-1]
        if kind == "drop":
            del parent[key]
        elif kind == "replace":
            parent[key] = value
        elif isinstance(parent, dict):
            parent[new_key] = value
        else:
            parent.append(value)
    return spec


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz")
    make_npz(path / "toy.npz")
    return path


def check_case(folder: Path, spec: Any) -> None:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["--db", str(folder / "store.duckdb"), "validate",
                                       str(path)])
    elapsed = time.perf_counter() - start
    output = result.output
    assert result.exit_code in (0, 2), (result.exit_code, output[:2000], spec)
    assert "Traceback" not in output
    assert len(output.encode()) < MAX_OUTPUT, len(output)
    assert elapsed < MAX_SECONDS, elapsed


def test_the_unmutated_spec_is_valid(folder: Path) -> None:
    result = CliRunner().invoke(main, ["--db", str(folder / "store.duckdb"), "validate",
                                       str(_write(folder, spec_dict()))])
    assert result.exit_code == 0, result.output


def _write(folder: Path, spec: Any) -> Path:
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@settings(max_examples=N_CASES, deadline=timedelta(seconds=MAX_SECONDS), derandomize=True,
          database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow,
                                                HealthCheck.data_too_large])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_specs_exit_0_or_2(folder: Path, mutations: list[tuple]) -> None:
    check_case(folder, mutate(spec_dict(), mutations))


NETWORK_SPEC = {**spec_dict(), "spaces": [
    {"name": "mlp", "kind": "mlp", "width": 16, "depth": 1,
     "optimizer": {"kind": "adam", "lr": 0.01, "epochs": 2, "batch_size": "full"}},
    {"name": "cnn", "kind": "cnn", "channels": 4, "layers": 1,
     "optimizer": {"kind": "sgd", "lr": 0.01, "epochs": 2, "batch_size": 8}}]}
SYNTHETIC_SPEC = spec_dict(source={"kind": "synthetic", "intrinsic_dim": 2, "ambient_dim": 4,
                                   "n_points": 100})


@settings(max_examples=N_CASES // 3, deadline=timedelta(seconds=MAX_SECONDS),
          derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(base=st.sampled_from([NETWORK_SPEC, SYNTHETIC_SPEC]),
       mutations=st.lists(mutation, min_size=1, max_size=2))
def test_mutated_network_and_synthetic_specs_exit_0_or_2(folder: Path, base: dict,
                                                         mutations: list[tuple]) -> None:
    check_case(folder, mutate(base, mutations))
