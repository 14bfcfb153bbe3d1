"""Hardening of the store and the CLI's one error rule: no traceback, a message that names the
file and says what to do, exit 2 for what a user can expect (bad files, disk, memory, locks) and
exit 1 in one line for a bug; a failed command leaves the store's rows as they were; read-only
commands write nothing; `ibdb check` finds left-over files and `--fix` repairs what it safely
can."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.store.database import Store

from conftest import make_npz, spec_dict, write_spec

MAX_OUTPUT = 10_000  # bytes: an error is a paragraph, not a flood


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A store holding one small gp run (100 hypotheses, estimated), and its shard folder."""
    folder = tmp_path_factory.mktemp("hardening")
    make_npz(folder / "toy.npz")
    spec = write_spec(folder, spec_dict(n_hypotheses=100))
    Ibdb(folder / "s.duckdb", shards=folder / "shards", device="cpu").run(spec)
    return folder / "s.duckdb", folder / "shards"


@pytest.fixture
def copy(built, tmp_path) -> tuple[Path, Path]:
    """A private copy of the built store and its shards."""
    db, shards = built
    shutil.copy(db, tmp_path / "s.duckdb")
    shutil.copytree(shards, tmp_path / "shards")
    return tmp_path / "s.duckdb", tmp_path / "shards"


def ibdb(db: Path, *args: str, shards: Path | None = None):
    base = ["--db", str(db), "--device", "cpu"]
    if shards is not None:
        base += ["--shards", str(shards)]
    return CliRunner().invoke(main, [*base, *args])


def failed_cleanly(result, code: int, *needles: str) -> str:
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out, out
    assert len(out.encode()) < MAX_OUTPUT, len(out)
    for needle in needles:
        assert needle in out, (needle, out)
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT * FROM losses ORDER BY run_id, hypothesis_id").fetchall()
    finally:
        con.close()


# -- 1. one rule for every command ----------------------------------------------------------


def test_a_store_in_a_missing_folder_is_a_clear_error(tmp_path):
    db = tmp_path / "missing" / "folder" / "x.duckdb"
    failed_cleanly(ibdb(db, "init"), 2, str(db), "does not exist", "mkdir -p")
    assert not (tmp_path / "missing").exists()
    # a file where a folder should be
    (tmp_path / "afile").write_text("x")
    failed_cleanly(ibdb(tmp_path / "afile" / "x.duckdb", "init"), 2, "is a file, not a folder")


def test_an_unexpected_error_is_one_line_exit_1_and_verbose_shows_the_traceback(
        tmp_path, monkeypatch):
    def broken(self):
        raise ZeroDivisionError("a bug " + "x" * 5000)

    monkeypatch.setattr(Ibdb, "init", broken)
    result = ibdb(tmp_path / "s.duckdb", "init")
    out = failed_cleanly(result, 1, "unexpected ZeroDivisionError: a bug", "--verbose")
    assert len(out.strip().splitlines()) == 1 and len(out) < 500
    verbose = CliRunner().invoke(main, ["--verbose", "--db", str(tmp_path / "s.duckdb"),
                                        "init"])
    assert verbose.exit_code == 1
    assert "Traceback" in verbose.output and "ZeroDivisionError" in verbose.output


def test_a_spec_that_is_a_symlink_loop_is_a_clear_error(tmp_path):
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    for command in ("validate", "plan", "run"):
        failed_cleanly(ibdb(tmp_path / "s.duckdb", command, str(tmp_path / "a.yaml")), 2,
                       "a.yaml", "symbolic link")
    assert not (tmp_path / "s.duckdb").exists()


def test_a_huge_value_in_an_error_is_cut_and_the_fix_kept(tmp_path, monkeypatch):
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict()
    spec["budgets"][0]["n_hypotheses"] = "a" * 100_000
    path = write_spec(tmp_path, spec)
    # the spec's own error shows the value cut (specs.py), the fix at its end
    out = failed_cleanly(ibdb(tmp_path / "s.duckdb", "validate", str(path)), 2, "n_hypotheses")
    assert len(out) < 2000 and out.rstrip().endswith("on the file again.")
    # any other message too long for a paragraph is cut by the CLI, keeping its end (the fix)
    from ibdb.core.errors import IbdbError

    def long_error(self):
        raise IbdbError("start " + "x" * 20_000 + " Do this to fix it.")

    monkeypatch.setattr(Ibdb, "init", long_error)
    out = failed_cleanly(ibdb(tmp_path / "s.duckdb", "init"), 2, "start", "characters cut")
    assert out.rstrip().endswith("Do this to fix it.") and len(out) < 5000


