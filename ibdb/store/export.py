"""``ibdb export``: the rows of a table, a view or one SELECT query, written to a file.

``ibdb sql`` cannot reach the file system (the store seals its connection first: see
``Store.run_sql``), so files come out of a store only through this deliberate command. It runs
DuckDB's ``COPY (query) TO`` on a read-only connection into a temporary file beside the target,
renamed into place when complete: an interrupted export leaves no partial file under the name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from ibdb.core.errors import IbdbError
from ibdb.run.shards import sql_path

FORMATS = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true",
           "json": "FORMAT json, ARRAY true"}
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def export_format(out: Path, fmt: str | None) -> str:
    """``fmt``, or the one the file's suffix names."""
    if fmt is not None:
        return fmt
    try:
        return _SUFFIXES[out.suffix.lower()]
    except KeyError:
        raise IbdbError(f"{out}: cannot tell the format from the suffix {out.suffix!r}; name "
                        "the file .parquet, .csv or .json, or pass --format.") from None


def export_rows(con: duckdb.DuckDBPyConnection, source: str, out: Path, fmt: str) -> int:
    """Write the rows of ``source`` (a table or view name, or one SELECT statement) to ``out``
    in ``fmt`` (parquet, csv or json: one JSON array); return how many rows were written."""
    query = _select(con, source)
    if not out.parent.is_dir():
        raise IbdbError(f"{out}: its folder {out.parent} does not exist; create it first.")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        written = con.execute(
            f"COPY ({query}) TO '{sql_path(tmp)}' ({FORMATS[fmt]})").fetchone()
        os.replace(tmp, out)
    except duckdb.Error as exc:
        raise IbdbError(f"export to {out}: {str(exc).strip()}") from None
    except OSError as exc:
        raise IbdbError(f"export to {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return int(written[0]) if written else 0


def _select(con: duckdb.DuckDBPyConnection, source: str) -> str:
    text = source.strip().rstrip(";").strip()
    if _NAME.fullmatch(text):
        known = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() UNION "
            "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        if text not in known:
            raise IbdbError(f"no table or view named {text!r} in the store; give one of "
                            f"{', '.join(sorted(known))}, or a SELECT query.")
        return f'SELECT * FROM "{text}"'
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise IbdbError(f"export: the query does not parse: {str(exc).strip()}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise IbdbError(f"export takes a table or view name or one SELECT query, not "
                        f"{_short(text)!r}.")
    return text


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
