"""Tests of the tilted importance sampler (ibdb.stats.tilting, GenChi2.importance_logcdf).

Oracles: scipy's non-central chi-squared density (for the tilted law itself), plain Monte Carlo,
closed forms evaluated in mpmath, and the saddlepoint logcdf, itself checked against contour
integrals in test_genchi2. Agreement is judged in units of the sampler's own standard error.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import optimize, stats

from ibdb.core.errors import EstimateError
from ibdb.stats.genchi2 import GenChi2
from ibdb.stats.tilting import importance_logcdf

LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def kernel_like() -> GenChi2:
    """30 components with k = 10 dof each (N = 300), as in test_genchi2."""
    rng = np.random.default_rng(20240807)
    return GenChi2.from_arrays(rng.uniform(0.2, 2.0, 30), 10.0, rng.uniform(0.0, 3.0, 30))


def _x_at_bits(dist: GenChi2, bits: float) -> float:
    span = math.log(dist.mean() - dist.offset)
    return dist.offset + math.exp(optimize.brentq(
        lambda lx: dist.bits_below(dist.offset + math.exp(lx)) - bits, span - 800.0, span))


@pytest.mark.parametrize(("k", "delta"), [(1.0, 0.0), (3.0, 2.5), (10.0, 40.0)])
def test_tilted_law_is_scaled_ncx2_with_noncentrality_delta_over_1_minus_2theta(k, delta):
    """e^{theta y} f(y) / M(theta) is the density of c chi2'(k, c delta), c = 1/(1 - 2 theta)."""
    y = np.linspace(0.05, 60.0, 200)
    for theta in (-5.0, -0.3, 0.2):
        c = 1.0 / (1.0 - 2.0 * theta)
        log_mgf = -0.5 * k * math.log(1.0 - 2.0 * theta) + delta * theta / (1.0 - 2.0 * theta)
        tilted = theta * y + stats.ncx2.logpdf(y, k, delta) - log_mgf
        np.testing.assert_allclose(tilted, stats.ncx2.logpdf(y / c, k, c * delta) - math.log(c),
                                   rtol=1e-9, atol=1e-9)
        if delta > 0:  # the variant with noncentrality delta c^2 is a different law
            wrong = stats.ncx2.logpdf(y / c, k, c * c * delta) - math.log(c)
            assert np.max(np.abs(tilted - wrong)) > 0.1


@pytest.mark.parametrize("bits", [10.0, 100.0, 1000.0, 1e4])
def test_agrees_with_saddlepoint_deep_in_the_tail(kernel_like, bits):
    x = _x_at_bits(kernel_like, bits)
    log_p, se = kernel_like.importance_logcdf(x)
    # SE measured 0.018, 0.031, 0.038, 0.038 bits at these depths: it does not grow with depth
    assert 0.0 < se < 0.06
    # the saddlepoint is within 1e-6 bits of exact here (test_genchi2); 4 SE of the sampler
    assert abs(-log_p / LN2 - bits) < 4.0 * se, (log_p, se)


def test_standard_error_is_calibrated(kernel_like):
    x = _x_at_bits(kernel_like, 100.0)
    runs = [kernel_like.importance_logcdf(x, n=1000, seed=s) for s in range(40)]
    estimates = np.array([-lp / LN2 for lp, _ in runs])
    reported = float(np.mean([se for _, se in runs]))
    # the spread of 40 estimates has ~11% relative noise: 0.7..1.4 is about 3 of its SEs
    assert 0.7 < estimates.std(ddof=1) / reported < 1.4
    assert abs(estimates.mean() - 100.0) < 4.0 * reported / math.sqrt(40)


def test_agrees_with_plain_monte_carlo_where_p_is_not_small(mixed):
    rng = np.random.default_rng(99)
    m = 300_000
    total = np.full(m, mixed.offset)
    for w, d, nc in zip(mixed.weights, mixed.dofs, mixed.noncentralities, strict=True):
        total += w * rng.noncentral_chisquare(d, nc, m)
    for x in np.quantile(total, [0.01, 0.05, 0.3, 0.6, 0.95]):  # below and above the mean
        p_mc = float(np.mean(total <= x))
        log_p, se_bits = mixed.importance_logcdf(x, seed=3)
        p = math.exp(log_p)
        se_p = p * se_bits * LN2
        assert abs(p - p_mc) < 4.0 * math.hypot(se_p, math.sqrt(p_mc * (1 - p_mc) / m)), x