# -- 2. store integrity on open ---------------------------------------------------------------


READ_AND_WRITE = [("sql", "SELECT count(*) FROM losses"), ("check",), ("init",)]


@pytest.mark.parametrize("command", READ_AND_WRITE, ids=lambda c: c[0])
def test_a_truncated_store_is_named_with_a_fix(copy, command):
    db, shards = copy
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.truncate(size // 3)
    before = digest(db)
    failed_cleanly(ibdb(db, *command, shards=shards), 2, str(db), "truncated",
                   "Restore it from a backup", "ingest")
    assert digest(db) == before


@pytest.mark.parametrize("command", READ_AND_WRITE, ids=lambda c: c[0])
def test_a_bit_flipped_store_is_named_with_a_fix(copy, command):
    db, shards = copy
    con = duckdb.connect(str(db), read_only=True)
    block_size, used = con.execute("SELECT block_size, used_blocks FROM pragma_database_size()"
                                   ).fetchone()
    con.close()
    with open(db, "r+b") as fh:  # one flipped bit in every block, so any read meets one
        for block in range(used):
            fh.seek(3 * 4096 + block * block_size + 100)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0x10]))
    before = digest(db)
    failed_cleanly(ibdb(db, *command, shards=shards), 2, str(db), "damaged", "checksum",
                   "Restore it from a backup")
    assert digest(db) == before


def _flip_in_block_of(db: Path, table: str, column: str) -> None:
    con = duckdb.connect(str(db), read_only=True)
    block_size = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]
    (block,) = con.execute(f"SELECT min(block_id) FROM pragma_storage_info('{table}') WHERE "
                           "column_name = ? AND block_id >= 0", [column]).fetchone()
    con.close()
    with open(db, "r+b") as fh:
        fh.seek(3 * 4096 + block * block_size + 100)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))


def test_check_reads_every_block_and_names_damage_no_check_query_would_meet(copy):
    """A flipped bit in data only some queries read (an estimate's diagnostics): queries that
    do not read it work, one that does and `ibdb check` name the damage."""
    db, shards = copy
    con = duckdb.connect(str(db))  # diagnostics large enough for blocks of their own
    con.execute("UPDATE estimates SET diagnostics = to_json(repeat('x', 400000))")
    con.execute("CHECKPOINT")
    con.close()
    assert ibdb(db, "check", shards=shards).exit_code == 0
    _flip_in_block_of(db, "estimates", "diagnostics")
    assert ibdb(db, "sql", "SELECT count(*) FROM specs").exit_code == 0
    assert ibdb(db, "sql", "SELECT count(*) FROM stale_estimates").exit_code == 0
    failed_cleanly(ibdb(db, "sql", "SELECT max(length(diagnostics::VARCHAR)) FROM estimates"),
                   2, str(db), "damaged", "checksum", "Restore it from a backup")
    failed_cleanly(ibdb(db, "check", shards=shards), 2, str(db), "damaged", "checksum")


@pytest.mark.parametrize("command", READ_AND_WRITE + [("ingest", "SHARDS")],
                         ids=lambda c: c[0])
def test_a_foreign_duckdb_file_is_refused_and_left_alone(copy, tmp_path, command):
    _, shards = copy
    db = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE measurements AS SELECT range AS x FROM range(10)")
    con.close()
    before = digest(db)
    args = [str(shards) if a == "SHARDS" else a for a in command]
    failed_cleanly(ibdb(db, *args, shards=shards), 2, str(db), "measurements",
                   "another program's database", "point --db")
    assert digest(db) == before


