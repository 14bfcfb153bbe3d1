"""Tests of the bootstrap interval for the ncx2 estimate (ibdb.stats.bootstrap).

Oracles: an mpmath Poisson mixture of regularised incomplete gammas (40 digits) for the
vectorised log-CDFs; scipy's ncx2.logcdf; replicates refitted to convergence by the main
fit's own optimiser (whose surrogate is checked against scipy in tests/stats/test_ncx2fit.py); and,
for coverage, the true I(eps) of the law the losses are drawn from.
"""

from __future__ import annotations

import math
import tracemalloc

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

from ibdb.core.errors import EstimateError
from ibdb.stats.bootstrap import ncx2_bits_interval, replicate_thetas, resampled_stats, theta_of_fit
from ibdb.stats.ncx2cdf import ncx2_logcdf_many, ncx2_logcdf_saddlepoint, ncx2_logcdf_small_argument
from ibdb.stats.ncx2fit import Compressed, fit_scaled_ncx2, maximise

LN2 = math.log(2.0)


def _oracle_log_cdf(log_y: float, df: float, nc: float) -> float:
    """Natural log of P[chi2'(df, nc) <= e^log_y] at 40 digits (Poisson mixture)."""
    mp.mp.dps = 40
    y = mp.exp(mp.mpf(log_y))
    a, h = mp.mpf(df) / 2, mp.mpf(nc) / 2
    total, j = mp.mpf(0), 0
    while True:
        log_w = -h + (j * mp.log(h) if j else 0) - mp.loggamma(j + 1)
        term = mp.exp(log_w) * mp.gammainc(a + j, 0, y / 2, regularized=True)
        total += term
        if (j > h and term < total * mp.mpf(10) ** -45) or h == 0:
            return float(mp.log(total))
        j += 1


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = stats.ncx2.rvs(3.0, 20.0, size=3000, random_state=rng) * 0.003
    return x, fit_scaled_ncx2(x)


def _eps(x: np.ndarray) -> list[float]:
    # from the bulk to far below the sample minimum (extrapolated)
    return [*np.quantile(x, [0.5, 0.1, 0.01]), x.min() * 0.5, x.min() * 1e-3, x.min() * 1e-9]


# ------------------------------------------------------------------ the vectorised log-CDFs
# (df, nc, log y): y from the bulk to e^-600 (~900 bits and more)
_POINTS = [(df, nc, ly) for df, nc in [(2.5, 3.7), (7.3, 0.9), (40.5, 12.0), (1.0, 2.0)]
           for ly in (-600.0, -100.0, -10.0, -1.0, 0.5)]


@pytest.mark.parametrize(("df", "nc", "log_y"), _POINTS)
def test_saddlepoint_matches_mpmath(df, nc, log_y):
    # Measured error: 0.014 bits at df = 2.5 (0.005 beyond 20 bits), <= 0.001 bits at
    # df = 7.3, < 1e-4 at df = 40.5, 0.042 bits at df = 1 (at every depth to 3000+ bits).
    want = _oracle_log_cdf(log_y, df, nc)
    if want > math.log(0.4):  # the left-tail formula is for x below the mean
        return
    got = float(ncx2_logcdf_saddlepoint(np.exp(log_y), df, nc, 1.0))
    tol = {2.5: 0.02, 7.3: 0.002, 40.5: 1e-4, 1.0: 0.05}[df]
    assert abs(got - want) / LN2 < tol
    assert math.isfinite(got)


@pytest.mark.parametrize(("df", "nc", "log_y"), _POINTS + [(1e-6, 20.0, -3000.0),
                                                          (0.3, 0.0, -700.0)])
def test_small_argument_series_matches_mpmath(df, nc, log_y):
    if not (log_y <= LN2 and math.exp(log_y) * nc <= 4.0):
        return  # outside the series' domain
    got = float(ncx2_logcdf_small_argument(np.array([log_y]), np.array([df]), np.array([nc]))[0])
    assert got == pytest.approx(_oracle_log_cdf(log_y, df, nc), rel=1e-12, abs=1e-12)


