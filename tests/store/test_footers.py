"""Shard footers read in batch (ibdb.store.footers), against DuckDB reading each file alone."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibdb.store.footers import UnreadableShard, read_footers, sql_file_list
from ibdb.store.ingest import _Ranges


def _write(con: duckdb.DuckDBPyConnection, path: Path, select: str, meta: str | None) -> Path:
    options = "FORMAT parquet" + (f", KV_METADATA {{ibdb: '{meta}'}}" if meta else "")
    target = str(path).replace("'", "''")
    con.execute(f"COPY ({select}) TO '{target}' ({options})")
    return path


@pytest.fixture
def files(tmp_path):
    con = duckdb.connect()
    made = [
        _write(con, tmp_path / "plain.parquet",
               "SELECT 'run1' AS run_id, i::BIGINT AS hypothesis_id, i * 2 AS seed, "
               "i / 10 AS test_mse FROM range(5, 25) t(i)", '{"first_hypothesis": 5}'),
        # nested columns before and after a plain one: their children must not count
        _write(con, tmp_path / "nested.parquet",
               "SELECT 'run1' AS run_id, [1.0, 2.0]::DOUBLE[] AS residuals, "
               "{'a': 1, 'b': [2, 3]} AS info, 3::INTEGER AS component", None),
        # two runs in one file: the statistics cannot vouch for the run
        _write(con, tmp_path / "two runs.parquet",
               "SELECT CASE WHEN i < 3 THEN 'run1' ELSE 'run2' END AS run_id, "
               "i::BIGINT AS hypothesis_id FROM range(6) t(i)", '{"x": 1}'),
    ]
    yield con, made
    con.close()


def test_batched_footers_match_each_file_read_alone(files):
    con, paths = files
    footers = read_footers(con, paths, run_id="run1", key="hypothesis_id")
    assert list(footers) == paths
    for path in paths:
        described = con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()
        assert footers[path].columns == {name: dtype for name, dtype, *_ in described}
        assert footers[path] == read_footers(con, [path], run_id="run1",
                                             key="hypothesis_id")[path]
    plain, nested, mixed = (footers[p] for p in paths)
    assert plain.meta == {"first_hypothesis": 5} and nested.meta is None
    assert plain.stats == (0, 20, 5, 24)
    assert nested.stats is None  # no hypothesis_id column: nothing to vouch for
    assert mixed.stats is None


def test_an_unreadable_file_is_named(files, tmp_path):
    con, paths = files
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(paths[0].read_bytes()[:100])
    with pytest.raises(UnreadableShard) as caught:
        read_footers(con, [paths[0], broken, paths[1]], run_id="run1", key="hypothesis_id")
    assert caught.value.path == broken


def test_file_list_quotes_names(tmp_path):
    odd = tmp_path / "it's.parquet"
    con = duckdb.connect()
    _write(con, odd, "SELECT 'r' AS run_id, 7::BIGINT AS hypothesis_id", '{"k": 2}')
    assert con.execute(f"SELECT count(*) FROM read_parquet({sql_file_list([odd])})"
                       ).fetchone() == (1,)
    assert read_footers(con, [odd], run_id="r", key="hypothesis_id")[odd].meta == {"k": 2}


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=12),
       st.integers(0, 70), st.integers(0, 20))
def test_stored_ranges_overlap_like_a_brute_force_check(spans, first, width):
    ranges = [(a, a + w) for a, w in spans]
    last = first + width
    want = any(a <= last and b >= first for a, b in ranges)
    assert _Ranges(ranges).overlaps(first, last) == want