def test_a_newer_schema_is_refused(copy):
    db, shards = copy
    con = duckdb.connect(str(db))
    con.execute("UPDATE ibdb_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    before = rows(db)
    for command in READ_AND_WRITE:
        failed_cleanly(ibdb(db, *command, shards=shards), 2, "schema version 99", "newer",
                       "upgrade ibdb")
    assert rows(db) == before


ALTERATIONS = [
    ("dropped column", "ALTER TABLE losses DROP COLUMN test_error",
     "losses lacks column test_error DOUBLE"),
    ("dropped table", "DROP TABLE spectra", "table spectra is missing"),
    ("changed type", "ALTER TABLE runs ALTER COLUMN host TYPE INTEGER USING 0",
     "runs.host is INTEGER, not VARCHAR"),
    ("added column", "ALTER TABLE runs ADD COLUMN note VARCHAR",
     "runs has a column note that ibdb does not make"),
]


@pytest.mark.parametrize(("case", "alter", "message"), ALTERATIONS, ids=[a[0] for a in ALTERATIONS])
def test_a_hand_altered_schema_is_named_not_a_binder_error(copy, case, alter, message):
    db, shards = copy
    con = duckdb.connect(str(db))
    con.execute(alter)
    con.close()
    before = digest(db)
    for command in READ_AND_WRITE + [("estimate",)]:
        out = failed_cleanly(ibdb(db, *command, shards=shards), 2, str(db), message,
                             "altered outside ibdb", "Restore it from a backup")
        assert "Binder Error" not in out
    assert digest(db) == before


def test_the_expected_tables_come_from_the_schema_files(tmp_path):
    """The reference a store is checked against is what schemas/*.sql make: a new store
    matches it exactly, table for table and column for column."""
    from ibdb.store.catalog import expected_catalog as _expected_catalog
    from ibdb.store.catalog import schema_files as _schema_files

    with Store.open(tmp_path / "new.duckdb") as store:
        latest = _schema_files()[-1][0]
        want = _expected_catalog(store.con, latest)
        got: dict[str, dict[str, str]] = {}
        for table, column, dtype in store.con.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE "
                "database_name = current_database() AND table_name IN (SELECT table_name "
                "FROM duckdb_tables() WHERE database_name = current_database())").fetchall():
            got.setdefault(table, {})[column] = dtype
        assert got == want
        assert {"losses", "specs", "runs", "spectra", "estimates", "shards"} <= set(want)
        # (the reference database is detached again: the store sees only itself)
        names = {r[0] for r in store.con.execute("SELECT database_name FROM "
                                                 "duckdb_databases()").fetchall()}
        assert not any("expected" in n for n in names)


def _read_only_folder(folder: Path) -> list[str] | None:
    """A command prefix under which ``folder`` is read-only: none needed for a non-root user
    (chmod does it), a private mount namespace for root; None when neither is possible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / /mnt 2>/dev/null "
                            "|| exit 1"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c",
            f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}' "
            "&& exec \"$@\"", "sh"]


def _cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from ibdb.cli import main; "
            "sys.argv[0] = 'ibdb'; main()", *args]


def test_a_store_on_a_read_only_folder_reads_and_refuses_writes_clearly(copy, tmp_path):
    db, shards = copy
    folder = db.parent
    before = digest(db)
    prefix = _read_only_folder(folder)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here (root without mount namespaces)")
    try:
        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*prefix, *_cli_argv("--db", str(db), "--shards",
                                                       str(shards), *args)],
                                  capture_output=True, text=True, timeout=120)

        got = run("sql", "SELECT count(*) AS n FROM losses", "--format", "csv")
        assert got.returncode == 0 and got.stdout == "n\n100\n", got.stderr
        for command in (["init"], ["estimate"], ["ingest", str(shards)]):
            got = run(*command)
            out = got.stdout + got.stderr
            assert got.returncode == 2, out
            assert "Traceback" not in out and len(out) < MAX_OUTPUT
            assert str(db) in out and "for writing" in out and "only read" in out
        new = subprocess.run([*prefix, *_cli_argv("--db", str(folder / "new.duckdb"),
                                                  "init")],
                             capture_output=True, text=True, timeout=120)
        out = new.stdout + new.stderr
        assert new.returncode == 2 and "Traceback" not in out, out
        assert "not writable" in out and "new.duckdb" in out
    finally:
        folder.chmod(0o755)
    assert digest(db) == before
    assert not (folder / "new.duckdb").exists()


_FILE_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from ibdb.cli import main
    sys.argv = ["ibdb", *sys.argv[2:]]
    main()
""")