def test_logcdf_many_agrees_with_scipy_and_oracle_and_never_underflows():
    df = np.array([[1e-6], [0.5], [3.0], [20.0], [300.0]])
    nc = np.array([[2000.0], [3.0], [20.0], [100.0], [0.0]])
    x = np.geomspace(1e-300, 1.0, 25)[None, :] * np.ones((5, 1))
    got = ncx2_logcdf_many(x, df, nc, 0.01)
    assert np.all(np.isfinite(got)) and np.all(got <= 0)
    assert np.all(np.diff(got, axis=1) >= 0)  # monotone in x
    for i in range(5):
        for j in range(0, 25, 4):
            want = _oracle_log_cdf(math.log(x[i, j] / 0.01), df[i, 0], nc[i, 0])
            # measured <= 0.005 bits; the deep saddlepoint for df < 2 is allowed 0.05
            assert abs(got[i, j] - want) / LN2 < 0.05
            ref = stats.ncx2.logcdf(x[i, j] / 0.01, df[i, 0], max(nc[i, 0], 1e-300))
            if math.isfinite(ref) and ref > -60:  # scipy's range: the same numbers
                assert got[i, j] == pytest.approx(ref, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------- replicate refits
@pytest.mark.parametrize("kind", ["ncx2", "normal-like"])
def test_replicate_refits_reach_the_replicate_optimum(kind):
    rng = np.random.default_rng(4)
    if kind == "ncx2":
        x = stats.ncx2.rvs(3.0, 20.0, size=3000, random_state=rng)
    else:  # GP-like losses: df is poorly determined and the replicates spread to df = 0
        x = np.abs(rng.normal(0.5, 0.02, size=3000))
    fit = fit_scaled_ncx2(x)
    xm = float(x.mean())
    comp = Compressed(x / xm)
    st = resampled_stats(comp, 24, np.random.default_rng(0))
    theta = replicate_thetas(comp, theta_of_fit(fit, xm), st)
    for b in range(st.shape[0]):
        class One:  # the replicate as a data set for the main fit's optimiser
            stats = st[b]

            def loglik(self, th, _b=b):
                return comp.loglik(th, st[_b])

        ref, _, _, _ = maximise(One(), theta[b].copy())
        # as good as the fully converged optimum (to 1e-6 nats), starting from ours
        assert comp.loglik(theta[b], st[b]) >= comp.loglik(ref, st[b]) - 1e-6


def test_resampled_stats_use_the_draws_of_one_n_boot_by_n_call():
    # The replicates are formed a block of rows at a time (here 64, 64, 64, 8 rows), from the
    # same stream of draws as one (n_boot, n) call: the same replicates as before the blocks.
    n, n_boot = 30_000, 200
    x = np.random.default_rng(5).lognormal(0.0, 0.5, size=n)
    comp = Compressed(x / x.mean())
    got = resampled_stats(comp, n_boot, np.random.default_rng(9))
    idx = np.random.default_rng(9).integers(0, n, size=(n_boot, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in idx])
    want = counts.astype(np.float64) @ comp.features()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_peak_memory_does_not_grow_with_n_boot_times_n():
    # Before, the counts of all replicates were held at once, three (n_boot, n) arrays: a
    # tracemalloc peak of 508 MB at n = 10^5 (measured). Now the feature matrix (n x ~30
    # doubles), a block of counts of at most 16 MiB and O(n) more: measured 22 MB at
    # n = 2 10^4 and 41 MB at 10^5, against 32 and 160 MB for one (n_boot, n) array.
    x = stats.ncx2.rvs(3.0, 20.0, size=100_000, random_state=np.random.default_rng(2)) * 0.003
    eps = [float(np.quantile(x, 0.01)), float(x.min() * 1e-3)]
    ncx2_bits_interval(x[:50], fit_scaled_ncx2(x[:50]), eps)  # imports outside the trace
    peaks = {}
    for n in (20_000, 100_000):
        fit = fit_scaled_ncx2(x[:n])
        tracemalloc.start()
        try:
            ncx2_bits_interval(x[:n], fit, eps, n_boot=200)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[100_000] < 0.5 * 200 * 100_000 * 8, peaks
    assert peaks[100_000] - peaks[20_000] < 0.25 * 200 * 80_000 * 8, peaks


# ------------------------------------------------------------------------ the interval itself
def test_interval_is_deterministic_and_ordered(data):
    x, fit = data
    eps = _eps(x)
    a = ncx2_bits_interval(x, fit, eps, seed=3)
    b = ncx2_bits_interval(x, fit, eps, seed=3)
    c = ncx2_bits_interval(x, fit, eps, seed=4)
    assert a == b
    assert a != c
    lows, highs = np.array(a).T
    points = [-fit.logcdf(e) / LN2 for e in eps]
    assert np.all(lows >= 0)
    assert np.all(lows <= points) and np.all(points <= highs)
    # every replicate's bits fall as eps grows, so both ends do too (eps are in falling order)
    assert np.all(np.diff(lows) >= 0) and np.all(np.diff(highs) >= 0)
    # wider where the tail is extrapolated
    widths = highs - lows
    assert widths[-1] > widths[0]


def test_higher_confidence_gives_a_wider_interval(data):
    x, fit = data
    eps = _eps(x)
    narrow = np.array(ncx2_bits_interval(x, fit, eps, confidence=0.5, seed=1))
    wide = np.array(ncx2_bits_interval(x, fit, eps, confidence=0.99, seed=1))
    assert np.all(wide[:, 0] <= narrow[:, 0]) and np.all(wide[:, 1] >= narrow[:, 1])


def test_huge_eps_gives_zero_bits(data):
    x, fit = data
    ((lo, hi),) = ncx2_bits_interval(x, fit, [1e6 * x.max()])
    assert lo == hi == 0.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"eps": []}, "non-empty list"),
        ({"eps": [0.1, -1.0]}, "finite numbers > 0"),
        ({"eps": [0.1], "confidence": 1.0}, "confidence must lie in"),
        ({"eps": [0.1], "n_boot": 5}, "n_boot must be an integer >= 20"),
    ],
)
def test_bad_arguments_raise(data, kwargs, fragment):
    x, fit = data
    with pytest.raises(EstimateError, match=fragment):
        ncx2_bits_interval(x, fit, **kwargs)


