"""ncx2 fit benchmark: ibdb.stats.ncx2fit.fit_scaled_ncx2 against scipy.stats.ncx2.fit(floc=0).

Datasets of 10^4 losses each:
- ncx2: 0.003 * chi2'(3, 20), the model itself with known parameters;
- gp-like: a kernel space's test MSE, sum_j a_j chi2'(10, delta_j) over 300 directions with a
  decaying spectrum: a generalised chi-squared, nearly normal (the fit runs to df -> 0);
- misspecified: lognormal(0, 0.5) losses, which no ncx2 fits exactly.

Both fits run on the same data in the same process, timed as medians of repeats; both
log-likelihoods are scipy's ncx2.logpdf summed at each fit's parameters. The ratio is what
to compare across machines. Also timed: the bootstrap interval at 10 eps (ibdb.stats.bootstrap).

Usage: python benchmarks/bench_ncx2_fit.py [--repeats 7] [--scipy-repeats 3] [--n 10000]
Smallest settings (what tests/test_benchmarks.py runs, a few seconds):
       python benchmarks/bench_ncx2_fit.py --repeats 1 --scipy-repeats 1 --n 1000
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
import warnings

import numpy as np
from scipy import stats

from ibdb.stats.bootstrap import ncx2_bits_interval
from ibdb.stats.ncx2fit import fit_scaled_ncx2


def datasets(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2026)
    out = {"ncx2": stats.ncx2.rvs(3.0, 20.0, size=n, random_state=rng) * 0.003}
    m = 300
    a = 1.0 / (1.0 + np.arange(m)) ** 1.2
    a = a / (a.sum() * 10 * 1.6)  # mean loss ~0.6, like a one-hot test MSE
    delta = rng.gamma(0.6, 2.0, size=m)
    losses = np.zeros(n)
    for start in range(0, n, 2000):  # in chunks: (chunk, m) noncentral draws
        k = min(2000, n - start)
        losses[start:start + k] = (a * rng.noncentral_chisquare(10, delta, size=(k, m))).sum(1)
    out["gp-like"] = losses
    out["misspecified"] = rng.lognormal(0.0, 0.5, size=n)
    return out


def loglik(x: np.ndarray, df: float, nc: float, scale: float) -> float:
    with np.errstate(all="ignore"):
        if nc == 0.0:
            return float(stats.chi2.logpdf(x, df, scale=scale).sum())
        return float(stats.ncx2.logpdf(x, df, nc, scale=scale).sum())


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--scipy-repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args()
    print(f"# {platform.machine()} {platform.processor() or ''} python {platform.python_version()}"
          f" numpy {np.__version__} n={args.n}")
    header = ("dataset", "ibdb ms", "scipy ms", "ratio", "ibdb loglik", "scipy loglik",
              "ibdb - scipy", "converged", "interval ms")
    print(" | ".join(header))
    for name, x in datasets(args.n).items():
        fit_scaled_ncx2(x)  # warm caches and imports once
        ours_t, fit = median_time(lambda x=x: fit_scaled_ncx2(x), args.repeats)

        def scipy_fit(x=x):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                return stats.ncx2.fit(x, floc=0)

        theirs_t, (s_df, s_nc, _, s_scale) = median_time(scipy_fit, args.scipy_repeats)
        ll_ours = loglik(x, fit.df, fit.nc, fit.scale)
        ll_theirs = loglik(x, s_df, s_nc, s_scale)
        eps = [*np.quantile(x, [0.5, 0.1, 0.01, 0.001]),
               *(x.min() * q for q in (0.9, 0.5, 0.1, 1e-2, 1e-3, 1e-6))]
        boot_t, _ = median_time(lambda x=x, fit=fit, eps=eps: ncx2_bits_interval(x, fit, eps),
                                args.repeats)
        print(" | ".join([
            name, f"{ours_t * 1e3:.1f}", f"{theirs_t * 1e3:.0f}", f"{theirs_t / ours_t:.0f}x",
            f"{ll_ours:.6f}", f"{ll_theirs:.6f}", f"{ll_ours - ll_theirs:+.3g}",
            str(fit.converged), f"{boot_t * 1e3:.0f}",
        ]))
        assert math.isfinite(ll_ours)


if __name__ == "__main__":
    main()
