"""Cost of rare-event sampling on a network space: IB to --bits deep on an MLP space.

Digits, n_train 300 (n_test 300), an MLP of width 64 and depth 1 trained at most 20 epochs
with Adam (lr 1e-2, batch 32; at lr 1e-3 no network classifies its training set within 20
epochs) until it classifies its training set; --iid i.i.d. networks plus a splitting block of
--particles particles per level, p0 0.1, target --bits. Run through `Ibdb.run` as a user would
(shards, store, estimates); timed: the whole run (wall, and this process's CPU). Printed: the
levels and networks trained, and the splitting estimate beside ncx2's extrapolation and the
empirical fraction at three of the levels' thresholds.

Usage: python benchmarks/bench_splitting_mlp.py [--bits 30] [--particles 1000] [--repeats 1]
       [--iid 2000]
Smallest settings (what tests/test_benchmarks.py runs, about 10 s on one torch thread; --bits must
reach below the i.i.d. block's first level, log2(1 / p0) = 3.3 bits, for the splitting to have
levels):
       OMP_NUM_THREADS=1 python benchmarks/bench_splitting_mlp.py --bits 6 --particles 100 --iid 100
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=float, default=30.0)
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--iid", type=int, default=2000)
    args = ap.parse_args()
    from ibdb.api import Ibdb

    spec = {
        "name": "splitting-mlp",
        "tasks": [{"name": "digits-300", "source": {"kind": "digits"}, "n_train": 300,
                   "n_test": 300, "eps": [0.05]}],
        "spaces": [{"name": "mlp-64", "kind": "mlp", "width": 64, "depth": 1,
                    "optimizer": {"kind": "adam", "lr": 1e-2, "epochs": 20, "batch_size": 32},
                    "fit": {"criterion": "train_accuracy"}}],
        "budgets": [{"name": "b", "n_hypotheses": args.iid, "seed": 0,
                     "splitting": {"particles": args.particles, "p0": 0.1,
                                   "target_bits": args.bits, "repeats": args.repeats}}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        api = Ibdb(Path(tmp) / "s.duckdb", shards=Path(tmp) / "shards", device="cpu")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        api.run(path, estimate=False)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        _, levels = api.sql("SELECT repeat, count(*), sum(n_evaluations), min(threshold) "
                            "FILTER (level > 0) FROM splitting_levels GROUP BY repeat")
        _, fit = api.sql("SELECT avg(fitted::INTEGER) FROM losses")
        _, thresholds = api.sql("SELECT threshold FROM splitting_levels WHERE repeat = 0 AND "
                                "level > 0 ORDER BY level")
        grid = [t for (t,) in thresholds]
        if not grid:
            raise SystemExit(f"the splitting stopped before its first level: ask for more than "
                             f"{args.bits:g} --bits")
        _, per_level = api.sql("SELECT level, any_value(threshold), any_value(rho), "
                               "avg(accepted::INTEGER) FILTER (step > 0), count(DISTINCT loss) "
                               "FROM splitting_particles WHERE repeat = 0 GROUP BY level "
                               "ORDER BY level")
        eps = sorted({grid[0], grid[len(grid) // 2], grid[-1]}, reverse=True)
        api.estimate(methods=["ncx2", "empirical", "splitting"], eps=eps)
        _, rows = api.sql("SELECT eps, ncx2_bits, empirical_bits, empirical_is_lower_bound, "
                          "splitting_bits FROM method_agreement ORDER BY eps DESC")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; digits 300/300, MLP 64x1, "
          f"20 epochs; {args.iid} i.i.d. networks + splitting N={args.particles}, p0 0.1, "
          f"target {args.bits} bits, {args.repeats} repeat(s)")
    print(f"whole run: {wall:.0f} s wall, {cpu:.0f} s CPU (this process); fraction of i.i.d. "
          f"networks that fit: {fit[0][0]:.3f}")
    trained = args.iid + sum(int(e) for _, _, e, _ in levels)
    rate = trained / wall  # networks per second in this run, i.i.d. and splitting together
    print(f"baseline, plain Monte Carlo at this run's rate ({rate:.0f} networks/s): "
          f"~2^{args.bits:g}"
          f" = {2.0 ** args.bits:.2e} networks to see about one network {args.bits:g} bits deep, "
          f"{2.0 ** args.bits / rate / 86400:.3g} days; splitting trained {trained} "
          f"({2.0 ** args.bits / trained:.3g}x fewer)")
    for repeat, n_levels, evaluations, deepest in levels:
        print(f"repeat {repeat}: {n_levels} levels, {evaluations} networks trained, deepest "
              f"threshold {deepest:.5g}")
    print("repeat 0 per level: level, threshold, rho, acceptance, distinct losses among its "
          f"{args.particles} particles")
    for level, threshold, rho, acceptance, distinct in per_level:
        print(f"  {level:3d} {threshold:10.5g} {rho:8.5f} {acceptance or float('nan'):6.3f} "
              f"{distinct:6d}")
    print(f"{'eps (test MSE)':>15} {'ncx2':>8} {'empirical':>10} {'splitting':>10}")
    for e, ncx2, emp, emp_lower, split in rows:
        mark = ">=" if emp_lower else "  "
        print(f"{e:15.5g} {ncx2:8.2f} {mark}{emp:8.2f} {split:10.2f}")


if __name__ == "__main__":
    main()