def test_a_full_disk_while_ingesting_shows_the_real_error_and_stores_nothing(built, tmp_path):
    """A file size limit (what a full disk looks like to DuckDB, without root): the write of
    the log at commit fails; the message is that failure, not a failed rollback after it."""
    db, _ = built
    target = tmp_path / "s.duckdb"
    shutil.copy(db, target)
    make_npz(tmp_path / "toy.npz")
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=3000, chunk_size=1000))
    Ibdb(target, shards=tmp_path / "more", device="cpu").run(spec, ingest=False)
    before = rows(target)
    got = subprocess.run([sys.executable, "-c", _FILE_LIMIT, "40000", "--db", str(target),
                          "ingest", str(tmp_path / "more")],
                         capture_output=True, text=True, timeout=300)
    out = got.stdout + got.stderr
    assert got.returncode == 2, out
    assert "Traceback" not in out and len(out) < MAX_OUTPUT
    assert str(target) in out and "File too large" in out and "nothing" in out
    assert "rollback" not in out.lower() and "no transaction" not in out
    assert rows(target) == before
    # and with room again, the same command succeeds
    assert ibdb(target, "ingest", str(tmp_path / "more")).exit_code == 0


def test_a_failure_in_a_transaction_is_never_hidden_by_its_rollback(tmp_path):
    with Store.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(ValueError, match="the real failure"):
            with store.transaction() as con:
                con.execute("COMMIT")  # (the transaction is gone: ROLLBACK would fail)
                raise ValueError("the real failure")
        with store.transaction() as con:  # and the store is usable after
            con.execute("INSERT INTO ibdb_meta VALUES ('note', 'x')")
        assert store.query("SELECT value FROM ibdb_meta WHERE key = 'note'")[1] == [("x",)]


def test_read_only_commands_write_nothing(copy, tmp_path):
    db, shards = copy
    make_npz(tmp_path / "toy.npz")
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=100))
    (tmp_path / "out").mkdir()
    listing = sorted(p.name for p in db.parent.iterdir())
    before = digest(db), db.stat().st_mtime_ns
    for command in (["sql", "SELECT * FROM run_summary"], ["check"], ["plan", str(spec)],
                    ["sql", "SELECT count(*) FROM losses", "--format", "json"],
                    ["export", "losses", "--out", str(tmp_path / "out" / "l.parquet")]):
        result = ibdb(db, *command, shards=shards)
        assert result.exit_code == 0, (command, result.output)
    assert (digest(db), db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in db.parent.iterdir()) == listing  # (no .wal, no temp file)


# -- 3. check finds left-over files; --fix repairs ----------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_check_reports_leftover_temporary_stores_and_fix_removes_them(copy):
    db, shards = copy
    dead = _dead_pid()
    left = db.with_name(f".{db.name}.new-{dead}")
    wal = left.with_name(left.name + ".wal")
    alive = db.with_name(f".{db.name}.new-{os.getpid()}")  # a store being created right now
    for path in (left, wal, alive):
        path.write_bytes(b"half a store")
        old = time.time() - 3600
        os.utime(path, (old, old))
    got = ibdb(db, "check", shards=shards)
    out = failed_cleanly(got, 1, "PROBLEM  orphaned_shards", "temporary store", str(left),
                         f"process {dead}", "ibdb check --fix")
    assert str(alive) not in out
    fixed = ibdb(db, "check", "--fix", shards=shards)
    assert fixed.exit_code == 0, fixed.output
    assert f"fixed    removed {left}" in fixed.output and f"process {dead}" in fixed.output
    assert not left.exists() and not wal.exists() and alive.exists()
    assert "0 of 6 check(s) found problems" in fixed.output
    alive.unlink()


def test_check_names_folders_and_files_that_ingest_would_refuse(copy):
    db, shards = copy
    (run_id,) = [p.name for p in shards.iterdir()]
    (shards / "0123456789abcdef").mkdir()  # a run folder without run.json
    (shards / run_id / "losses-000000200-000000299-0123456789abcdef.parquet").mkdir()
    (shards / run_id / "spectrum-fedcba9876543210.parquet").symlink_to(shards / "nowhere")
    # (the real shard, not the folder named like one above: glob's order is the file system's)
    shutil.copy(next(p for p in (shards / run_id).glob("losses-*.parquet") if p.is_file()),
                shards / run_id / "copy of losses.parquet")
    (shards / ".submitit").mkdir()  # an executor's own folder is none of check's business
    rows_before = rows(db)
    out = failed_cleanly(ibdb(db, "check", shards=shards), 1, "PROBLEM  orphaned_shards: 4 row(s)",
                         "no run.json", "0123456789abcdef", "not a file", "broken link",
                         "not a shard name", "copy of losses.parquet")
    assert ".submitit" not in out
    assert rows(db) == rows_before


