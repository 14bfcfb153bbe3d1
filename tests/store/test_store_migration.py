"""A store written by an earlier ibdb opens, checks clean and estimates with this one.

tests/fixtures/legacy_store/e68e8bb.duckdb.gz was written by ibdb at main e68e8bb (store version 4)
from the two specs beside it: gp spaces (rbf, matern with a median bandwidth and an amplitude,
ntk), an mlp space, and a splitting block with two repeats. The test copies it, re-plans the
specs (their run ids must be the stored ones: nothing to sample), recomputes every stored
estimate and compares it with the stored value (the estimators are deterministic, seeded)."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from ibdb.cli import main

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_store"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    db = tmp_path / "legacy.duckdb"
    with gzip.open(DATA / "e68e8bb.duckdb.gz", "rb") as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    for spec in ("legacy.yaml", "legacy_split.yaml"):
        shutil.copy(DATA / spec, tmp_path / spec)
    return db


def _estimates(db: Path) -> dict[tuple, tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT run_id, loss, method, eps, bits, lower_bits, upper_bits, "
                           "bound, n FROM estimates").fetchall()
    return {r[:4]: r[4:] for r in rows}


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9,
                                                                 abs_tol=1e-12)
    return a == b


def test_legacy_store_replans_to_nothing(legacy: Path) -> None:
    runner = CliRunner()
    with duckdb.connect(str(legacy), read_only=True) as con:
        stored = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
    assert len(stored) == 5
    planned: set[str] = set()
    for spec in ("legacy.yaml", "legacy_split.yaml"):
        out = runner.invoke(main, ["--db", str(legacy), "plan", str(legacy.parent / spec)])
        assert out.exit_code == 0, out.output
        assert "0 of" in out.output.splitlines()[-1], out.output
        planned |= {line.split()[0] for line in out.output.splitlines()[:-1]}
    assert planned == stored


def test_legacy_store_estimates_as_before(legacy: Path) -> None:
    before = _estimates(legacy)
    assert {k[2] for k in before} >= {"exact", "ncx2", "empirical", "bound", "splitting"}
    runner = CliRunner()
    out = runner.invoke(main, ["--db", str(legacy), "estimate", "--no-refresh"])
    assert out.exit_code == 0, out.output
    after = _estimates(legacy)
    assert set(after) == set(before)
    changed = [k for k in before
               if not all(_close(a, b) for a, b in zip(before[k], after[k], strict=True))]
    assert not changed, [(k, before[k], after[k]) for k in changed[:5]]


def test_legacy_store_checks_clean_and_answers_sql(legacy: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["--db", str(legacy), "--shards", str(legacy.parent / "none"),
                               "sql", "SELECT count(*) AS n FROM ib_estimates WHERE stale"])
    assert out.exit_code == 0, out.output
    assert out.output.split()[2] == "0"
    out = runner.invoke(main, ["--db", str(legacy), "sql",
                               "SELECT ib_fit([0.1, 0.2, 0.3], 0.2, 'empirical').n AS n"])
    assert out.exit_code == 0, out.output
    assert out.output.split()[2] == "3"
