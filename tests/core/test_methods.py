"""The estimator registry (ibdb.core.methods): a contract over every method, and a toy method that
reaches the CLI, SQL, views and reports through its registry entry alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.core.errors import EstimateError
from ibdb.core.estimate import Estimate
from ibdb.core.methods import INPUTS, METHODS, Method, MethodRegistry
from ibdb.store.views import method_columns


@pytest.mark.parametrize("method", list(METHODS), ids=lambda m: m.name)
def test_every_method_is_a_complete_declaration(method):
    assert method.reads in INPUTS and method.version
    assert callable(method.load())  # its function exists where the entry says
    assert method.role in ("estimate", "reference", "comparison")
    assert method.density in (None, "ncx2", "spectrum")
    assert all(loss in INPUTS[method.reads].losses for loss in method.input.losses)
    if method.density:
        assert method.density_label


def test_registry_rejects_bad_entries():
    with pytest.raises(ValueError, match="lowercase"):
        Method(name="Bad Name", version="1", reads="losses", function="m:f", summary="")
    with pytest.raises(ValueError, match="sources"):
        Method(name="x", version="1", reads="labels", function="m:f", summary="")
    registry = MethodRegistry([Method(name="x", version="1", reads="losses", function="m:f",
                                      summary="")])
    with pytest.raises(ValueError, match="already"):
        registry.register(Method(name="x", version="2", reads="losses", function="m:f",
                                 summary=""))
    with pytest.raises(EstimateError, match="unknown estimation method 'y'.*x"):
        registry.get("y")


def test_method_agreement_columns_follow_the_registry():
    columns = method_columns()
    for m in METHODS:
        assert f"AS {m.name}_bits" in columns
    assert "AS empirical_is_lower_bound" in columns
    assert "AS ncx2_minus_exact" in columns and "AS bound_minus_exact" not in columns
    assert "AS ncx2_minus_splitting" in columns and "AS splitting_minus_exact" in columns
    assert "AS splitting_minus_splitting" not in columns


# -- a toy method, registered by a test: nothing else in ibdb names it -------------------------


def toy_estimates(losses: np.ndarray, eps: list[float], *, confidence: float = 0.95
                  ) -> list[Estimate]:
    """-log2 of (k + 1) / (n + 1): a smoothed empirical fraction, so never infinite."""
    x = np.asarray(losses, dtype=np.float64)
    return [Estimate(method="?", method_version="?", eps=e,
                     bits=-math.log2((np.count_nonzero(x <= e) + 1) / (x.size + 1)),
                     lower_bits=None, upper_bits=None, bound="point", n=int(x.size),
                     params={"confidence": confidence}, diagnostics={})
            for e in eps]


TOY = Method(name="toy", version="7", reads="losses", function="test_methods:toy_estimates",
             options=("confidence",), summary="a smoothed empirical fraction (test only)",
             style=("P", "-"))


def _expected(losses: np.ndarray, e: float) -> float:
    return -math.log2((np.count_nonzero(losses <= e) + 1) / (losses.size + 1))


def test_a_toy_method_needs_only_its_registry_entry(tmp_path, toy_spec):
    db = tmp_path / "toy.duckdb"
    base = ["--db", str(db), "--shards", str(tmp_path / "shards")]
    api = Ibdb(db, shards=tmp_path / "shards", device="cpu")
    api.run(toy_spec)  # the built-in defaults, before the toy exists
    with METHODS.added(TOY):
        got = CliRunner().invoke(main, [*base, "estimate", "--method", "toy", "--eps", "0.25"])
        assert got.exit_code == 0, got.output
        assert "toy (bits)" in got.output  # the CLI's table lists it
        assert "[exact|ncx2|paper|empirical|splitting|bound|toy]" in \
            CliRunner().invoke(main, [*base, "estimate", "--help"]).output
        (run_id,) = api.sql("SELECT run_id FROM specs")[1][0]
        losses = np.array([r[0] for r in api.sql(
            "SELECT test_mse FROM losses ORDER BY hypothesis_id")[1]])
        want = _expected(losses, 0.25)

        # the stored row, its version, and the SQL function computing the same number
        _, rows = api.sql("SELECT method_version, bits, stale, params FROM ib_estimates "
                          "WHERE method = 'toy'")
        assert [(v, round(b, 12), s) for v, b, s, _ in rows] == [("7", round(want, 12), False)]
        assert json.loads(rows[0][3]) == {"confidence": 0.95}
        _, sql_rows = api.sql("SELECT ib_fit(list(test_mse ORDER BY hypothesis_id), 0.25, "
                              "'toy').bits FROM losses")
        assert sql_rows[0][0] == pytest.approx(want, rel=1e-12)

        # the side-by-side view has its columns, against the exact value of the gp run
        api.estimate(methods=["exact", "toy"], eps=[0.25])
        _, agree = api.sql("SELECT toy_bits, exact_bits, toy_minus_exact FROM "
                           "method_agreement WHERE eps = 0.25")
        toy_bits, exact_bits, diff = agree[0]
        assert toy_bits == pytest.approx(want) and diff == pytest.approx(toy_bits - exact_bits)

        # an edit of the losses through ibdb makes its rows stale, like any method's
        api.sql(f"UPDATE losses SET test_mse = 0 WHERE run_id = '{run_id}' AND "
                "hypothesis_id = 0", write=True)
        _, stale = api.sql("SELECT bool_and(stale) FROM ib_estimates WHERE method = 'toy'")
        assert stale == [(True,)]

        # a report draws it, with its style, beside the built-in methods
        from ibdb.report.collect import collect
        from ibdb.store.database import Store

        with Store.open(db, read_only=True) as store:
            data = collect(store)
        assert "toy" in {c.method for c in data.curves[run_id]}
    # unregistered again: its name is refused, its stored rows are still readable
    bad = CliRunner().invoke(main, [*base, "estimate", "--method", "toy"])
    assert bad.exit_code == 2 and "'toy' is not one of exact, ncx2, paper" in bad.output
    assert api.sql("SELECT count(*) FROM estimates WHERE method = 'toy'")[1] == [(1,)]