def test_check_fix_writes_back_dropped_views(copy):
    db, shards = copy
    con = duckdb.connect(str(db))
    con.execute("DROP VIEW run_summary")
    con.execute("DROP VIEW method_agreement")
    con.close()
    # ibdb itself still works (it re-creates its views in each session)
    assert ibdb(db, "sql", "SELECT count(*) FROM run_summary").exit_code == 0
    failed_cleanly(ibdb(db, "check", shards=shards), 1, "lacks the view(s)", "run_summary",
                   "method_agreement", "ibdb check --fix")
    fixed = ibdb(db, "check", "--fix", shards=shards)
    assert fixed.exit_code == 0, fixed.output
    assert "fixed    re-created the store's views; it lacked method_agreement, run_summary" \
        in fixed.output
    con = duckdb.connect(str(db), read_only=True)  # a plain DuckDB client sees them again
    assert con.execute("SELECT count(*) FROM run_summary").fetchone() == (1,)
    con.close()
    clean = ibdb(db, "check", "--fix", shards=shards)
    assert "none was missing" in clean.output and clean.exit_code == 0


def test_check_fix_on_a_missing_store_creates_nothing(tmp_path):
    failed_cleanly(ibdb(tmp_path / "none.duckdb", "check", "--fix"), 2, "no such store")
    assert not (tmp_path / "none.duckdb").exists()


# -- 5. sql ---------------------------------------------------------------------------------


def _strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_sql_json_writes_nan_and_infinities_as_null(copy):
    db, _ = copy
    got = ibdb(db, "sql", "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::FLOAT AS c, "
               "['-inf'::DOUBLE, 1.5] AS d, {'x': 'nan'::DOUBLE} AS e, 2.5 AS f", "--format",
               "json")
    assert got.exit_code == 0, got.output
    assert _strict_json(got.output) == [{"a": None, "b": None, "c": None, "d": [None, 1.5],
                                         "e": {"x": None}, "f": 2.5}]


@pytest.mark.parametrize("query", ["", "   ", "-- only a comment", "/* nothing */ ;"])
@pytest.mark.parametrize("write", [False, True])
def test_an_empty_sql_query_is_a_clear_error(copy, query, write):
    db, _ = copy
    before = digest(db)
    args = ["sql", *(["--write"] if write else []), "--", query]
    failed_cleanly(ibdb(db, *args), 2, "holds no statement", "empty or only comments",
                   "SELECT")
    assert digest(db) == before


def test_a_store_failure_after_sampling_says_the_shards_are_kept(built, tmp_path):
    db, _ = built
    target = tmp_path / "s.duckdb"
    shutil.copy(db, target)
    make_npz(tmp_path / "toy.npz")
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=3000, chunk_size=1000, seed=3))
    before = rows(target)
    got = subprocess.run([sys.executable, "-c", _FILE_LIMIT, "60000", "--db", str(target),
                          "--shards", str(tmp_path / "sh"), "--device", "cpu", "run",
                          str(spec)], capture_output=True, text=True, timeout=300)
    out = got.stdout + got.stderr
    assert got.returncode == 2, out
    assert "Traceback" not in out and len(out.encode()) < MAX_OUTPUT
    assert "File too large" in out and f"Shards sampled so far are kept in {tmp_path / 'sh'}" \
        in out
    assert rows(target) == before
    assert len(list((tmp_path / "sh").glob("*/losses-*.parquet"))) == 3
    written = sorted(p.name for p in (tmp_path / "sh").glob("*/*.parquet"))
    # the work is not lost: with room again, `ibdb run` resamples nothing and ingests it all
    again = ibdb(target, "run", str(spec), "--no-estimate", shards=tmp_path / "sh")
    assert again.exit_code == 0, again.output
    assert "ingested 3000 hypotheses" in again.output
    assert sorted(p.name for p in (tmp_path / "sh").glob("*/*.parquet")) == written
    assert len(rows(target)) == len(before) + 3000
