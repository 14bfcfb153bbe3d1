"""The Python API for notebooks (ibdb.store.frames through Ibdb): frames match SQL over the store,
pandas and polars match Arrow, connect() is read-only and its ib_fit equals Ibdb.estimate, and
examples/notebook_example.py (the README's "Python API (notebooks)" section) runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ibdb.api import Ibdb
from ibdb.core.errors import IbdbError, StoreError

from conftest import make_npz, spec_dict, write_spec

pa = pytest.importorskip("pyarrow")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store with one small gp run (200 hypotheses) and its estimates; three hypotheses are
    marked unfitted by hand so that the fitted filter matters."""
    folder = tmp_path_factory.mktemp("notebook")
    make_npz(folder / "toy.npz")
    db = Ibdb(folder / "s.duckdb", shards=folder / "shards", device="cpu")
    db.run(write_spec(folder, spec_dict()))
    db.sql("UPDATE losses SET fitted = (hypothesis_id >= 3)", write=True)
    db.estimate(eps=[0.3, 0.2, 0.1])
    return db


def _sql(db: Ibdb, query: str):
    con = duckdb.connect(db.db, read_only=True)
    try:
        return con.sql(query).fetchall()
    finally:
        con.close()


def test_runs_frame_is_run_summary(stored):
    runs = stored.runs()
    assert isinstance(runs, pa.Table)
    assert runs.num_rows == 1 and runs.column("n_stored").to_pylist() == [200]
    assert {"run_id", "experiment", "n_requested", "n_not_fitted"} <= set(runs.column_names)
    assert runs.column("n_not_fitted").to_pylist() == [3]


def test_losses_frame_matches_sql(stored):
    (run_id,) = stored.runs().column("run_id").to_pylist()
    losses = stored.losses(run_id)
    assert losses.column_names == ["run_id", "hypothesis_id", "seed", "test_mse", "test_error",
                                   "train_mse", "train_error", "epochs", "fitted",
                                   "shard_sha256"]
    assert losses.schema.field("test_mse").type == pa.float64()
    assert losses.schema.field("hypothesis_id").type == pa.int64()
    assert losses.schema.field("fitted").type == pa.bool_()
    rows = _sql(stored, "SELECT hypothesis_id, test_mse FROM losses ORDER BY hypothesis_id")
    assert list(zip(losses.column("hypothesis_id").to_pylist(),
                    losses.column("test_mse").to_pylist(), strict=True)) == rows
    assert stored.losses(run_id, fitted_only=True).num_rows == 197
    assert stored.losses().num_rows == stored.losses([run_id]).num_rows == 200


def test_curve_estimates_and_provenance_match_sql(stored):
    curve = stored.ib_curve()
    assert curve.column_names == ["run_id", "label", "loss", "method", "eps", "bits",
                                  "lower_bits", "upper_bits", "bound", "n", "stale"]
    want = _sql(stored, "SELECT method, eps, bits FROM estimates WHERE loss = 'test_mse' "
                        "ORDER BY method, eps DESC")
    got = curve.select(["method", "eps", "bits"]).to_pylist()
    assert [(r["method"], r["eps"], r["bits"]) for r in got] == want
    ncx2 = stored.ib_curve(methods=["ncx2"])
    assert set(ncx2.column("method").to_pylist()) == {"ncx2"}
    estimates = stored.estimates(loss="test_mse")
    assert estimates.num_rows == len(want) and "diagnostics" in estimates.column_names
    prov = stored.provenance()
    assert prov.num_rows == 1
    assert {"spec", "identity", "ibdb_version", "torch_version", "device", "host",
            "data_fingerprint"} <= set(prov.column_names)


@pytest.mark.parametrize("method", ["runs", "losses", "ib_curve", "estimates", "provenance"])
def test_pandas_and_polars_equal_arrow(stored, method):
    arrow = getattr(stored, method)()
    pdf = getattr(stored, method)(frame="pandas")
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(arrow.to_pandas(), pdf, check_dtype=False)
    pl = pytest.importorskip("polars")
    assert getattr(stored, method)(frame="polars").equals(pl.from_arrow(arrow))


def test_bad_frame_and_unknown_run_are_named(stored):
    with pytest.raises(IbdbError, match="unknown frame"):
        stored.runs(frame="excel")
    with pytest.raises(StoreError, match="nope"):
        stored.losses("nope")


def test_connect_is_read_only_and_ib_fit_equals_estimate(stored):
    report = stored.estimate(methods=["ncx2"], eps=[0.15])
    (row,) = report.rows
    con = stored.connect()
    try:
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM estimates")
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE mine (a INTEGER)")
        (bits, n), = con.sql(
            "SELECT est.bits, est.n FROM (SELECT ib_fit(list(test_mse ORDER BY hypothesis_id), "
            "0.15, 'ncx2') AS est FROM losses WHERE fitted IS NOT FALSE GROUP BY run_id)"
        ).fetchall()
        assert n == 197 and bits == pytest.approx(row["bits"], rel=1e-12)
        stored_bits = con.sql("SELECT bits FROM ib_estimates WHERE method = 'ncx2' "
                              "AND eps = 0.15").fetchall()
        assert stored_bits == [(row["bits"],)]
        second = stored.connect()  # another at once, and ibdb's own reads, work
        assert second.sql("SELECT count(*) FROM run_summary").fetchall() == [(1,)]
        second.close()
        assert stored.runs().num_rows == 1
    finally:
        con.close()


def test_recompute_returns_the_new_eps(stored):
    got = stored.recompute([0.25, 0.15], methods=["empirical"], frame="pandas")
    assert sorted(got["eps"]) == [0.15, 0.25] and set(got["method"]) == {"empirical"}
    assert len(stored.ib_curve(methods=["empirical"])) == 5  # 0.3, 0.25, 0.2, 0.15, 0.1


def test_notebook_example_runs(stored, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook_example.py"),
                             stored.db], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "losses; mean test MSE" in result.stdout and "ncx2" in result.stdout


def test_importing_ibdb_loads_no_frame_library():
    code = ("import sys, ibdb, ibdb.api, ibdb.store.frames; "
            "bad = [m for m in ('pyarrow', 'pandas', 'polars', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_readme_notebook_section_runs(stored, tmp_path):
    """Every command of the README's "Python API (notebooks)" section: its Python block, run
    where the store is named ibdb.duckdb, and the example script's command line."""
    import shutil

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Python API (notebooks)", 1)[1].split("\n### ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copy(stored.db, tmp_path / "ibdb.duckdb")
    check = ("\nassert len(runs) == 1 and losses.num_rows == 200 and len(curve) > 0"
             "\nassert prov.num_rows == 1 and again.num_rows == 1"
             "\nassert fit['bits'][0] == again.column('bits')[0].as_py()\n")
    result = subprocess.run([sys.executable, "-c", block + check], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "`python examples/notebook_example.py ibdb.duckdb`" in section
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook_example.py"),
                             "ibdb.duckdb"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
