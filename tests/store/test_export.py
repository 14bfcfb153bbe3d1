"""`ibdb sql` reaches only the store (issue 13): every statement class that wrote files or
changed settings is refused, with or without --write, and nothing changes; `ibdb export` is the
deliberate way out (Parquet, CSV, JSON of a table, view or SELECT), checked by reading the file
back."""

from __future__ import annotations

import json
import os

import duckdb
import pytest
from click.testing import CliRunner

from ibdb.cli import main

from conftest import make_npz, spec_dict, write_spec


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    make_npz(folder / "toy.npz")
    path = write_spec(folder, spec_dict(n_hypotheses=120, chunk_size=60))
    db = folder / "s.duckdb"
    result = CliRunner().invoke(main, ["--db", str(db), "run", str(path)])
    assert result.exit_code == 0, result.output
    return db


def _cli(db, *args):
    return CliRunner().invoke(main, ["--db", str(db), *args])


def _counts(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("losses", "estimates", "runs", "shards", "specs")}
    finally:
        con.close()


@pytest.mark.parametrize("write", [False, True])
def test_sql_cannot_reach_files_or_settings(store, tmp_path, write):
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    linked = tmp_path / "linked.duckdb"
    os.link(store, linked)  # the store itself under another name
    before = _counts(store)
    statements = [
        f"COPY (SELECT * FROM losses) TO '{tmp_path / 'out.csv'}'",
        f"EXPORT DATABASE '{tmp_path / 'dump'}'",
        f"ATTACH '{other}' AS o (READ_WRITE)",
        f"ATTACH '{linked}' AS l (READ_WRITE); DELETE FROM l.estimates",
        f"PRAGMA profiling_output = '{tmp_path / 'profile.txt'}'",
        f"SET log_query_path = '{tmp_path / 'queries.log'}'",
        f"SELECT * FROM read_parquet('{store.parent / 'toy.npz'}')",
        "SET enable_external_access = true",
    ]
    for statement in statements:
        result = _cli(store, "sql", statement, *(["--write"] if write else []))
        assert result.exit_code == 2, (statement, result.output)
        assert "Traceback" not in result.output and len(result.output) < 2000
        assert "ibdb export" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linked.duckdb", "other.duckdb"]
    assert _counts(store) == before
    # what still works: reading the store, its views and the ib_* functions
    result = _cli(store, "sql", "SELECT count(*) AS n FROM losses; SELECT (ib_fit(list(test_mse) "
                  ", 0.2, 'empirical')).bits AS b FROM losses", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["b"] >= 0


def test_a_write_without_write_says_so(store):
    result = _cli(store, "sql", "DELETE FROM estimates")
    assert result.exit_code == 2 and "--write" in result.output


def test_export_round_trips_tables_views_and_queries(store, tmp_path):
    con = duckdb.connect(str(store), read_only=True)
    expected = con.execute("SELECT hypothesis_id, test_mse FROM losses ORDER BY 1").fetchall()
    summary_columns = [d[0] for d in con.execute("SELECT * FROM run_summary").description]
    con.close()
    query = "SELECT hypothesis_id, test_mse FROM losses ORDER BY 1"
    for suffix in ("parquet", "csv", "json"):
        out = tmp_path / f"q.{suffix}"
        result = _cli(store, "export", query, "--out", str(out))
        assert result.exit_code == 0, result.output
        assert f"wrote {len(expected)} rows" in result.output
        reader = {"parquet": "read_parquet", "csv": "read_csv", "json": "read_json"}[suffix]
        back = duckdb.sql(f"SELECT hypothesis_id::BIGINT, test_mse::DOUBLE FROM "
                          f"{reader}('{out}') ORDER BY 1").fetchall()
        assert back == expected
    json_rows = json.loads((tmp_path / "q.json").read_text())
    assert isinstance(json_rows, list) and set(json_rows[0]) == {"hypothesis_id", "test_mse"}
    # a view by name, with --format overriding the suffix
    out = tmp_path / "summary.data"
    result = _cli(store, "export", "run_summary", "--out", str(out), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0].split(",") == summary_columns
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize(("source", "out", "message"), [
    ("DELETE FROM estimates", "x.csv", "one SELECT query"),
    ("SELECT 1; SELECT 2", "x.csv", "one SELECT query"),
    ("no_such_table", "x.csv", "no table or view named 'no_such_table'"),
    ("SELEC oops", "x.csv", "does not parse"),
    ("losses", "x.txt", "cannot tell the format"),
    ("losses", "missing/x.csv", "does not exist"),
])
def test_export_refuses_bad_requests_clearly(store, tmp_path, source, out, message):
    before = _counts(store)
    result = _cli(store, "export", source, "--out", str(tmp_path / out))
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert _counts(store) == before and not list(tmp_path.iterdir())