def _mp_log_chi2_cdf(df: float, y: float) -> float:
    """log P[chi2(df) <= y] for y < df, by the series of the lower incomplete gamma."""
    with mp.workdps(40):
        a, z = mp.mpf(df) / 2, mp.mpf(y) / 2
        return float(a * mp.log(z) - z - mp.loggamma(a + 1) + mp.log(mp.hyp1f1(1, a + 1, z)))


@pytest.mark.parametrize(("df", "log_y"), [(1.0, -600.0), (0.5, -80.0), (40.0, -50.0)])
def test_single_component_closed_form(df, log_y):
    dist = GenChi2.from_arrays([2.0], [df])
    x = 2.0 * math.exp(log_y)
    ref = _mp_log_chi2_cdf(df, math.exp(log_y))
    log_p, se = dist.importance_logcdf(x, seed=1)
    assert abs(log_p - ref) / LN2 < 4.0 * se


def test_huge_dynamic_range_and_x_just_above_offset():
    rng = np.random.default_rng(0)
    wide = GenChi2.from_arrays(10.0 ** np.linspace(-12, 0, 20), 2.0, rng.uniform(0, 3, 20))
    for bits in (2.0, 50.0, 1e3):
        log_p, se = wide.importance_logcdf(_x_at_bits(wide, bits), seed=2)
        # the saddlepoint's own error is ~0.01 bits at ~2 bits for this spectrum (test_genchi2)
        assert abs(-log_p / LN2 - bits) < 4.0 * se + 0.02
    shifted = GenChi2.from_arrays([0.5, 1.0], [1.0, 2.0], [0.0, 1.0], offset=0.4)
    for x in (np.nextafter(0.4, 1.0), 0.4 + 1e-12):
        log_p, se = shifted.importance_logcdf(x, seed=4)
        assert math.isfinite(log_p) and log_p < -40
        assert abs(log_p - shifted.logcdf(x)) / LN2 < 4.0 * se + 0.01


def test_exact_edges_and_reproducibility(mixed):
    assert mixed.importance_logcdf(mixed.offset) == (-math.inf, 0.0)
    assert mixed.importance_logcdf(0.0) == (-math.inf, 0.0)
    assert mixed.importance_logcdf(math.inf) == (0.0, 0.0)
    point = GenChi2.from_arrays([0.0], 1.0, 0.0, offset=0.3)
    assert point.importance_logcdf(0.3) == (0.0, 0.0)
    assert point.importance_logcdf(0.2) == (-math.inf, 0.0)
    x = 0.5 * mixed.mean()
    assert mixed.importance_logcdf(x, seed=5) == importance_logcdf(mixed, x, n=20000, seed=5)
    assert mixed.importance_logcdf(x, seed=5) != mixed.importance_logcdf(x, seed=6)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"x": math.nan}, "NaN"),
        ({"x": 1.0, "n": 50}, "n = 50 draws"),
        ({"x": 1.0, "n": 1000.0}, "n = 1000.0 draws"),
        ({"x": 1.0, "n": True}, "n = True"),
        ({"x": 1.0, "seed": -1}, "seed = -1"),
    ],
)
def test_rejects_bad_input(mixed, kwargs, fragment):
    with pytest.raises(EstimateError, match=fragment):
        mixed.importance_logcdf(**kwargs)


def test_many_components_stay_cheap():
    rng = np.random.default_rng(8)
    dist = GenChi2.from_arrays(rng.uniform(0.01, 1.0, 2000), 10.0, rng.uniform(0, 5, 2000))
    x = _x_at_bits(dist, 5e3)
    log_p, se = dist.importance_logcdf(x, n=2000)
    assert abs(-log_p / LN2 - 5e3) < 4.0 * se