def test_mismatched_losses_raise(data):
    x, fit = data
    with pytest.raises(EstimateError, match="fit was made from 3000 losses but 2999"):
        ncx2_bits_interval(x[:-1], fit, [0.01])


# ----------------------------------------------------------------------------------- coverage
@pytest.mark.slow
@pytest.mark.parametrize("n", [2000, 10_000])
def test_coverage_of_the_true_bits(n):
    """95% intervals cover the true I(eps) in >= 90% of 200 repetitions.

    Losses: 0.01 * chi2'(3, 20); eps at the true 10%, 1% quantiles and at P = 1e-9 and 1e-15
    (below the sample minimum in every repetition, so the tail is extrapolated). Measured
    coverage (2026-11, printed with -s): n = 2000: 0.95, 0.92, 0.94, 0.935; n = 10^4: 0.945,
    0.935, 0.96, 0.96 (binomial standard error ~0.015).
    """
    df, nc, scale = 3.0, 20.0, 0.01
    probs = [0.1, 0.01, 1e-9, 1e-15]
    eps = [scale * stats.ncx2.ppf(p, df, nc) for p in probs]
    true_bits = [-math.log2(p) for p in probs]
    reps = 200
    covered = np.zeros(len(eps))
    below_min = 0
    for r in range(reps):
        x = stats.ncx2.rvs(df, nc, size=n, random_state=10_000 + r) * scale
        fit = fit_scaled_ncx2(x)
        below_min += eps[2] < x.min()
        for j, (lo, hi) in enumerate(ncx2_bits_interval(x, fit, eps, seed=r)):
            covered[j] += lo <= true_bits[j] <= hi
    coverage = covered / reps
    print(f"n = {n}: coverage at P = {probs}: {coverage}")
    assert below_min == reps
    assert np.all(coverage >= 0.90), f"coverage {coverage} (n = {n})"
