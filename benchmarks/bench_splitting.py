"""Statistical validation of subset simulation (ibdb.run.splitting) on a law with a known tail.

L(z) = sum_j w_j (z_j + b_j)^2 over z ~ N(0, I_dim), w_j = (1 + j)^-0.8, b_j ~ N(0, 0.25): a
generalised chi-squared whose exact bits ibdb.stats.genchi2 computes. For each depth, ``--repeats``
independent runs (seeds 0..R-1) stop at the eps of that depth; reported per depth:
- mean error and its spread (bits) of single runs, and the mean Au-Beck SE;
- coverage of the single-run 95 % Au-Beck interval (bits +- 1.96 SE);
- coverage of independent-repeats 95 % t-intervals over groups of 5 runs;
- evaluations per run against plain Monte Carlo's ~1/p for ~1 hit (and ~100/p for 10 % CV).

Usage: python benchmarks/bench_splitting.py [--repeats 100] [--n 1000] [--depths 10 20 40 60]
       [--p0 0.1] [--dim 100]
Smallest settings (what tests/test_benchmarks.py runs, about a second; one group of 5 runs):
       python benchmarks/bench_splitting.py --repeats 5 --n 100 --dim 10 --depths 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import optimize

from ibdb.run.splitting import SplittingSettings, run_levels
from ibdb.stats.genchi2 import GenChi2
from ibdb.stats.subset_simulation import repeats_estimate, splitting_estimate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--p0", type=float, default=0.1)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--depths", type=float, nargs="+", default=[10.0, 20.0, 40.0, 60.0])
    args = ap.parse_args()

    rng = np.random.default_rng(1)
    w = 1.0 / (1.0 + np.arange(args.dim)) ** 0.8
    b = rng.normal(0.0, 0.5, args.dim)
    law = GenChi2.from_arrays(w, 1.0, b**2)

    def evaluate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ((z + b) ** 2 * w).sum(axis=1), np.ones(z.shape[0], dtype=bool)

    print(f"dim {args.dim}, N {args.n}, p0 {args.p0}, {args.repeats} repeats per depth")
    print(f"{'bits':>5} {'mean err':>9} {'sd':>6} {'AB se':>6} {'AB cov':>7} {'rep cov':>8} "
          f"{'levels':>6} {'evals':>8} {'MC 1/p':>9} {'sec':>6}")
    for depth in args.depths:
        eps = optimize.brentq(lambda x, d=depth: law.bits_below(x) - d, 1e-12, law.mean())
        t0 = time.perf_counter()
        runs, errs, ses, cov, evals, levels = [], [], [], 0, [], []
        for r in range(args.repeats):
            st = SplittingSettings(n_particles=args.n, p0=args.p0, target_eps=eps, seed=r,
                                   max_evaluations=10**8)
            run = run_levels(evaluate, args.dim, st).require_target()
            e = splitting_estimate(run.records, [eps]).estimates[0]
            runs.append(run.records)
            errs.append(e.bits - depth)
            ses.append(e.se_bits)
            cov += e.lo_bits <= depth <= e.hi_bits
            evals.append(run.n_evaluations)
            levels.append(len(run.records))
        groups = [repeats_estimate(runs[k:k + 5], [eps])[0]
                  for k in range(0, args.repeats - 4, 5)]
        rep_cov = sum(g.lo_bits <= depth <= g.hi_bits for g in groups)
        print(f"{depth:5.0f} {np.mean(errs):+9.3f} {np.std(errs, ddof=1):6.3f} "
              f"{np.mean(ses):6.3f} {cov:>3}/{args.repeats:<3} {rep_cov:>3}/{len(groups):<4} "
              f"{np.mean(levels):6.1f} {np.mean(evals):8.0f} {2.0**depth:9.2e} "
              f"{time.perf_counter() - t0:6.1f}")
    print("AB: Au-Beck single-run interval; rep: t-interval over groups of 5 independent runs.")
    print(f"plain MC needs ~100 / p evaluations for a 10 % CV; at 60 bits that is "
          f"{100 * 2.0**60:.1e}.")


if __name__ == "__main__":
    main()
