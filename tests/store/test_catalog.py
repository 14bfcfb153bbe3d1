"""ibdb.store.catalog: the tables ibdb's schema files make, and the check that a store holds exactly
those (moved out of ibdb.store.database, which re-exports the old private names)."""

from __future__ import annotations

import duckdb
import pytest

from ibdb.core.errors import StoreError
from ibdb.store.catalog import expected_catalog, schema_files, verify_catalog
from ibdb.store.database import Store


def test_a_new_store_passes_and_each_difference_is_named(tmp_path):
    latest = schema_files()[-1][0]
    path = tmp_path / "s.duckdb"
    Store.open(path).close()
    con = duckdb.connect(str(path))
    try:
        verify_catalog(con, str(path), latest)  # a fresh store: nothing to say
        con.execute("CREATE TABLE mine (x INTEGER)")  # a user's own table is allowed
        verify_catalog(con, str(path), latest)
        con.execute("ALTER TABLE estimates ADD COLUMN extra INTEGER")
        con.execute("DROP TABLE shards")
        with pytest.raises(StoreError) as err:
            verify_catalog(con, str(path), latest)
    finally:
        con.close()
    text = str(err.value)
    assert text.startswith(f"{path}: the store's tables are not those of ibdb schema version "
                           f"{latest}: ")
    assert "table shards is missing" in text
    assert "estimates has a column extra that ibdb does not make" in text
    assert "mine" not in text


def test_schema_files_are_numbered_in_order_and_derive_the_catalog():
    files = schema_files()
    numbers = [n for n, _ in files]
    assert numbers == sorted(numbers) and numbers[0] == 1 and len(set(numbers)) == len(numbers)
    con = duckdb.connect()
    try:
        first, latest = expected_catalog(con, 1), expected_catalog(con, numbers[-1])
    finally:
        con.close()
    assert "losses" in first and set(first) - {"legacy_loss_set_md5"} <= set(latest)
    assert "legacy_loss_set_md5" not in latest  # dropped by the upgrade after it
