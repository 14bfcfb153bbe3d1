"""Ingest throughput: 10^7 loss rows in 100 shards, loaded by `Store.ingest` into a new store.

The shards are written with the real shard writer (`ibdb.run.shards.write_loss_shard`: temporary
name, fsync, rename, sha256 in the name, provenance in the Parquet metadata) from synthetic
losses; writing them is not timed. Timed: `Store.ingest([run folder])` into a fresh store file:
per shard the sha256 check against its name (every byte hashed, on threads), the ledger lookup,
metadata, schema, run and range validation, the insert with its row-order check, the ledger row,
and the run's loss-set digests; one transaction.

Baseline in the same run, like for like: what a competent DuckDB user writes to store the same
rows with the same columns as ibdb's `losses` table (run_id, hypothesis_id, seed, the loss
columns, shard_sha256: the 64 hex digits of the row's shard file), into a fresh store with the
same schema: one `INSERT INTO losses (...) SELECT ... FROM read_parquet([the same files],
filename = true) JOIN (file, sha256)` in one transaction; no validation, no ledger, no digests.
The baseline is handed the files' sha256s, computed before its clock starts (in its favour);
hashing them itself (hashlib, on threads as ibdb does) is timed apart and printed too. Also
timed: the same statement into a copy of the table with the (run_id, hypothesis_id) primary key
that store version 1 had, which shows what dropping that key's index gained.

Each side is timed in wall time and in this process's CPU time (all threads, DuckDB's
included), rounds alternating, medians reported with the ratios of the medians. After the first
round, untimed, the script checks that ibdb's store and the baseline's hold the very same rows.
Also printed, timed on the baseline's store after its clock stops: the loss-set digests
(`Store.refresh_loss_sets`), a part of ibdb's ingest the baseline skips.

Usage: python benchmarks/bench_ingest.py [--rows 10000000] [--shards 100] [--repeats 3]
Smallest settings (what tests/test_benchmarks.py runs, about a second):
       python benchmarks/bench_ingest.py --rows 10000 --shards 4 --repeats 1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _timing import Clock  # benchmarks/_timing.py (the script's folder)

# A run id is 16 lowercase hex digits (ibdb.run.shards.RunManifest); a fixed one for the bench.
RUN_ID = hashlib.sha256(b"benchmarks/bench_ingest.py").hexdigest()[:16]
COLUMNS = "run_id, hypothesis_id, seed, test_mse, test_error"


def write_shards(folder: Path, run_id: str, n_rows: int, n_shards: int) -> None:
    from ibdb.run import shards

    rng = np.random.default_rng(0)
    per = n_rows // n_shards
    shards.write_manifest(folder, {
        "run_id": run_id, "runner": "gp/1", "identity": {"bench": True},
        "spec": {"experiment": "bench", "task": {"name": "t", "eps": [0.5]},
                 "space": {"name": "s", "kind": "gp"},
                 "budget": {"name": "b", "n_hypotheses": n_rows}},
        "task": {"n_train": 100, "n_test": 100, "n_outputs": 10, "fingerprint": "synthetic",
                 "statistics": None},
        "runner_info": {}, "provenance": {
            "ibdb_version": "bench", "torch_version": "none", "duckdb_version": "bench",
            "device": "cpu", "host": platform.node(), "started_at": "2026-01-01T00:00:00+00:00"},
    })
    for k in range(n_shards):
        ids = np.arange(k * per, (k + 1) * per, dtype=np.int64)
        shards.write_loss_shard(folder, run_id, ids, ids * 7919 + 1, {
            "test_mse": rng.chisquare(10, per) / 10, "test_error": rng.random(per)},
            {"runner": "gp/1", "device": "cpu"})


def sha256s(paths: list[Path]) -> list[str]:
    """The baseline's own hashing: hashlib over each file, on threads."""

    def one(path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, paths))


def time_ibdb(folder: Path, db: Path, n_rows: int) -> Clock:
    from ibdb.store.database import Store

    with Store.open(db) as store:
        with Clock() as clock:
            report = store.ingest([folder])
    assert report.shards_skipped == 0 and report.hypotheses_inserted == n_rows, report
    return clock


