"""Tests of the maximum-likelihood scaled non-central chi-squared fit (ibdb.ncx2fit).

Oracles: the generating parameters (with standard errors from the observed information of
scipy's own ncx2 log-density), and scipy.stats.ncx2.fit(floc=0)'s log-likelihood.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from ibdb.errors import EstimateError
from ibdb.genchi2 import GenChi2
from ibdb.ncx2fit import Ncx2Fit, fit_scaled_ncx2, ncx2_logpdf

LN2 = math.log(2.0)


def _scipy_loglik(x: np.ndarray, df: float, nc: float, scale: float) -> float:
    if nc == 0.0:
        return float(stats.chi2.logpdf(x, df, loc=0, scale=scale).sum())
    return float(stats.ncx2.logpdf(x, df, nc, loc=0, scale=scale).sum())


def _standard_errors(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """SEs of (df, nc, scale) from the numerical observed information of scipy's log-density."""
    h = 1e-4 * np.abs(theta)
    hess = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            def ll(di, dj, i=i, j=j):
                t = theta.copy()
                t[i] += di * h[i]
                t[j] += dj * h[j]
                return _scipy_loglik(x, *t)
            hess[i, j] = (ll(1, 1) - ll(1, -1) - ll(-1, 1) + ll(-1, -1)) / (4 * h[i] * h[j])
    return np.sqrt(np.diag(np.linalg.inv(-hess)))


def test_logpdf_matches_scipy():
    rng = np.random.default_rng(0)
    for df, nc in [(0.4, 0.01), (2.0, 3.0), (5.0, 30.0), (300.0, 2000.0), (3.0, 0.0)]:
        y = stats.ncx2.rvs(df, max(nc, 1e-300), size=500, random_state=rng)
        ref = stats.ncx2.logpdf(y, df, nc) if nc > 0 else stats.chi2.logpdf(y, df)
        np.testing.assert_allclose(ncx2_logpdf(y, df, nc), ref, rtol=1e-10, atol=1e-10)


def test_recovers_known_parameters():
    true = np.array([4.0, 6.0, 0.02])  # df, nc, scale
    rng = np.random.default_rng(11)
    x = stats.ncx2.rvs(true[0], true[1], size=20_000, random_state=rng) * true[2]
    fit = fit_scaled_ncx2(x)
    got = np.array([fit.df, fit.nc, fit.scale])
    se = _standard_errors(x, got)
    # tolerance: 4 standard errors (about 4.5%, 7%, 3% relative here)
    assert np.all(np.abs(got - true) < 4 * se), (got, se)
    assert fit.converged
    assert fit.n == 20_000
    # the reported log-likelihood is the model's, as scipy computes it
    assert fit.loglik == pytest.approx(_scipy_loglik(x, *got), rel=1e-10)


@pytest.mark.parametrize(
    ("df", "nc", "scale", "seed"),
    [(5.0, 3.0, 0.1, 1), (1.0, 50.0, 0.01, 2)],
)
def test_loglik_at_least_scipy_fit(df, nc, scale, seed):
    rng = np.random.default_rng(seed)
    x = stats.ncx2.rvs(df, nc, size=2000, random_state=rng) * scale
    fit = fit_scaled_ncx2(x)
    s_df, s_nc, _, s_scale = stats.ncx2.fit(x, floc=0)
    ref = _scipy_loglik(x, s_df, s_nc, s_scale)
    assert fit.loglik >= ref - 1e-6 * abs(ref)


@pytest.mark.slow
def test_loglik_at_least_scipy_fit_1e4_and_faster():
    rng = np.random.default_rng(3)
    x = stats.ncx2.rvs(3.0, 20.0, size=10_000, random_state=rng) * 0.003
    t0 = time.perf_counter()
    fit = fit_scaled_ncx2(x)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_df, s_nc, _, s_scale = stats.ncx2.fit(x, floc=0)
    theirs = time.perf_counter() - t0
    ref = _scipy_loglik(x, s_df, s_nc, s_scale)
    assert fit.loglik >= ref - 1e-6 * abs(ref)
    assert ours < theirs


def test_central_data_fits_near_zero_noncentrality():
    rng = np.random.default_rng(4)
    x = stats.chi2.rvs(6.0, size=5000, random_state=rng) * 0.5
    fit = fit_scaled_ncx2(x)
    # the mean, df + nc scaled, is pinned by the data whatever the split between df and nc
    assert fit.scale * (fit.df + fit.nc) == pytest.approx(3.0, rel=0.03)
    assert fit.loglik >= _scipy_loglik(x, 6.0, 0.0, 0.5)  # at least the truth's likelihood


@pytest.mark.parametrize(
    ("losses", "fragment"),
    [
        (np.linspace(0.1, 1.0, 9), "at least 10 finite losses, got 9"),
        (np.full(50, 0.25), "degenerate"),
        (np.r_[np.linspace(0.1, 1.0, 20), 0.0], "not positive"),
        (np.r_[np.linspace(0.1, 1.0, 20), -0.5], "not positive"),
        (np.r_[np.linspace(0.1, 1.0, 20), np.nan], "non-finite"),
    ],
)
def test_bad_losses_raise(losses, fragment):
    with pytest.raises(EstimateError, match=fragment):
        fit_scaled_ncx2(losses)


def _fit(df=4.0, nc=6.0, scale=0.02) -> Ncx2Fit:
    return Ncx2Fit(df=df, nc=nc, scale=scale, loglik=0.0, converged=True, n_iter=0,
                   start="moments", message="", n=100)


def test_logcdf_uses_scipy_where_reliable():
    fit = _fit()
    x = 0.02 * stats.ncx2.ppf(1e-6, 4.0, 6.0)
    value, how = fit.logcdf_with_method(x)
    assert how == "scipy"
    assert value == pytest.approx(math.log(1e-6), rel=1e-8)


def test_logcdf_switches_to_saddlepoint_deep_in_the_tail():
    fit = _fit()
    value, how = fit.logcdf_with_method(1e-300)
    assert how == "saddlepoint"
    assert math.isfinite(value) and value < -700
    # where both work, the saddlepoint agrees with scipy (df = 4: within ~0.01 bits)
    dist = GenChi2.from_arrays([0.02], [4.0], [6.0])
    x = 0.02 * stats.ncx2.ppf(1e-250, 4.0, 6.0)
    assert abs(dist.logcdf(x) - stats.ncx2.logcdf(x / 0.02, 4.0, 6.0)) / LN2 < 0.01
    # and the fitted model is monotone across the switch
    xs = np.geomspace(1e-300, 1e-3, 60)
    values = [fit.logcdf(v) for v in xs]
    assert values == sorted(values)


def test_logcdf_of_central_fit_and_edges():
    fit = _fit(nc=0.0)
    assert fit.logcdf(1.0) == pytest.approx(float(stats.chi2.logcdf(1.0 / 0.02, 4.0)))
    assert fit.logcdf_with_method(1e-300)[1] == "saddlepoint"
    assert fit.logcdf(0.0) == -math.inf
    assert fit.logcdf(math.inf) == 0.0
