"""Shard footers: what Parquet footers say about many shard files, read in one query each.

Ingest validates every shard from its footer before any row goes in: the ``ibdb`` key-value
metadata (the manifest the writer put there), the top-level columns with their DuckDB types,
and the row-group statistics (row count, the run id's range and null count, the key's range).
Asking DuckDB file by file costs about 4 ms a shard, seconds for a sweep of a thousand chunks;
``parquet_kv_metadata``, ``parquet_schema`` and ``parquet_metadata`` over the list of files
answer for all of them at once. When any file cannot be read, the batched calls fail as a
whole and :func:`read_footers` reads each file alone, so the caller can name the broken one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ibdb.run.shards import sql_path

__all__ = ["Footer", "UnreadableShard", "read_footers", "sql_file_list"]


class UnreadableShard(Exception):
    """A file whose footer DuckDB cannot read; ``path`` names it, ``detail`` says why."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = path, detail


@dataclass(frozen=True)
class Footer:
    """One shard's footer. ``meta``: the ``ibdb`` metadata, None when absent. ``columns``:
    top-level column name -> DuckDB type. ``stats``: (rows of another run, rows, min key, max
    key) when the statistics vouch for every row's run id and the key's range, else None (the
    caller scans the data instead)."""

    meta: dict[str, Any] | None
    columns: dict[str, str]
    stats: tuple[int, int, int, int] | None


def sql_file_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file names, for table functions that take several files."""
    return "[" + ", ".join(f"'{sql_path(p)}'" for p in paths) + "]"


def read_footers(con: duckdb.DuckDBPyConnection, paths: list[Path], *, run_id: str,
                 key: str) -> dict[Path, Footer]:
    """Footers of ``paths`` (statistics of ``key`` and of ``run_id`` against this run).

    Raises :class:`UnreadableShard` naming the first file (in the given order) that DuckDB
    cannot read."""
    if not paths:
        return {}
    try:
        return _read_all(con, paths, run_id=run_id, key=key)
    except duckdb.Error:
        pass  # one of them is broken: find which
    footers = {}
    for path in paths:
        try:
            footers.update(_read_all(con, [path], run_id=run_id, key=key))
        except duckdb.Error as exc:
            raise UnreadableShard(path, str(exc).splitlines()[0]) from None
    return footers


def _read_all(con: duckdb.DuckDBPyConnection, paths: list[Path], *, run_id: str,
              key: str) -> dict[Path, Footer]:
    files = sql_file_list(paths)
    meta = {name: json.loads(value) for name, value in con.execute(
        f"SELECT file_name, value FROM parquet_kv_metadata({files}) WHERE key = 'ibdb'"
    ).fetchall()}
    schema: dict[str, list[tuple[str, str, int | None]]] = {}
    for name, column, dtype, children in con.execute(
            f"SELECT file_name, name, duckdb_type, num_children FROM parquet_schema({files}) "
            "ORDER BY file_name, column_id").fetchall():
        schema.setdefault(name, []).append((column, dtype, children))
    stats = {row[0]: row[1:] for row in con.execute(
        "SELECT file_name, min(stats_min_value) FILTER (path_in_schema = 'run_id'), "
        "max(stats_max_value) FILTER (path_in_schema = 'run_id'), "
        "sum(stats_null_count) FILTER (path_in_schema = 'run_id'), "
        "min(TRY_CAST(stats_min_value AS BIGINT)) FILTER (path_in_schema = $key), "
        "max(TRY_CAST(stats_max_value AS BIGINT)) FILTER (path_in_schema = $key), "
        "sum(row_group_num_rows) FILTER (column_id = 0) "
        f"FROM parquet_metadata({files}) GROUP BY file_name", {"key": key}).fetchall()}
    footers = {}
    for path in paths:
        name = str(path)
        if name not in schema:  # DuckDB answered under another name: do not guess
            raise UnreadableShard(path, "DuckDB reports no schema under this name (does the "
                                  "path hold glob characters such as * ? [ ?)")
        run_lo, run_hi, run_nulls, low, high, n_rows = stats.get(name, (None,) * 6)
        vouched = run_lo == run_hi == run_id and run_nulls == 0 and None not in (low, high)
        footers[path] = Footer(meta=meta.get(name), columns=_top_level(schema[name]),
                               stats=(0, int(n_rows or 0), low, high) if vouched else None)
    return footers


def _top_level(rows: list[tuple[str, str, int | None]]) -> dict[str, str]:
    """Top-level columns from ``parquet_schema`` rows in schema order (the root first, each
    nested column followed by its subtree, which is skipped)."""
    out: dict[str, str] = {}

    def after_subtree(i: int) -> int:
        end = i + 1
        for _ in range(rows[i][2] or 0):
            end = after_subtree(end)
        return end

    i = 1
    while i < len(rows):
        out[rows[i][0]] = rows[i][1]
        i = after_subtree(i)
    return out