def time_baseline(files: list[Path], digests: list[str], db: Path, n_rows: int, *,
                  primary_key: bool = False) -> tuple[Clock, Clock]:
    from ibdb.store.database import Store

    with Store.open(db) as store:
        con = store.con
        table = "losses"
        if primary_key:  # what the version-1 (run_id, hypothesis_id) key cost
            table = "losses_keyed"
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM losses LIMIT 0")
            con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (run_id, hypothesis_id)")
        names = [str(f) for f in files]
        with Clock() as clock:
            con.execute("BEGIN")
            inserted = con.execute(
                f"INSERT INTO {table} ({COLUMNS}, shard_sha256) SELECT {COLUMNS}, m.sha256 "
                "FROM read_parquet($files, filename = true) "
                "JOIN (SELECT unnest($files) AS filename, unnest($sha) AS sha256) m "
                "USING (filename)", {"files": names, "sha": digests}).fetchone()[0]
            con.execute("COMMIT")
        assert inserted == n_rows, inserted  # (same_rows checks they are ibdb's rows)
        with Clock() as digests_clock:  # not the baseline's work: what ibdb's ingest adds
            with store.transaction():
                store.refresh_loss_sets(None)
    return clock, digests_clock


def same_rows(ours: Path, theirs: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"ATTACH '{ours}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{theirs}' AS b (READ_ONLY)")
    differ = con.execute("SELECT (SELECT count(*) FROM (FROM a.losses EXCEPT ALL FROM b.losses)), "
                         "(SELECT count(*) FROM (FROM b.losses EXCEPT ALL FROM a.losses))"
                         ).fetchone()
    con.close()
    assert differ == (0, 0), f"ibdb's and the baseline's losses differ: {differ}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.rows // args.shards * args.shards
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards" / RUN_ID
        t0 = time.perf_counter()
        write_shards(folder, RUN_ID, n, args.shards)
        written = time.perf_counter() - t0
        files = sorted(folder.glob("losses-*.parquet"))
        digests = sha256s(files)  # handed to the baseline: not timed
        runs: dict[str, list[Clock]] = {"ibdb": [], "base": [], "keyed": [], "hash": [],
                                        "digests": []}
        for r in range(args.repeats):  # alternate, so drift in machine load hits both alike
            runs["ibdb"].append(time_ibdb(folder, Path(tmp) / f"ibdb{r}.duckdb", n))
            base, loss_sets = time_baseline(files, digests, Path(tmp) / f"base{r}.duckdb", n)
            runs["base"].append(base)
            runs["digests"].append(loss_sets)
            runs["keyed"].append(time_baseline(files, digests, Path(tmp) / f"keyed{r}.duckdb",
                                               n, primary_key=True)[0])
            with Clock() as clock:
                assert sha256s(files) == digests
            runs["hash"].append(clock)
            if r == 0:  # not timed: both stores hold the very same rows
                same_rows(Path(tmp) / "ibdb0.duckdb", Path(tmp) / "base0.duckdb")
            for name in (f"ibdb{r}.duckdb", f"base{r}.duckdb", f"keyed{r}.duckdb"):
                os.remove(Path(tmp) / name)
    wall = {k: statistics.median(c.wall for c in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c.cpu for c in v) for k, v in runs.items()}

    def each(key: str) -> str:
        return ", ".join(f"{c.wall:.2f}" for c in runs[key])

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; {n} rows in {args.shards} "
          f"shards (written in {written:.1f} s, not timed); medians of {args.repeats}")
    print(f"ibdb ingest (validated, ledger, digests): wall {wall['ibdb']:.3f} s = "
          f"{n / wall['ibdb']:,.0f} rows/s, CPU {cpu['ibdb']:.3f} s  (walls: {each('ibdb')})")
    print(f"baseline INSERT ... SELECT read_parquet(files) JOIN sha256, same columns: wall "
          f"{wall['base']:.3f} s = {n / wall['base']:,.0f} rows/s, CPU {cpu['base']:.3f} s  "
          f"(walls: {each('base')})")
    print(f"same INSERT into a table with the version-1 primary key: wall {wall['keyed']:.3f} s "
          f"= {n / wall['keyed']:,.0f} rows/s, CPU {cpu['keyed']:.3f} s")
    print(f"hashing the shard files (hashlib, threads; the baseline was handed them): wall "
          f"{wall['hash']:.3f} s, CPU {cpu['hash']:.3f} s")
    print(f"of ibdb's extra work, the loss-set digests alone (Store.refresh_loss_sets on the "
          f"baseline's store, after its clock): wall {wall['digests']:.3f} s, CPU "
          f"{cpu['digests']:.3f} s")
    print(f"ratio ibdb/baseline throughput: {wall['base'] / wall['ibdb']:.3f}; "
          f"ratio ibdb/baseline CPU: {cpu['ibdb'] / cpu['base']:.3f}; with the baseline hashing "
          f"too: throughput {(wall['base'] + wall['hash']) / wall['ibdb']:.3f}, CPU "
          f"{cpu['ibdb'] / (cpu['base'] + cpu['hash']):.3f}")
    print(f"target >= 2,000,000 rows/s: {'met' if n / wall['ibdb'] >= 2e6 else 'NOT met'}")


if __name__ == "__main__":
    main()
