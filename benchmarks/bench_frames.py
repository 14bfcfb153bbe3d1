"""A losses frame of 10^6 rows: ibdb's Python API against plain DuckDB, in one run.

Builds a store holding one run with N synthetic loss rows (inserted with DuckDB, no sampling),
then times, interleaved, REPEATS times each:

  api arrow      Ibdb(db).losses(run)                    (opens the store read-only, views, ...)
  api pandas     Ibdb(db).losses(run, frame="pandas")
  plain arrow    duckdb.connect(db, read_only=True).sql(<same query>).to_arrow_table()
  plain pandas   ... .df()
  plain unsorted the same without ORDER BY (what a user might write; row order not guaranteed)

and prints each median and the API's ratio to its plain baseline (both connect and close).

    python benchmarks/bench_frames.py [N] [REPEATS]

Smallest settings (what tests/test_benchmarks.py runs, about a second):

    python benchmarks/bench_frames.py 1000 1
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from ibdb.api import Ibdb
from ibdb.store.database import Store

RUN = "0123456789abcdef"  # a run id: 16 lowercase hex digits
QUERY = f"SELECT * FROM losses WHERE run_id = '{RUN}' ORDER BY run_id, hypothesis_id"


def build(db: Path, n: int) -> None:
    with Store.open(db) as store:
        store.con.execute(
            "INSERT INTO specs (run_id, experiment, task_name, space_name, budget_name, "
            "space_kind, runner, n_hypotheses, eps, spec, identity) VALUES (?, 'bench', 'task', "
            "'space', 'b', 'mlp', 'mlp/1', ?, [0.1], '{}', '{}')", [RUN, n])
        store.con.execute(
            "INSERT INTO losses SELECT ?, i, 1000 + i, random(), random(), random() / 100, 0.0, "
            "10, random() < 0.9, 'sha' || (i // 4096)::VARCHAR FROM range(?) t(i)", [RUN, n])
        store.con.execute("CHECKPOINT")


def plain(db: Path, query: str, how: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        rel = con.sql(query)
        return rel.to_arrow_table() if how == "arrow" else rel.df()
    finally:
        con.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        build(db, n)
        print(f"built a store with {n:,} loss rows in {time.perf_counter() - t0:.1f} s")
        api = Ibdb(db)
        cases = {
            "api arrow": lambda: api.losses(RUN),
            "api pandas": lambda: api.losses(RUN, frame="pandas"),
            "plain arrow": lambda: plain(db, QUERY, "arrow"),
            "plain pandas": lambda: plain(db, QUERY, "pandas"),
            "plain arrow unsorted": lambda: plain(db, QUERY.split(" ORDER BY")[0], "arrow"),
            "plain pandas unsorted": lambda: plain(db, QUERY.split(" ORDER BY")[0], "pandas"),
        }
        for case in cases.values():  # warm up: imports, the file in the page cache
            assert len(case()) == n
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):
            for name, case in cases.items():
                t0 = time.perf_counter()
                out = case()
                times[name].append(time.perf_counter() - t0)
                assert len(out) == n
                del out
        med = {name: statistics.median(ts) for name, ts in times.items()}
        print(f"median of {repeats} (seconds), {n:,} rows x 10 columns:")
        for name, m in med.items():
            print(f"  {name:24s} {m:.3f}  (min {min(times[name]):.3f}, "
                  f"max {max(times[name]):.3f})")
        for kind in ("arrow", "pandas"):
            api_m = med[f"api {kind}"]
            print(f"  ratio api/plain {kind:7s} {api_m / med[f'plain {kind}']:.2f}"
                  f"  (vs unsorted {api_m / med[f'plain {kind} unsorted']:.2f})")


if __name__ == "__main__":
    main()
