"""Subset simulation on real GP spaces, validated against `exact` (issue 11's must-show).

Digits with n_train 100, 300 and 1000 (n_test 300, RBF bandwidth 1.0, the quickstart's space
otherwise): the GP runner's `evaluate` turns each particle's noise into its test MSE, the
sampler (ibdb.run.splitting) moves that noise, and the exact bits come from the run's spectrum
(ibdb.stats.genchi2). For each depth (eps chosen so that exact is about 10, 20, 40, 60 bits),
``--repeats`` seeded runs; reported: the single runs' mean error and spread, the single-run
Au-Beck interval's coverage; the runs in groups of ``--group`` (what a budget with ``repeats:
5`` reports): the groups' mean error and how often their t-interval holds the exact value; and
the loss evaluations per run against plain Monte Carlo's 1/p.

Usage: python benchmarks/bench_splitting_gp.py [--n-train 100 300 1000] [--repeats 100]
       [--group 5] [--n-test 300] [--depths 10 20 40 60] [--particles 1000] [--p0 0.1]
Smallest settings (what tests/test_benchmarks.py runs, a few seconds; one group of 5 runs):
       python benchmarks/bench_splitting_gp.py --n-train 50 --n-test 50 --depths 5 --repeats 5 \
           --particles 100
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import optimize


def gp_space(n_train: int, n_test: int):
    """(evaluate(z) -> (test_mse, fitted), noise dim, exact law) of a digits GP space."""
    import torch

    from ibdb.data.task import load_task
    from ibdb.runners.gp import GPRunner
    from ibdb.spec.sources import Task
    from ibdb.spec.spaces import GPSpace
    from ibdb.stats.spectrum import gp_loss_distribution

    task = Task.model_validate({"name": "digits", "source": {"kind": "digits"},
                                "n_train": n_train, "n_test": n_test, "eps": [0.5]})
    data = load_task(task, spec_dir=Path("."))
    space = GPSpace.model_validate({"name": "rbf", "bandwidth": 1.0, "jitter": 1e-8})
    runner = GPRunner(space, data, device=torch.device("cpu"))
    spectrum = runner.spectrum()
    law = gp_loss_distribution(spectrum["eigenvalue"],
                               (spectrum["residuals"] ** 2).sum(axis=1),
                               n_test=data.x_test.shape[0], n_outputs=data.n_outputs)

    def evaluate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = runner.evaluate(z)
        return out["test_mse"], np.ones(len(z), dtype=bool)  # a GP interpolates: all fit

    return evaluate, runner.noise_dim, law


def eps_at(law, bits: float) -> float:
    return optimize.brentq(lambda x: law.bits_below(x) - bits, 1e-12, law.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--depths", type=float, nargs="+", default=[10.0, 20.0, 40.0, 60.0])
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--group", type=int, default=5)
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--p0", type=float, default=0.1)
    args = ap.parse_args()
    from ibdb.run.splitting import SplittingSettings, run_levels
    from ibdb.stats.subset_simulation import repeats_estimate, splitting_estimate

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; digits, n_test "
          f"{args.n_test}, RBF 1.0; N {args.particles}, p0 {args.p0}, {args.repeats} runs in "
          f"groups of {args.group}")
    print(f"{'n_train':>7} {'bits':>5} {'mean err':>9} {'sd':>6} {'AB se':>6} {'AB cov':>8} "
          f"{'grp err':>8} {'grp cov':>8} {'evals':>8} {'MC 1/p':>9} {'s/run':>6}")
    for n_train in args.n_train:
        evaluate, dim, law = gp_space(n_train, args.n_test)
        for depth in args.depths:
            eps = eps_at(law, depth)
            exact = law.bits_below(eps)
            runs, errs, ses, covered, evals = [], [], [], 0, []
            t0 = time.perf_counter()
            for seed in range(args.repeats):
                settings = SplittingSettings(n_particles=args.particles, p0=args.p0,
                                             target_eps=eps, seed=seed, max_evaluations=10**7)
                run = run_levels(evaluate, dim, settings).require_target()
                (est,) = splitting_estimate(run.records, [eps]).estimates
                runs.append(run.records)
                errs.append(est.bits - exact)
                ses.append(est.se_bits)
                covered += est.lo_bits <= exact <= est.hi_bits
                evals.append(run.n_evaluations)
            seconds = (time.perf_counter() - t0) / args.repeats
            k = args.group
            grouped = [repeats_estimate(runs[i:i + k], [eps])[0]
                       for i in range(0, len(runs) - k + 1, k)]
            rep_cov = sum(g.lo_bits <= exact <= g.hi_bits for g in grouped)
            grp_err = np.mean([g.bits - exact for g in grouped])
            print(f"{n_train:7d} {exact:5.1f} {np.mean(errs):+9.2f} {np.std(errs):6.2f} "
                  f"{np.mean(ses):6.2f} {covered:3d}/{args.repeats:<4d} {grp_err:+8.2f} "
                  f"{rep_cov:3d}/{len(grouped):<4d} {np.median(evals):8.0f} "
                  f"{2.0 ** exact:9.1e} {seconds:6.1f}")


if __name__ == "__main__":
    main()
