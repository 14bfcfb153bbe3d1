"""Recompute every estimate from the store: 100 runs x 10^4 losses x 10 eps.

The store is filled directly (no sampling): each run gets a spectrum of 60 components with 10
degrees of freedom each, and 10^4 losses drawn from that generalized chi-squared, so that the
exact, ncx2 and empirical methods all apply and agree. Timed: `Ibdb.estimate()` with the
default methods (exact, ncx2 with its bootstrap interval, empirical, bound where statistics
exist: none here), reading the losses from DuckDB and writing 3,000 estimate rows.

Baseline in the same run: the published procedure (`paper`: scipy's ncx2.fit with loc 0, then
its log-CDF) on a few runs, extrapolated to all 100.

Usage: python benchmarks/bench_estimate_recompute.py [--runs 100] [--paper-runs 3] [--repeats 3]
       [--losses 10000]
Smallest settings (what tests/test_benchmarks.py runs, a few seconds):
       python benchmarks/bench_estimate_recompute.py --runs 2 --paper-runs 1 --repeats 1 \
           --losses 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np

N_COMPONENTS = 60
DOF = 10
EPS_QUANTILES = np.geomspace(0.3, 1e-4, 10)


def fill_store(path: str, n_runs: int, n_losses: int) -> list[str]:
    from ibdb.store.database import Store

    rng = np.random.default_rng(0)
    store = Store.open(path)
    con = store.con
    run_ids = []
    for r in range(n_runs):
        run_id = f"{r:016x}"  # a run id: 16 lowercase hex digits
        lam = rng.uniform(0.05, 1.0, N_COMPONENTS)
        rsq = rng.uniform(0.0, 2.0, N_COMPONENTS) * lam
        weights = lam / (N_COMPONENTS * DOF)
        chi = rng.noncentral_chisquare(DOF, rsq / lam, size=(n_losses, N_COMPONENTS))
        losses = chi @ weights
        eps = [float(np.quantile(losses, q)) if q >= 1e-3 else
               float(np.quantile(losses, 1e-3)) * q / 1e-3 for q in EPS_QUANTILES]
        con.execute("INSERT INTO specs (run_id, experiment, task_name, space_name, "
                    "budget_name, space_kind, runner, n_hypotheses, eps, spec, identity) VALUES "
                    "(?, 'bench', 'synthetic', 'gp', 'b', 'gp', 'gp/1', ?, ?, '{}', '{}')",
                    [run_id, n_losses, eps])
        con.execute("INSERT INTO runs VALUES (?, 0, ?, ?, 'synthetic', NULL, '{}', '0', '0', "
                    "'0', 'cpu', 'bench', now(), now(), 0)", [run_id, N_COMPONENTS, DOF])
        residual_rows = [[float(np.sqrt(v))] + [0.0] * (DOF - 1) for v in rsq]
        con.executemany("INSERT INTO spectra VALUES (?, ?, ?, ?)",
                        [[run_id, j, float(lam[j]), residual_rows[j]]
                         for j in range(N_COMPONENTS)])
        cols = {"hid": np.arange(n_losses, dtype=np.int64), "mse": losses}  # noqa: F841
        con.execute(f"INSERT INTO losses (run_id, hypothesis_id, seed, test_mse, test_error, "
                    f"shard_sha256) SELECT '{run_id}', hid, hid, mse, NULL, 'bench' FROM cols")
        run_ids.append(run_id)
    store.close()
    return run_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--paper-runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--losses", type=int, default=10_000, help="stored losses per run")
    args = parser.parse_args()
    from ibdb.api import Ibdb

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.duckdb")
        t0 = time.perf_counter()
        run_ids = fill_store(db, args.runs, args.losses)
        print(f"filled {args.runs} runs x {args.losses} losses in "
              f"{time.perf_counter() - t0:.1f} s")
        api = Ibdb(db)
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            report = api.estimate()
            walls.append(time.perf_counter() - t0)
        assert not report.skipped, report.skipped[:3]
        wall = statistics.median(walls)
        print(f"ibdb estimate (exact + ncx2 with bootstrap interval + empirical): "
              f"{len(report.rows)} rows, median {wall:.1f} s over {args.repeats} "
              f"({', '.join(f'{w:.1f}' for w in walls)}); {wall / args.runs * 1e3:.0f} ms per run")
        t0 = time.perf_counter()
        api.estimate(run_ids=run_ids[: args.paper_runs], methods=["paper"])
        paper_per_run = (time.perf_counter() - t0) / args.paper_runs
        print(f"baseline (paper: scipy ncx2.fit + logcdf), {args.paper_runs} runs: "
              f"{paper_per_run:.2f} s per run, extrapolated {paper_per_run * args.runs:.0f} s")
        print(f"ratio baseline / ibdb: {paper_per_run * args.runs / wall:.1f}x")
        _, agree = api.sql("SELECT median(abs(ncx2_minus_exact)), max(abs(ncx2_minus_exact)) "
                           "FROM method_agreement WHERE exact_bits < 20")
        med, worst = agree[0]
        print(f"ncx2 - exact where exact < 20 bits: median |diff| {med:.3f} bits, "
              f"max {worst:.3f}")
        print(json.dumps({"wall_s": wall, "paper_s_per_run": paper_per_run}))


if __name__ == "__main__":
    main()
