"""Run ids are pinned: every example spec's runs keep the ids they had when the ids were first
recorded (tests/data/example_run_ids.json, written by ibdb at main e68e8bb). A change to a spec
model, a task source's fingerprint or the identity rule that moves any of them fails here; a
deliberate change needs a migration of stored runs (docs/decisions/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ibdb.api import Ibdb

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "tests" / "data" / "example_run_ids.json").read_text())
NEEDS = {"mnist1d_kernels.yaml": "mnist1d", "mnist1d_spaces.yaml": "mnist1d"}


def test_every_example_spec_is_pinned() -> None:
    assert sorted(GOLDEN) == sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_example_run_ids_unchanged(name: str, tmp_path: Path) -> None:
    package = NEEDS.get(name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{name} needs the {package} package")
    _, runs = Ibdb(tmp_path / "unused.duckdb").validate(ROOT / "examples" / name)
    assert dict(runs) == GOLDEN[name]
