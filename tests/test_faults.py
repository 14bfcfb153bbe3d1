"""Faults: kill -9 at random moments, concurrent writers of one shard folder, damaged shards.

The kill trials run the real CLI in a subprocess and SIGKILL it after a seeded random delay, so
the kill lands while torch imports, while chunks are sampled, while a shard is renamed, or in the
middle of the ingest transaction; resuming must then give exactly the uninterrupted result.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from ibdb.api import Ibdb
from ibdb.core.errors import ShardError
from ibdb.run.execute import execute_run
from ibdb.run.shards import loss_shard_name, shard_range
from ibdb.store.database import Store

from conftest import make_npz, spec_dict, write_spec

CLI = [sys.executable, "-c", "from ibdb.cli import main; main()"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _rows(db: Path) -> np.ndarray:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT hypothesis_id, seed, test_mse, test_error FROM losses "
                           "ORDER BY run_id, hypothesis_id").fetchall()
    finally:
        con.close()
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


# -- kill -9 ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_result(tmp_path):
    n = 1200
    make_npz(tmp_path / "toy.npz")
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=n, chunk_size=50))
    # the reference is an uninterrupted CLI run; its duration sets the window for the kills
    t0 = time.monotonic()
    whole = _cli("--db", str(tmp_path / "ref.duckdb"), "--shards", str(tmp_path / "ref.shards"),
                 "--device", "cpu", "run", str(spec), "--no-estimate", cwd=tmp_path)
    window = time.monotonic() - t0
    assert whole.returncode == 0, whole.stderr
    expected = _rows(tmp_path / "ref.duckdb")
    assert len(expected) == n

    rng = random.Random(20261127)
    shards_at_kill = []
    for trial in range(20):
        db, shards = tmp_path / f"t{trial}.duckdb", tmp_path / f"t{trial}.shards"
        args = ["--db", str(db), "--shards", str(shards), "--device", "cpu", "run", str(spec),
                "--no-estimate"]
        proc = subprocess.Popen([*CLI, *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if trial % 2 == 0:  # anywhere from interpreter start-up to past the ingest's commit
            time.sleep(rng.uniform(0.05, 1.1) * window)
        else:  # while sampling: once a random number of shards is on disk (start-up is long)
            _wait_for_shards(shards, rng.randint(1, n // 50 - 1), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        shards_at_kill.append(len(list(shards.glob("*/losses-*.parquet"))))
        resumed = _cli(*args, cwd=tmp_path)
        assert resumed.returncode == 0, (trial, resumed.stderr)
        got = _rows(db)
        assert len(got) == n, (trial, len(got))
        assert len(np.unique(got[:, 0])) == n  # none duplicated, none missing
        np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial}")
    print(f"\nloss shards on disk at each kill (of {n // 50}): {shards_at_kill}")
    # the kills fell at every stage (the machine's load moves the timed ones): before any shard,
    # mid-run, and after every shard was written (in or after the ingest)
    mid = [k for k in shards_at_kill[1::2] if 0 < k < n // 50]
    assert 0 in shards_at_kill and len(mid) >= 8, shards_at_kill


def _wait_for_shards(folder: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*/losses-*.parquet"))) < count and proc.poll() is None:
        assert time.monotonic() < deadline, "the run wrote no shards for 60 s"
        time.sleep(0.002)


# -- concurrent writers ---------------------------------------------------------------------


@pytest.mark.slow  # three CLI subprocesses, each importing torch: ~10-25 s on a busy 2-core box
def test_two_processes_share_a_shard_folder_then_one_ingest(tmp_path):
    make_npz(tmp_path / "toy.npz")
    specs = [write_spec(tmp_path, spec_dict(seed=s, n_hypotheses=300, chunk_size=20), f"{s}.yaml")
             for s in (1, 2)]
    shared = tmp_path / "shared"
    procs = [subprocess.Popen([*CLI, "--db", str(tmp_path / "unused.duckdb"), "--shards",
                               str(shared), "--device", "cpu", "run", str(spec), "--no-ingest"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for spec in specs]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "load them with `ibdb ingest" in out
    assert not (tmp_path / "unused.duckdb").exists()  # --no-ingest never opens the store
    db = tmp_path / "all.duckdb"
    done = _cli("--db", str(db), "ingest", str(shared), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ingested 600 hypotheses from 32 shard file(s)" in done.stdout  # 2 x (15 + spectrum)
    got = _rows(db)
    for spec in specs:  # each run's rows equal those of the same spec run alone
        alone = Ibdb(tmp_path / f"{spec.stem}.duckdb", shards=tmp_path / spec.stem,
                     device="cpu")
        alone.run(spec, estimate=False)
        ref = _rows(tmp_path / f"{spec.stem}.duckdb")
        assert any(np.array_equal(got[i:i + 300], ref) for i in (0, 300))
    with Store.open(db, read_only=True) as store:
        assert store.con.execute("SELECT count(*), count(DISTINCT (run_id, hypothesis_id)) "
                                 "FROM losses").fetchone() == (600, 600)


# -- damaged shards -------------------------------------------------------------------------


@pytest.fixture
def two_runs(tmp_path):
    """Shard folders of two runs (200 hypotheses in chunks of 64, plus a spectrum each)."""
    make_npz(tmp_path / "toy.npz")
    api = Ibdb(tmp_path / "unused.duckdb", shards=tmp_path / "pristine", device="cpu")
    folders = []
    for seed in (1, 2):
        (planned,) = api.plan(write_spec(tmp_path, spec_dict(seed=seed), f"{seed}.yaml"))
        folders.append(execute_run(planned, shard_root=api.shard_root, device_name="cpu"))
    return tmp_path, folders


def _fresh_copy(tmp_path: Path, name: str) -> tuple[Path, list[Path]]:
    root = tmp_path / name
    shutil.copytree(tmp_path / "pristine", root)
    return root, sorted(p for p in root.iterdir() if p.is_dir())


def _write_named(folder: Path, first: int, last: int, data: bytes) -> Path:
    path = folder / loss_shard_name(first, last, hashlib.sha256(data).hexdigest())
    path.write_bytes(data)
    return path


def _wrong_schema(folder: Path, victim: Path) -> Path:
    tmp = folder.parent / "wrong.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT run_id, hypothesis_id, seed, test_mse::VARCHAR AS test_mse, "
                f"test_error FROM read_parquet('{victim}')) TO '{tmp}' (FORMAT parquet, "
                "KV_METADATA {ibdb: '{\"first_hypothesis\": 0, \"last_hypothesis\": 63}'})")
    con.close()
    victim.unlink()
    return _write_named(folder, 0, 63, tmp.read_bytes())


def _repeated_id(folder: Path, victim: Path) -> Path:
    """Same row count, range and metadata, but hypothesis first+5 twice and first+6 missing."""
    first, last = shard_range(victim)
    tmp = folder.parent / "repeated.parquet"
    con = duckdb.connect()
    meta = con.execute("SELECT value FROM parquet_kv_metadata(?) WHERE key = 'ibdb'",
                       [str(victim)]).fetchone()[0].decode().replace("'", "''")
    con.execute(f"COPY (SELECT * REPLACE (CASE hypothesis_id WHEN {first + 6} THEN {first + 5} "
                f"ELSE hypothesis_id END AS hypothesis_id) FROM read_parquet('{victim}')) TO "
                f"'{tmp}' (FORMAT parquet, KV_METADATA {{ibdb: '{meta}'}})")
    con.close()
    victim.unlink()
    return _write_named(folder, first, last, tmp.read_bytes())


def _bit_flip(victim: Path) -> Path:
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0x10
    victim.write_bytes(bytes(data))
    return victim


DAMAGE = {
    "truncated": (lambda f, v: v.write_bytes(v.read_bytes()[:len(v.read_bytes()) // 2]) and v,
                  "does not match the checksum in its name"),
    "bit-flipped": (lambda f, v: _bit_flip(v), "does not match the checksum in its name"),
    "wrong schema": (_wrong_schema, r"wrong schema for a losses shard \(test_mse VARCHAR"),
    "repeated id": (_repeated_id, "row 6 holds hypothesis 5 where hypothesis 6 belongs"),
    "empty": (lambda f, v: (v.unlink(), _write_named(f, 0, 63, b""))[1], "unreadable shard"),
    "copy under a name": (lambda f, v: Path(shutil.copy(v, f / "losses-backup.parquet")),
                          "not a shard name ibdb writes"),
    "copy under a range": (lambda f, v: Path(shutil.copy(v, f / v.name.replace(
        "000000000-000000063", "000000500-000000563"))), "but its name says 500..563"),
    "copy in another run": (lambda f, v: Path(shutil.copy(v, f.parent / [
        p for p in f.parent.iterdir() if p.is_dir() and p != f][0].name / v.name)),
        "byte-for-byte copy of"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_shard_is_rejected_by_name_and_the_rest_goes_in_once_removed(two_runs,
                                                                               damage):
    tmp_path, _ = two_runs
    root, (first, second) = _fresh_copy(tmp_path, "copy")
    victim = sorted(first.glob("losses-000000000-*.parquet"))[0]
    make, message = DAMAGE[damage]
    bad = make(first, victim)
    with Store.open(tmp_path / f"{damage}.duckdb") as store:
        with pytest.raises(ShardError, match=rf"{bad.name}: .*{message}"):
            store.ingest([first, second])
        # all or nothing: the call stored nothing, not even the other run's valid shards
        assert store.con.execute("SELECT (SELECT count(*) FROM losses) + (SELECT count(*) "
                                 "FROM shards) + (SELECT count(*) FROM specs)").fetchone() == (0,)
        bad.unlink()
        report = store.ingest([first, second])
        valid = 400 - (0 if victim.exists() else 64)
        assert report.hypotheses_inserted == valid
        by_run = dict(store.con.execute("SELECT run_id, count(*) FROM losses GROUP BY run_id "
                                        "").fetchall())
        assert sum(by_run.values()) == valid
        assert store.con.execute("SELECT count(*) - count(DISTINCT (run_id, hypothesis_id)) "
                                 "FROM losses").fetchone() == (0,)


def test_the_same_file_under_another_root_is_skipped_by_its_hash(two_runs):
    tmp_path, _ = two_runs
    _, first_copy = _fresh_copy(tmp_path, "a")
    _, second_copy = _fresh_copy(tmp_path, "b")
    with Store.open(tmp_path / "s.duckdb") as store:
        report = store.ingest(first_copy + second_copy)
        # byte-identical files: the ledger knows their sha256 and skips the second copies
        assert (report.hypotheses_inserted, report.shards_ingested, report.shards_skipped) == \
            (400, 10, 10)
        assert store.con.execute("SELECT count(*) FROM losses").fetchone() == (400,)


def test_a_chunk_written_twice_adds_no_rows_and_must_agree(two_runs):
    tmp_path, folders = two_runs
    # the same run sampled again elsewhere: same rows, different bytes (its write time differs)
    again = Ibdb(tmp_path / "unused.duckdb", shards=tmp_path / "again", device="cpu")
    (planned,) = again.plan(tmp_path / "1.yaml")
    twin = sorted(execute_run(planned, shard_root=again.shard_root,
                              device_name="cpu").glob("losses-000000064-*.parquet"))[0]
    root, (first, second) = _fresh_copy(tmp_path, "copy")
    target = first if first.name == planned.run_id else second
    assert not (target / twin.name).exists()
    shutil.copy(twin, target / twin.name)
    with Store.open(tmp_path / "s.duckdb") as store:
        report = store.ingest([first, second])
        assert report.hypotheses_inserted == 400 and report.shards_ingested == 11
        assert store.con.execute("SELECT count(*), count(DISTINCT (run_id, hypothesis_id)) "
                                 "FROM losses").fetchone() == (400, 400)
    # a second copy whose values disagree with the stored ones is refused
    con = duckdb.connect()
    liar = root / "liar.parquet"
    meta = con.execute("SELECT value FROM parquet_kv_metadata(?) WHERE key = 'ibdb'",
                       [str(twin)]).fetchone()[0].decode().replace("'", "''")
    con.execute(f"COPY (SELECT * REPLACE (test_mse + 1 AS test_mse) FROM read_parquet('{twin}')) "
                f"TO '{liar}' (FORMAT parquet, KV_METADATA {{ibdb: '{meta}'}})")
    bad = _write_named(target, 64, 127, liar.read_bytes())
    with Store.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(ShardError, match=rf"{bad.name}: 64 hypotheses are already stored "
                                             "with other values"):
            store.ingest([target])
    # and so is a second copy that repeats an id (what a primary key would have caught)
    bad.unlink()
    bad = _repeated_id(target, Path(shutil.copy(twin, root / twin.name)))
    with Store.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(ShardError, match=rf"{bad.name}: row 6 holds hypothesis 69 where "
                                             "hypothesis 70 belongs"):
            store.ingest([target])
        assert store.con.execute("SELECT count(*), count(DISTINCT (run_id, hypothesis_id)) "
                                 "FROM losses").fetchone() == (400, 400)
