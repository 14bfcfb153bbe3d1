"""The DuckDB store: schema, views, idempotent and all-or-nothing ingest, locking."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.core.errors import ShardError, StoreError, StoreLockedError
from ibdb.store.database import Store, view_definitions

from conftest import make_npz, spec_dict, write_spec


def _sample_only(tmp_path, spec: dict, name: str = "spec.yaml"):
    """Run a spec's sampling into shard folders without ingesting (the runner's half)."""
    from ibdb.run.execute import execute_run

    api = Ibdb(tmp_path / "unused.duckdb", shards=tmp_path / "shards")
    return [execute_run(p, shard_root=api.shard_root, device_name="cpu")
            for p in api.plan(write_spec(tmp_path, spec, name))]


def _counts(store: Store) -> tuple[int, int, int]:
    return store.con.execute("SELECT (SELECT count(*) FROM losses), (SELECT count(*) FROM "
                             "spectra), (SELECT count(*) FROM shards)").fetchone()


def test_new_store_has_tables_and_views(store):
    assert store.schema_version() == 4
    tables = {r[0] for r in store.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"specs", "runs", "losses", "spectra", "estimates", "shards",
            "loss_set_digests", "splitting_particles"} <= tables
    assert "legacy_loss_set_md5" not in tables  # a migration's scaffolding, dropped
    views = {r[0] for r in store.con.execute("SELECT view_name FROM duckdb_views() WHERE NOT "
                                             "internal").fetchall()}
    assert {name for name, _ in view_definitions()} <= views
    assert {"run_summary", "ib_estimates", "gp_components"} <= views


def test_a_version_1_store_is_migrated_keeping_every_row(tmp_path, toy_spec):
    """Version 2 rebuilds `losses` without its primary key; rows and views survive."""
    from importlib import resources

    Ibdb(tmp_path / "new.duckdb", shards=tmp_path / "shards").run(toy_spec, estimate=False)
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))  # what ibdb 1 made: schema 001 only, then the same rows
    con.execute(resources.files("ibdb.schemas").joinpath("001_core.sql").read_text())
    con.execute("INSERT INTO ibdb_meta VALUES ('schema_version', '1')")
    con.execute(f"ATTACH '{tmp_path / 'new.duckdb'}' AS new (READ_ONLY)")
    for table in ("specs", "runs", "shards", "losses", "spectra"):
        con.execute(f"INSERT INTO {table} SELECT * FROM new.{table}")
    expected = con.execute("SELECT * FROM new.losses ORDER BY ALL").fetchall()
    keys = con.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = "
                       "'losses' AND constraint_type = 'PRIMARY KEY'").fetchone()
    con.close()
    assert keys == (1,) and len(expected) > 0

    with Store.open(old) as store:
        assert store.schema_version() == 4
        assert store.con.execute("SELECT * FROM losses ORDER BY ALL").fetchall() == expected
        digests = "SELECT * FROM loss_sets ORDER BY ALL"
        fresh = duckdb.connect(str(tmp_path / "new.duckdb"), read_only=True)
        assert store.con.execute(digests).fetchall() == fresh.execute(digests).fetchall()
        fresh.close()
        constraints = store.con.execute(
            "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() WHERE "
            "table_name = 'losses' ORDER BY ALL").fetchall()
        assert constraints == [("NOT NULL", [c]) for c in
                               sorted(["hypothesis_id", "run_id", "seed", "shard_sha256"])]
        fresh = duckdb.connect(str(tmp_path / "new.duckdb"), read_only=True)
        assert store.con.execute("DESCRIBE losses").fetchall() == \
            fresh.execute("DESCRIBE losses").fetchall()  # the same table as a new store's
        fresh.close()
        summary = store.con.execute("SELECT n_stored FROM run_summary").fetchall()
        assert summary == [(len(expected),)]


_V2_MD5 = """
    SELECT run_id, loss, md5(string_agg(hypothesis_id::VARCHAR || ':' || value::VARCHAR, ','
                                        ORDER BY hypothesis_id)) AS digest
    FROM (UNPIVOT (SELECT run_id, hypothesis_id, test_mse, test_error FROM losses
                   WHERE fitted IS NOT FALSE)
          ON test_mse, test_error INTO NAME loss VALUE value)
    GROUP BY run_id, loss
    UNION ALL
    SELECT run_id, 'spectrum', md5(string_agg(component::VARCHAR || ':' || eigenvalue::VARCHAR
                                              || ':' || residuals::VARCHAR, ','
                                              ORDER BY component))
    FROM spectra GROUP BY run_id"""


def test_a_version_2_store_keeps_which_estimates_are_stale(tmp_path, toy_spec):
    """Version 3 stores digests of a new kind; an estimate that was fresh under version 2's
    md5 digests stays fresh, and one whose losses changed since stays stale."""
    from importlib import resources

    Ibdb(tmp_path / "new.duckdb", shards=tmp_path / "shards").run(toy_spec)
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))  # what ibdb 2 made: schemas 001 and 002, md5 digests
    for name in ("001_core.sql", "002_losses_without_key.sql"):
        con.execute(resources.files("ibdb.schemas").joinpath(name).read_text())
    con.execute("INSERT INTO ibdb_meta VALUES ('schema_version', '2')")
    con.execute(f"ATTACH '{tmp_path / 'new.duckdb'}' AS new (READ_ONLY)")
    for table in ("specs", "runs", "shards", "losses", "spectra"):
        con.execute(f"INSERT INTO {table} SELECT * FROM new.{table}")
    columns = [r[0] for r in con.execute("DESCRIBE estimates").fetchall()]
    con.execute(f"INSERT INTO estimates SELECT {', '.join(columns)} FROM new.estimates")
    con.execute(f"CREATE TEMP TABLE v2 AS {_V2_MD5}")
    con.execute("UPDATE estimates e SET loss_set_hash = v2.digest FROM v2 WHERE "
                "v2.run_id = e.run_id AND v2.loss = CASE WHEN e.method = 'exact' "
                "THEN 'spectrum' ELSE e.loss END")
    # one loss changed after its estimates were computed: those (test_mse, sample methods)
    # were stale in version 2 and must stay so
    con.execute("UPDATE losses SET test_mse = test_mse * 1.5 WHERE hypothesis_id = 3")
    by_method = con.execute("SELECT method, count(*) FROM estimates GROUP BY ALL").fetchall()
    con.close()
    assert {m for m, _ in by_method} == {"exact", "ncx2", "empirical", "bound"}

    with pytest.raises(StoreError, match="schema version 2 is older.*ibdb --db FILE init"):
        Store.open(old, read_only=True)  # (which would need the new column `loss_set`)
    with Store.open(old) as store:
        assert store.schema_version() == 4
        stale = dict(store.con.execute(
            "SELECT method, bool_and(stale) FROM ib_estimates GROUP BY method").fetchall())
        assert stale == {"exact": False, "ncx2": True, "empirical": True, "bound": False}
        sets = dict(store.con.execute("SELECT method, any_value(loss_set) FROM estimates "
                                      "GROUP BY method").fetchall())
        assert sets == {"exact": "spectrum", "ncx2": "test_mse", "empirical": "test_mse",
                        "bound": None}


def test_every_view_file_states_its_grain():
    for name, body in view_definitions():
        assert body.lstrip().startswith("-- grain: one row per"), name


def test_ingest_is_idempotent(tmp_path):
    make_npz(tmp_path / "toy.npz")
    (folder,) = _sample_only(tmp_path, spec_dict(n_hypotheses=150, chunk_size=64))
    with Store.open(tmp_path / "s.duckdb") as store:
        first = store.ingest([folder])
        assert (first.hypotheses_inserted, first.shards_ingested) == (150, 4)  # + spectrum
        counts = _counts(store)
        again = store.ingest([folder])
        assert (again.hypotheses_inserted, again.shards_ingested, again.shards_skipped) == \
            (0, 0, 4)
        assert _counts(store) == counts == (150, 20, 4)
        ids = store.con.execute("SELECT min(hypothesis_id), max(hypothesis_id), "
                                "count(DISTINCT seed) FROM losses").fetchone()
        assert ids == (0, 149, 150)


def test_a_corrupt_shard_aborts_the_whole_ingest(tmp_path):
    make_npz(tmp_path / "toy.npz")
    (good,) = _sample_only(tmp_path, spec_dict(seed=1), "a.yaml")
    (bad,) = _sample_only(tmp_path, spec_dict(seed=2), "b.yaml")
    victim = sorted(bad.glob("losses-*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[:100])
    with Store.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(ShardError, match=f"{victim.name}: its content .* does not match"):
            store.ingest([good, bad])
        assert _counts(store) == (0, 0, 0)
        assert store.con.execute("SELECT count(*) FROM specs").fetchone()[0] == 0


def test_a_shard_from_another_run_is_rejected(tmp_path):
    make_npz(tmp_path / "toy.npz")
    (one,) = _sample_only(tmp_path, spec_dict(seed=1), "a.yaml")
    (two,) = _sample_only(tmp_path, spec_dict(seed=2), "b.yaml")
    stray = sorted(one.glob("losses-*.parquet"))[0]
    (two / stray.name).write_bytes(stray.read_bytes())
    with Store.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(ShardError, match="rows belong to another run"):
            store.ingest([two])


def test_plain_duckdb_reads_the_store_and_its_views(tmp_path, toy_spec):
    db = tmp_path / "plain.duckdb"
    Ibdb(db, shards=tmp_path / "sh").run(toy_spec, estimate=False)
    con = duckdb.connect(str(db), read_only=True)
    n_req, n_stored, complete = con.execute(
        "SELECT n_requested, n_stored, complete FROM run_summary").fetchone()
    assert (n_req, n_stored, complete) == (200, 200, True)
    assert con.execute("SELECT count(*) FROM gp_components WHERE weight > 0").fetchone()[0] == 20
    con.close()


def test_second_writer_gets_a_message_naming_the_holder(tmp_path):
    db = tmp_path / "locked.duckdb"
    Store.open(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(30)", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=rf"locked by process {holder.pid} \(.*python"):
            Store.open(db)
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError):
            Store.open(db, read_only=True, retry_seconds=0.5)
        assert time.monotonic() - t0 >= 0.5  # readers retry before giving up
    finally:
        holder.kill()
        holder.wait()


def test_read_only_open_of_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        Store.open(tmp_path / "none.duckdb", read_only=True)
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(StoreError, match="not an ibdb store"):
        Store.open(other, read_only=True)
    text = tmp_path / "text.duckdb"
    text.write_text("not a database at all" * 100)
    with pytest.raises(StoreError, match="text.duckdb"):
        Store.open(text)


def test_check_is_clean_then_names_each_kind_of_problem(tmp_path, toy_spec):
    db, shards = tmp_path / "c.duckdb", tmp_path / "c.shards"
    base = ["--db", str(db), "--shards", str(shards)]
    api = Ibdb(db, shards=shards, device="cpu")
    api.run(toy_spec, estimate=False)
    api.estimate(methods=["empirical"])
    clean = CliRunner().invoke(main, [*base, "check"])
    assert clean.exit_code == 0, clean.output
    assert clean.output.splitlines() == ["ok       incomplete_runs", "ok       orphaned_shards",
                                         "ok       stale_estimates", "ok       changed_loss_sets",
                                         "ok       duplicate_rows",
                                         "ok       outdated_run_ids",
                                         "0 of 6 check(s) found problems"]

    # every kind of problem at once
    (run_id,) = [p.name for p in shards.iterdir()]
    gone = sorted(shards.glob("*/losses-000000064-*.parquet"))[0]
    gone.unlink()
    (shards / run_id / ".shard.tmp-4242").write_bytes(b"half a shard")
    make_npz(tmp_path / "other.npz", seed=5)
    other = write_spec(tmp_path, spec_dict(source={"kind": "npz", "path": "other.npz"}),
                       "other.yaml")
    assert CliRunner().invoke(main, [*base, "run", str(other), "--no-ingest"]).exit_code == 0
    # an edit through ibdb keeps the digests current: the estimates show as stale
    api.sql("UPDATE losses SET test_mse = test_mse + 1 WHERE hypothesis_id = 0", write=True)
    with Store.open(db) as store:  # edits outside ibdb: the data no longer match the digests
        store.con.execute("UPDATE specs SET n_hypotheses = 250")
        store.con.execute("UPDATE losses SET seed = (SELECT seed FROM losses WHERE "
                          "hypothesis_id = 1) WHERE hypothesis_id = 2")
        # no key stops a row inserted by hand (ingest never repeats one): id 3 and its seed
        store.con.execute("INSERT INTO losses SELECT * FROM losses WHERE hypothesis_id = 3")
        # a shared test set stored under the id it had before test_set entered the identity
        store.con.execute("""UPDATE specs SET spec = json_merge_patch(spec, '{"task": """
                          """{"test_set": "shared"}}')""")
    got = CliRunner().invoke(main, [*base, "check"])
    assert got.exit_code == 1, got.output
    out = got.output
    assert "PROBLEM  incomplete_runs: 1 row(s)." in out and f"{run_id}  tiny/toy/gp/b" in out
    assert "PROBLEM  orphaned_shards: 7 row(s)." in out  # 5 new shards, 1 gone, 1 temporary
    assert f"file missing    {gone}" in out
    assert "temporary file  " in out and ".shard.tmp-4242" in out
    assert out.count("not ingested") == 5
    assert "PROBLEM  stale_estimates: " in out
    # the row inserted by hand changed both loss sets of the run
    assert "PROBLEM  changed_loss_sets: 2 row(s)." in out
    assert f"{run_id}  test_error  200              201" in out
    assert "PROBLEM  duplicate_rows: 3 row(s)." in out and f"seed           {run_id}" in out
    assert f"hypothesis_id  {run_id}  3 " in out
    assert "PROBLEM  outdated_run_ids: 1 row(s)." in out
    assert out.splitlines()[-1] == ("6 of 6 check(s) found problems: incomplete_runs, "
                                    "orphaned_shards, stale_estimates, changed_loss_sets, "
                                    "duplicate_rows, outdated_run_ids")

    # estimating again digests the run's losses first: no changed sets, no stale estimates
    api.estimate(methods=["empirical"])
    again = CliRunner().invoke(main, [*base, "check"]).output
    assert "ok       changed_loss_sets" in again and "ok       stale_estimates" in again


def test_a_store_killed_while_being_created_leaves_no_file(tmp_path, monkeypatch):
    db = tmp_path / "new.duckdb"

    def killed(self, **options):
        raise KeyboardInterrupt  # stands for a kill -9 while the schema is applied

    monkeypatch.setattr(Store, "_prepare", killed)
    with pytest.raises(KeyboardInterrupt):
        Store.open(db)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary file
    monkeypatch.undo()
    with Store.open(db) as store:
        assert store.schema_version() >= 1


def test_column_definitions_match_the_tables(store):
    """ibdb.core.columns is the one torch-free definition of loss and estimate columns: the
    tables schemas/ creates hold exactly those columns, with those types, in that order."""
    from ibdb.core.columns import LOSS_COLUMNS, LOSS_KEY_COLUMNS
    from ibdb.core.estimate import ESTIMATE_COLUMNS

    def described(table: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in store.con.execute(f"DESCRIBE {table}").fetchall()]

    assert described("losses") == [*LOSS_KEY_COLUMNS.items(),
                                   *((n, c.sql_type) for n, c in LOSS_COLUMNS.items()),
                                   ("shard_sha256", "VARCHAR")]
    assert described("estimates") == list(ESTIMATE_COLUMNS.items())
