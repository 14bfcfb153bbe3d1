"""The store's catalog: the tables and columns that ibdb's schema files make, and the check that
a store holds exactly those.

The expected catalog is derived from ``schemas/NNN_*.sql`` themselves (run on an empty
in-memory database), never listed by hand, so a new schema file needs no edit here. A store
altered outside ibdb (a dropped table or column, a changed type) fails with one
:class:`ibdb.core.errors.StoreError` naming every difference, instead of a binder error at some
later
query. :mod:`ibdb.store.database` runs the check whenever it opens or upgrades a store.
"""

from __future__ import annotations

import re
from importlib import resources

import duckdb

from ibdb.core.errors import StoreError, shorten

SCHEMA_FILE_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Tables a schema file makes that the upgrade after it drops (Store._carry_over_digests).
DROPPED_AFTER_UPGRADE = ("legacy_loss_set_md5",)


def schema_files() -> list[tuple[int, str]]:
    """(version, SQL text) of every schema file, by version."""
    folder = resources.files("ibdb.schemas")
    out = []
    for entry in folder.iterdir():
        match = SCHEMA_FILE_RE.match(entry.name)
        if match:
            out.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(out)


_EXPECTED_CATALOGS: dict[int, dict[str, dict[str, str]]] = {}


def expected_catalog(con: duckdb.DuckDBPyConnection, version: int
                     ) -> dict[str, dict[str, str]]:
    """{table: {column: type}} that schemas/ files 1..``version`` make, derived by running
    them on an empty in-memory database (once per process and version; ~6 ms), attached to
    ``con`` (a second connection would cost twice that) and detached again."""
    if version not in _EXPECTED_CATALOGS:
        name = "ibdb_expected_catalog"
        cur = con.cursor()  # (its own USE: the store's connection keeps its default catalog)
        cur.execute(f"ATTACH ':memory:' AS {name} (READ_WRITE)")
        try:
            cur.execute(f"USE {name}")
            cur.execute("BEGIN")
            for number, text in schema_files():
                if number <= version:
                    cur.execute(text)
            for table in DROPPED_AFTER_UPGRADE:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute("COMMIT")
            catalog: dict[str, dict[str, str]] = {}
            for table, column, dtype in cur.execute(
                    "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                    "WHERE database_name = $db ORDER BY table_name, column_index",
                    {"db": name}).fetchall():
                catalog.setdefault(table, {})[column] = dtype
        finally:
            cur.close()
            con.execute(f"DETACH {name}")
        _EXPECTED_CATALOGS[version] = catalog
    return _EXPECTED_CATALOGS[version]


def verify_catalog(con: duckdb.DuckDBPyConnection, path: str, version: int) -> None:
    """Raise a StoreError naming every table and column that differs from what the
    schema files up to ``version`` make (a store altered by hand: a dropped table or
    column, a changed type), instead of a binder error at some later query. Tables of
    the user's own are allowed; ibdb's tables must hold exactly their columns."""
    want = expected_catalog(con, version)
    got: dict[str, dict[str, str]] = {}
    for table, column, dtype in con.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM duckdb_columns() c "
            "JOIN duckdb_tables() t ON t.table_oid = c.table_oid "
            "WHERE c.database_name = current_database() AND c.schema_name = 'main' "
            "ORDER BY c.table_name, c.column_index").fetchall():
        got.setdefault(table, {})[column] = dtype
    problems = []
    for table, columns in want.items():
        if table not in got:
            problems.append(f"table {table} is missing")
            continue
        for column, dtype in columns.items():
            have = got[table].get(column)
            if have is None:
                problems.append(f"{table} lacks column {column} {dtype}")
            elif have != dtype:
                problems.append(f"{table}.{column} is {have}, not {dtype}")
        problems += [f"{table} has a column {c} that ibdb does not make"
                     for c in got[table] if c not in columns]
    if problems:
        raise StoreError(
            f"{path}: the store's tables are not those of ibdb schema version "
            f"{version}: {shorten('; '.join(problems), 600)}. It was altered outside ibdb "
            "(e.g. ALTER TABLE or DROP TABLE through a plain DuckDB connection). Restore it "
            "from a backup, or rebuild a store from its shard folder: `ibdb --db NEW.duckdb "
            "ingest SHARDS`, then `ibdb --db NEW.duckdb estimate`.")
