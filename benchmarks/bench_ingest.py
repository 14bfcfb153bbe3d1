"""Ingest throughput: 10^7 loss rows in 100 shards, loaded by `Store.ingest` into a new store.

The shards are written with the real shard writer (`ibdb.run.shards.write_loss_shard`: temporary
name, fsync, rename, sha256 in the name, provenance in the Parquet metadata) from synthetic
losses; writing them is not timed. Timed: `Store.ingest([run folder])` into a fresh store file:
per shard the sha256 check against its name, the ledger lookup, metadata, schema, run and
range validation, the insert with its row-order check, and the ledger row; one transaction.

Baseline in the same run: DuckDB's own `INSERT INTO losses SELECT ... FROM read_parquet(glob)`
into a fresh store with the same schema: one statement, no hashing, no validation, no ledger.
Also timed: the same statement into a copy of the table with the (run_id, hypothesis_id)
primary key that store version 1 had, which shows what dropping that key's index gained.

Usage: python benchmarks/bench_ingest.py [--rows 10000000] [--shards 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


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


def time_ibdb(folder: Path, db: Path) -> float:
    from ibdb.store.database import Store

    with Store.open(db) as store:
        t0 = time.perf_counter()
        report = store.ingest([folder])
        elapsed = time.perf_counter() - t0
    assert report.shards_skipped == 0
    return elapsed


def time_baseline(folder: Path, db: Path, *, primary_key: bool = False) -> float:
    from ibdb.store.database import Store

    with Store.open(db) as store:
        table = "losses"
        if primary_key:  # what the version-1 (run_id, hypothesis_id) key cost
            table = "losses_keyed"
            store.con.execute(f"CREATE TABLE {table} AS SELECT * FROM losses LIMIT 0")
            store.con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (run_id, hypothesis_id)")
        t0 = time.perf_counter()
        store.con.execute("BEGIN")
        store.con.execute(
            f"INSERT INTO {table} (run_id, hypothesis_id, seed, test_mse, test_error, "
            "shard_sha256) SELECT run_id, hypothesis_id, seed, test_mse, test_error, "
            f"filename FROM read_parquet('{folder}/losses-*.parquet', filename = true)")
        store.con.execute("COMMIT")
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards" / "benchrun00000000"
        t0 = time.perf_counter()
        write_shards(folder, folder.name, args.rows, args.shards)
        written = time.perf_counter() - t0
        ibdb_s, base_s, keyed_s = [], [], []
        for r in range(args.repeats):  # alternate, so drift in machine load hits both alike
            ibdb_s.append(time_ibdb(folder, Path(tmp) / f"ibdb{r}.duckdb"))
            base_s.append(time_baseline(folder, Path(tmp) / f"base{r}.duckdb"))
            keyed_s.append(time_baseline(folder, Path(tmp) / f"keyed{r}.duckdb",
                                         primary_key=True))
            for name in (f"ibdb{r}.duckdb", f"base{r}.duckdb", f"keyed{r}.duckdb"):
                os.remove(Path(tmp) / name)
    n = args.rows
    ours, theirs = statistics.median(ibdb_s), statistics.median(base_s)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; {n} rows in {args.shards} "
          f"shards (written in {written:.1f} s, not timed); median of {args.repeats}")
    print(f"ibdb ingest (validated, ledger): {ours:.2f} s = {n / ours:,.0f} rows/s  "
          f"(runs: {', '.join(f'{x:.2f}' for x in ibdb_s)})")
    print(f"baseline INSERT ... read_parquet(glob): {theirs:.2f} s = {n / theirs:,.0f} rows/s  "
          f"(runs: {', '.join(f'{x:.2f}' for x in base_s)})")
    keyed = statistics.median(keyed_s)
    print(f"same INSERT into a table with the version-1 primary key: {keyed:.2f} s = "
          f"{n / keyed:,.0f} rows/s")
    print(f"ratio ibdb/baseline throughput: {theirs / ours:.2f}; target >= 2,000,000 rows/s: "
          f"{'met' if n / ours >= 2e6 else 'NOT met'}")


if __name__ == "__main__":
    main()
