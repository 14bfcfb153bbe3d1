"""Reading estimates with their stale flags: cost against the number of stored losses.

Two stores with the same runs and estimates (10 runs, 5 methods x 10 eps each) and 10^4 or
10^6 losses per run (10^5 or 10^7 in all). Timed, in one process, medians of --repeats:

- `SELECT * FROM ib_estimates` and `SELECT * FROM stale_estimates` (the `ibdb check` query):
  they join the digests stored at ingest, so their cost should not grow with the losses;
- the baseline in the same run: store version 2's way, the md5 digest of every loss set
  recomputed from the losses on every read (the view this replaced);
- what storing costs instead: recomputing the stored digests of every run
  (`Store.refresh_loss_sets`, run once per ingest for the runs it touched).

Usage: python benchmarks/bench_ib_estimates.py [--runs 10] [--repeats 7] [--sizes 10000 1000000]
Smallest settings (what tests/test_benchmarks.py runs, a few seconds):
       python benchmarks/bench_ib_estimates.py --runs 2 --repeats 1 --sizes 100 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

METHODS = ("exact", "ncx2", "paper", "empirical", "bound")
N_EPS = 10

# Store version 2's loss_sets view: md5 over "id:value" of every loss, on every read.
V2_LOSS_SETS = """
SELECT run_id, loss, count(*) AS n,
       md5(string_agg(hypothesis_id::VARCHAR || ':' || value::VARCHAR, ','
                      ORDER BY hypothesis_id)) AS digest
FROM (UNPIVOT (SELECT run_id, hypothesis_id, test_mse, test_error FROM losses
               WHERE fitted IS NOT FALSE)
      ON test_mse, test_error INTO NAME loss VALUE value)
GROUP BY run_id, loss
"""


def fill(path: str, n_runs: int, per_run: int) -> None:
    from ibdb.store.database import Store

    with Store.open(path) as store, store.transaction() as con:
        con.execute("INSERT INTO specs (run_id, experiment, task_name, space_name, budget_name, "
                    "space_kind, runner, n_hypotheses, eps, spec, identity) SELECT "
                    "printf('%016x', r), 'bench', 'synthetic', 'gp', 'b', 'gp', 'gp/1', $n, "
                    "[0.1, 0.2], '{}', '{}' FROM range($runs) t(r)",
                    {"n": per_run, "runs": n_runs})
        con.execute("INSERT INTO losses (run_id, hypothesis_id, seed, test_mse, test_error, "
                    "shard_sha256) SELECT printf('%016x', i // $n), i % $n, i, random(), "
                    "round(random() * 100) / 100, 'bench' FROM range($total) t(i)",
                    {"n": per_run, "total": n_runs * per_run})
        store.refresh_loss_sets(None)
        con.execute("INSERT INTO estimates (run_id, loss, method, method_version, eps, bits, "
                    "lower_bits, upper_bits, bound, n, params, diagnostics, loss_set_hash, "
                    "loss_set) SELECT d.run_id, 'test_mse', m.method, '1', e.eps, 3.0, 2.0, "
                    "4.0, 'point', d.n, '{}', '{}', d.digest, 'test_mse' FROM loss_set_digests "
                    "d, (SELECT unnest($methods) AS method) m, "
                    "(SELECT (k + 1) / 100 AS eps FROM range($eps) t(k)) e "
                    "WHERE d.loss = 'test_mse'", {"methods": list(METHODS), "eps": N_EPS})


def timed(fn, repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 1_000_000],
                        metavar=("SMALL", "LARGE"), help="losses per run of the two stores")
    args = parser.parse_args()
    from ibdb.store.database import Store

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.runs} runs, {len(METHODS)} methods x {N_EPS} eps "
          f"each; medians of {args.repeats}")
    print(f"{'losses':>10s} {'ib_estimates':>13s} {'stale_est.':>11s} {'v2 digests':>11s} "
          f"{'v2 / now':>9s} {'refresh all':>12s}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for per_run in args.sizes:
            db = os.path.join(tmp, f"s{per_run}.duckdb")
            fill(db, args.runs, per_run)
            with Store.open(db, read_only=True) as store:
                n_rows = len(store.query("SELECT * FROM ib_estimates")[1])
                assert n_rows == args.runs * len(METHODS) * N_EPS, n_rows
                assert not store.query("SELECT * FROM stale_estimates")[1]
                now = timed(lambda s=store: s.query("SELECT * FROM ib_estimates"), args.repeats)
                stale = timed(lambda s=store: s.query("SELECT * FROM stale_estimates"),
                              args.repeats)
                old = timed(lambda s=store: s.query(V2_LOSS_SETS), max(3, args.repeats // 2))
            with Store.open(db) as store:
                refresh = timed(lambda s=store: s.refresh_loss_sets(None), 3)
            total = args.runs * per_run
            results[total] = now
            print(f"{total:10.0e} {now * 1e3:10.1f} ms {stale * 1e3:8.1f} ms {old:9.2f} s "
                  f"{old / now:8.1f}x {refresh:10.2f} s")
    (small, t_small), (large, t_large) = results.items()
    print(f"ib_estimates at {large:.0e} losses / at {small:.0e}: {t_large / t_small:.2f}x (does "
          f"not grow with the losses when ~1)")


if __name__ == "__main__":
    main()
