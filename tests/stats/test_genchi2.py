"""Tests of the generalised chi-squared and its log-space saddlepoint CDF (ibdb.stats.genchi2).

Oracles are independent of the implementation: Monte Carlo, scipy's chi2 / ncx2, incomplete
gamma functions in mpmath, and the contour integral of the inverse Laplace transform through the
saddlepoint, in mpmath and (fast, checked against mpmath) in double precision with scipy's quad.
"""

from __future__ import annotations

import math
import time
import warnings

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, stats

from ibdb.core.errors import EstimateError
from ibdb.stats.genchi2 import GenChi2
from ibdb.stats.ncx2cdf import (
    daniels_correction,
    left_tail_terms,
    log_gammainc_lower,
    lugannani_rice_logcdf,
    ncx2_logcdf_poisson,
    v_minus_log1p,
)

from conftest import mp_cumulants

LN2 = math.log(2.0)


def _sample(dist: GenChi2, m: int, rng: np.random.Generator) -> np.ndarray:
    total = np.full(m, dist.offset)
    for w, d, nc in zip(dist.weights, dist.dofs, dist.noncentralities, strict=True):
        draw = rng.noncentral_chisquare(d, nc, m) if nc > 0 else rng.chisquare(d, m)
        total += w * draw
    return total


@pytest.fixture(scope="module")
def kernel_like() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30 components with k = 10 dof each (N = 300), random weights and noncentralities."""
    rng = np.random.default_rng(20240807)
    j = 30
    return rng.uniform(0.2, 2.0, j), np.full(j, 10.0), rng.uniform(0.0, 3.0, j)


# ------------------------------------------------------------------------------- construction


def test_from_arrays_drops_zero_weights_and_broadcasts():
    dist = GenChi2.from_arrays([1.0, 0.0, 2.0], 3.0, [0.5, 100.0, 0.0], offset=0.1)
    assert dist.n_components == 2
    np.testing.assert_array_equal(dist.weights, [1.0, 2.0])
    np.testing.assert_array_equal(dist.dofs, [3.0, 3.0])
    np.testing.assert_array_equal(dist.noncentralities, [0.5, 0.0])
    # the dropped component contributes nothing to the moments
    assert dist.mean() == pytest.approx(0.1 + 1.0 * 3.5 + 2.0 * 3.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"weights": [1.0, -0.5], "dofs": 1.0}, "negative"),
        ({"weights": [1.0], "dofs": 1.0, "noncentralities": [-1.0]}, "noncentralities"),
        ({"weights": [1.0], "dofs": 0.0}, "degrees of freedom"),
        ({"weights": [1.0, math.nan], "dofs": 1.0}, "non-finite"),
        ({"weights": [1.0], "dofs": [1.0, 2.0]}, "must be scalars or match"),
        ({"weights": [0.0, 0.0], "dofs": 1.0}, "identically 0"),
        ({"weights": [1.0], "dofs": 1.0, "offset": -1.0}, "offset"),
    ],
)
def test_from_arrays_rejects_bad_input(kwargs, fragment):
    with pytest.raises(EstimateError, match=fragment):
        GenChi2.from_arrays(**kwargs)


def test_offset_only_is_a_point_mass():
    dist = GenChi2.from_arrays([0.0], 1.0, 0.0, offset=0.3)
    assert dist.logcdf(0.3) == 0.0
    assert dist.logcdf(0.2999) == -math.inf


# ------------------------------------------------------------------------------- moments, CGF


def test_mean_and_var_match_monte_carlo(mixed):
    rng = np.random.default_rng(1)
    m = 400_000
    sample = _sample(mixed, m, rng)
    w, d, nc = mixed.weights, mixed.dofs, mixed.noncentralities
    var = mixed.var()
    k4 = float(np.sum(48 * w**4 * (d + 4 * nc)))  # fourth cumulant, for the SE of the variance
    # tolerance: 5 standard errors of the sample mean / sample variance
    assert abs(sample.mean() - mixed.mean()) < 5 * math.sqrt(var / m)
    assert abs(sample.var() - var) < 5 * math.sqrt((k4 + 2 * var**2) / m)


def test_cgf_derivatives_are_consistent(mixed):
    assert mixed.cgf(0.0) == 0.0
    assert mixed.cgf_d1(0.0) == pytest.approx(mixed.mean(), rel=1e-14)
    assert mixed.cgf_d2(0.0) == pytest.approx(mixed.var(), rel=1e-14)
    for t in (-3.0, -0.2, 0.1):
        h = 1e-6
        assert mixed.cgf_d1(t) == pytest.approx(
            (mixed.cgf(t + h) - mixed.cgf(t - h)) / (2 * h), rel=1e-7
        )
        assert mixed.cgf_d2(t) == pytest.approx(
            (mixed.cgf_d1(t + h) - mixed.cgf_d1(t - h)) / (2 * h), rel=1e-6
        )
    with pytest.raises(EstimateError, match="domain"):
        mixed.cgf(0.5 / mixed.weights.max())


# ------------------------------------------------------------------------------- CDF vs oracles


def test_logcdf_matches_monte_carlo(mixed):
    rng = np.random.default_rng(2)
    m = 400_000
    sample = np.sort(_sample(mixed, m, rng))
    for q in (1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        x = sample[int(q * m)]
        p_mc = np.searchsorted(sample, x, side="right") / m
        p = math.exp(mixed.logcdf(x))
        # 5 binomial standard errors, plus 0.5% of P for the saddlepoint's own error at N ~ 22
        # (measured against 10^6 samples it stays within 2 standard errors)
        assert abs(p - p_mc) < 5 * math.sqrt(p * (1 - p) / m) + 0.005 * p, (q, p, p_mc)


@pytest.mark.parametrize(("df", "nc"), [(3.0, 0.5), (7.5, 12.0), (20.0, 2.0)])
def test_single_component_matches_scipy_ncx2(df, nc):
    scale, offset = 0.3, 0.0  # (an offset would swamp the deepest x in rounding)
    dist = GenChi2.from_arrays([scale], [df], [nc], offset=offset)
    for q in (1e-200, 1e-50, 1e-12, 1e-4, 0.05, 0.5, 0.95, 0.999999):
        y = stats.ncx2.ppf(q, df, nc)
        ref = stats.ncx2.logcdf(y, df, nc)
        got = dist.logcdf(offset + scale * y)
        # one component takes the exact equal-weight path (the saddlepoint alone, second order,
        # was within ~0.005 bits at N = df >= 3); the 0.01 bits required is loose for it
        assert abs(got - ref) / LN2 < 0.01, (q, got, ref)


def test_equal_weight_central_sum_is_chi2():
    # 25 components of weight 0.1 and 2 dof: L / 0.1 ~ chi2(50) exactly
    dist = GenChi2.from_arrays(np.full(25, 0.1), 2.0)
    for q in (1e-250, 1e-100, 1e-20, 1e-5, 0.1, 0.5, 0.9):
        y = stats.chi2.ppf(q, 50)
        ref = stats.chi2.logcdf(y, 50)
        assert abs(dist.logcdf(0.1 * y) - ref) / LN2 < 1e-3, q
    assert dist.logcdf(0.1 * stats.chi2.ppf(0.5, 50)) == pytest.approx(math.log(0.5), abs=1e-4)


def _mpmath_logcdf(w, d, nc, x: float) -> float:
    """log P[L <= x] by the inverse Laplace transform on a vertical line through the saddlepoint.

    P[L <= x] = -(1/2 pi i) int_{c - i inf}^{c + i inf} exp(K(t) - t x) / t dt for c < 0 (close
    the contour to the right: the pole at 0 is enclosed iff L < x). With c the saddlepoint and
    exp(K(c) - c x) factored out, the integrand is O(1) however deep the tail: log space.
    """
    with mp.workdps(30):
        comps = [(mp.mpf(float(a)), mp.mpf(float(b)), mp.mpf(float(c))) for a, b, c in
                 zip(w, d, nc, strict=True)]
        xm = mp.mpf(float(x))

        k, k1, k2 = mp_cumulants(comps)

        # bisection on log(-c): K'(c) = x; K'(c) <= (N + sum nc) / (2|c|) bounds |c| above
        lo = mp.mpf(-60)
        hi = max(mp.mpf(60), mp.log(mp.fsum(d_ + c_ for _, d_, c_ in comps) / (2 * xm)) + 1)
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if k1(-mp.exp(mid)) > xm else (lo, mid)
        c = -mp.exp((lo + hi) / 2)
        kc = k(c)
        sd = 1 / mp.sqrt(k2(c))

        def integrand(y):
            t = mp.mpc(c, y)
            return mp.re(mp.exp(k(t) - kc - mp.mpc(0, 1) * y * xm) / t)

        integral = mp.quad(integrand, [0] + [sd * 2**i for i in range(-1, 14)] + [mp.inf])
        return float(kc - c * xm + mp.log(-integral / mp.pi))


def _contour_logcdf(w, d, nc, x: float) -> float:
    """The same inversion integral as _mpmath_logcdf, in double precision (~10 ms).

    With q_j = 1 - 2 c w_j > 0 and t = c + iy, 1 - 2 t w_j = q_j (1 - r_j), r_j = 2 i y w_j / q_j,
    so K(t) - K(c) is a sum of O(1) terms and nothing overflows at any depth. Agrees with the
    mpmath version to 1e-12 bits for N = 300 and 2e-6 bits for N = 3 (where the integrand's
    algebraic tail is slowest).
    """
    w, d, nc = (np.asarray(v, dtype=np.float64) for v in (w, d, nc))
    log2w, log_x = np.log(2.0 * w), math.log(x)

    def log_k1(lc: float) -> float:  # log K'(c) at c = -e^lc: decreasing in lc
        q = 1.0 + np.exp(lc + log2w)
        return math.log(float(np.sum(w * (d + nc / q) / q)))

    hi = 50.0
    while log_k1(hi) > log_x:
        hi *= 2.0
    lc = optimize.brentq(lambda v: log_k1(v) - log_x, -700.0, hi, xtol=1e-15, rtol=1e-15)
    c = -math.exp(lc)
    q = 1.0 + np.exp(lc + log2w)
    # K(c) - c x, with -c x = e^(lc + log x)
    log_scale = (float(np.sum(-0.5 * d * np.log(q) - 0.5 * nc * (q - 1.0) / q))
                 + math.exp(lc + log_x))
    sd = 1.0 / math.sqrt(float(np.sum(2.0 * (w / q) ** 2 * (d + 2.0 * nc / q))))
    a = 2.0 * w / q

    def integrand(y: float) -> float:
        r = 1j * y * a
        dk = np.sum(-0.5 * d * np.log1p(-r) + 0.5 * nc * r / (q * (1.0 - r))) - 1j * y * x
        return (np.exp(dk) / (c + 1j * y)).real

    h = min(-c, sd)
    edges = [0.0] + [h * 2.0**i for i in range(-3, 200) if h * 2.0**i < 2.0**12 * sd] + [np.inf]
    total, tol = 0.0, 0.0
    with warnings.catch_warnings():  # quad warns of round-off on pieces far below the total
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for lo, hi_ in zip(edges[:-1], edges[1:], strict=True):
            piece = integrate.quad(integrand, lo, hi_, limit=100, epsabs=tol, epsrel=1e-10)[0]
            tol = tol or 1e-12 * abs(piece)
            total += piece
    return log_scale + math.log(-total / math.pi)


def _x_at_bits(dist: GenChi2, bits: float) -> float:
    """The x > offset at which the saddlepoint gives `bits`."""
    top = math.log(dist.mean() - dist.offset)
    return dist.offset + math.exp(optimize.brentq(
        lambda lx: dist.bits_below(dist.offset + math.exp(lx)) - bits, top - 800.0, top))


@pytest.mark.parametrize(
    "target_bits",
    [1.0, 1e4] + [pytest.param(b, marks=pytest.mark.slow) for b in (3.0, 10.0, 100.0, 1000.0)],
)
def test_deep_tail_matches_mpmath_contour_integral(kernel_like, target_bits):
    w, d, nc = kernel_like
    dist = GenChi2.from_arrays(w, d, nc)
    # locate the x whose saddlepoint value is target_bits, then check it there
    x = _x_at_bits(dist, target_bits)
    oracle_bits = -_mpmath_logcdf(w, d, nc, x) / LN2
    assert oracle_bits == pytest.approx(target_bits, rel=0.01)  # the oracle is at that depth
    # required: <= 0.01 bits. Second-order Lugannani-Rice measures <= 1e-6 bits here
    # (first order alone: 1e-4 to 8e-4 bits, ~0.24 / N), so hold it to 1e-4.
    assert abs(dist.bits_below(x) - oracle_bits) <= 1e-4
    # and the double-precision oracle used below agrees with this one
    assert abs(-_contour_logcdf(w, d, nc, x) / LN2 - oracle_bits) <= 1e-9


@pytest.mark.parametrize("target_bits", [1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 300.0, 1000.0,
                                         3000.0, 1e4])
def test_matches_contour_oracle_from_1_to_1e4_bits(kernel_like, target_bits):
    w, d, nc = kernel_like
    dist = GenChi2.from_arrays(w, d, nc)
    x = _x_at_bits(dist, target_bits)
    oracle_bits = -_contour_logcdf(w, d, nc, x) / LN2
    # required <= 0.01 bits; measured <= 1e-6 (P = 0.5 included), so hold it to 1e-4
    assert abs(dist.bits_below(x) - oracle_bits) <= 1e-4, (target_bits, oracle_bits)


# ------------------------------------------------------------------------------- degenerate spectra


def test_zero_weights_are_constants_not_components():
    kept = GenChi2.from_arrays([1.5, 0.5], [2.0, 3.0], [1.0, 0.0], offset=0.2)
    with_zeros = GenChi2.from_arrays([0.0, 1.5, 0.0, 0.5, 0.0], [7.0, 2.0, 1.0, 3.0, 2.0],
                                     [9.0, 1.0, 0.0, 0.0, 4.0], offset=0.2)
    for x in (0.2 + 1e-9, 0.5, 2.0, kept.mean(), 50.0):
        assert with_zeros.logcdf(x) == kept.logcdf(x)
    # only zeros: the constant offset, a point mass, in both CDF methods
    point = GenChi2.from_arrays([0.0, 0.0], [1.0, 4.0], [3.0, 0.0], offset=0.7)
    assert (point.logcdf(0.7), point.logcdf(np.nextafter(0.7, 0.0))) == (0.0, -math.inf)
    assert point.mean() == 0.7 and point.var() == 0.0


def _mp_log_gammainc(a: float, log_z: float) -> float:
    """log P(a, z) in mpmath: the series far left, the complement elsewhere."""
    with mp.workdps(40):
        a_, z = mp.mpf(a), mp.exp(mp.mpf(log_z))
        if z < a_ + 1:
            return float(a_ * mp.log(z) - z - mp.loggamma(a_ + 1)
                         + mp.log(mp.hyp1f1(1, a_ + 1, z, maxterms=10**7)))
        return float(mp.log(1 - mp.gammainc(a_, z, mp.inf, regularized=True)))


@pytest.mark.parametrize("a", [0.15, 0.5, 1.0, 2.5, 10.0, 150.0, 1e4, 1e6])
def test_log_gammainc_lower_matches_mpmath(a):
    grid = np.concatenate([np.linspace(-800.0, math.log(a) - 1.0, 9),
                           math.log(a) + np.log([0.5, 0.9, 0.99, 1.0, 1.01, 1.1, 2.0, 5.0])])
    assert log_gammainc_lower(np.full(3, a), 0.0).shape == (3,)  # vectorised over a
    for log_z in grid:
        got = float(log_gammainc_lower(np.array([a]), float(log_z))[0])
        ref = _mp_log_gammainc(a, float(log_z))
        assert abs(got - ref) <= 1e-10 * max(1.0, abs(ref)), (a, log_z, got, ref)


@pytest.mark.parametrize("df", [0.3, 0.5, 1.0, 2.0, 3.0, 10.0])
def test_single_central_component_is_exact(df):
    # the saddlepoint alone is off by up to 0.2 bits at df = 0.5 and 0.04 at df = 1: the
    # equal-weight path is exact, so hold it to 1e-9 relative against scipy and mpmath
    dist = GenChi2.from_arrays([0.25], [df])
    for q in (1e-300, 1e-30, 1e-3, 0.3, 0.5, 0.9, 1.0 - 1e-9):
        y = stats.chi2.ppf(q, df)
        assert dist.logcdf(0.25 * y) == pytest.approx(stats.chi2.logcdf(y, df), rel=1e-9), q
    for log_y in (-300.0, -700.0):  # beyond scipy (x near the smallest double): P ~ e^-350
        ref = _mp_log_gammainc(df / 2, log_y - LN2)
        assert dist.logcdf(0.25 * math.exp(log_y)) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize(("df", "nc"), [(1.0, 0.5), (0.5, 10.0), (3.0, 100.0), (10.0, 2000.0)])
def test_single_noncentral_component_is_exact(df, nc):
    dist = GenChi2.from_arrays([3.0], [df], [nc])
    for q in (1e-250, 1e-20, 1e-3, 0.3, 0.5, 0.7, 0.999):
        y = stats.ncx2.ppf(q, df, nc)
        if not np.isfinite(y):
            continue
        ref = stats.ncx2.logcdf(y, df, nc)
        assert dist.logcdf(3.0 * y) == pytest.approx(ref, rel=1e-8, abs=1e-13), q
    # deep, beyond scipy: the Poisson mixture written out in mpmath
    log_y = -600.0
    with mp.workdps(40):
        h = mp.mpf(nc) / 2
        terms = [mp.exp(-h) * h**i / mp.factorial(i)
                 * mp.exp(_mp_log_gammainc(df / 2 + i, log_y - LN2)) for i in range(40)]
        ref = float(mp.log(mp.fsum(terms)))
    assert dist.logcdf(3.0 * math.exp(log_y)) == pytest.approx(ref, rel=1e-10)


def test_equal_weights_are_one_chi2_with_summed_dof_at_every_depth():
    dist = GenChi2.from_arrays(np.full(40, 0.02), [1.0, 3.0] * 20)  # L / 0.02 ~ chi2(80)
    for q in (1e-300, 1e-10, 0.5, 0.99):
        y = stats.chi2.ppf(q, 80)
        assert dist.logcdf(0.02 * y) == pytest.approx(stats.chi2.logcdf(y, 80), rel=1e-9)
    for log_y in (-20.0, -300.0):  # ~2000 and ~17000 bits
        ref = _mp_log_gammainc(40.0, log_y - LN2)
        assert dist.logcdf(0.02 * math.exp(log_y)) == pytest.approx(ref, rel=1e-10)
    nc = GenChi2.from_arrays(np.full(5, 0.5), 2.0, [1.0, 0.0, 2.0, 0.5, 0.5])  # ~ chi2'(10, 4)
    for q in (1e-100, 0.2, 0.8):
        y = stats.ncx2.ppf(q, 10, 4.0)
        assert nc.logcdf(0.5 * y) == pytest.approx(stats.ncx2.logcdf(y, 10, 4.0), rel=1e-8)


def test_equal_weights_with_huge_noncentrality_fall_back_to_the_saddlepoint():
    dist = GenChi2.from_arrays([1.0, 1.0], 4.0, [2e5, 1e5])  # sum nc / 2 > 1e5: no mixture
    for q in (1e-12, 1e-3, 0.5):
        y = stats.ncx2.ppf(q, 8.0, 3e5)
        assert abs(dist.logcdf(y) - stats.ncx2.logcdf(y, 8.0, 3e5)) / LN2 < 1e-3, q


@pytest.fixture(scope="module")
def wide() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights from 1e-12 to 1: near the mean ~2 degrees of freedom carry the law."""
    rng = np.random.default_rng(0)
    return 10.0 ** np.linspace(-12, 0, 20), np.full(20, 2.0), rng.uniform(0.0, 3.0, 20)


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.1, 1e-2, 1e-4, 1e-8, 1e-12, 1e-20, 1e-40])
def test_huge_dynamic_range_matches_contour_oracle(wide, fraction):
    w, d, nc = wide
    dist = GenChi2.from_arrays(w, d, nc)
    x = dist.mean() * fraction
    oracle_bits = -_contour_logcdf(w, d, nc, x) / LN2
    # the saddlepoint alone was off by up to 0.0106 bits near 2 bits here (only the weight-1
    # component matters there: N ~ 2-4) and 0.0014 bits beyond 20 bits; with few effective
    # dof the inversion integral is used instead (ibdb.stats.genchi2_inversion): measured <= 3e-14
    bits, method = dist.bits_below_with_method(x)
    assert method == "inversion"
    assert abs(bits - oracle_bits) < 1e-6, (x, oracle_bits)


def test_x_just_above_a_positive_offset():
    w, d, nc, offset = [0.5, 1.0], [1.0, 2.0], [0.0, 1.0], 0.4
    dist = GenChi2.from_arrays(w, d, nc, offset=offset)
    for x in (np.nextafter(offset, 1.0), offset + 1e-15, offset + 1e-10, offset + 1e-6):
        got = dist.logcdf(x)
        assert math.isfinite(got) and got < -20
        oracle = _contour_logcdf(w, d, nc, x - offset)  # x - offset is exact (Sterbenz)
        assert abs(got - oracle) / LN2 < 0.005, x  # N = 3: measured 0.0033 bits
    # a subnormal distance above an offset of 0 is still finite
    assert math.isfinite(GenChi2.from_arrays(w, d, nc).logcdf(5e-324))


def test_1e5_bits_is_finite_and_monotone(kernel_like):
    w, d, nc = kernel_like
    dist = GenChi2.from_arrays(w, d, nc)
    # for N = 300, P ~ (x / mean)^150: 10^5 bits sits near x / mean ~ 2^-660
    xs = dist.mean() * 2.0 ** np.linspace(-700, -600, 11)
    bits = np.array([dist.bits_below(x) for x in xs])
    assert np.all(np.isfinite(bits))
    assert bits.max() > 1e5 > bits.min()
    assert np.all(np.diff(bits) < 0)  # more bits for a smaller target loss


def test_at_or_below_offset_is_impossible(mixed):
    assert mixed.logcdf(mixed.offset) == -math.inf
    assert mixed.logcdf(0.0) == -math.inf
    assert mixed.bits_below(mixed.offset) == math.inf
    assert mixed.logcdf(math.inf) == 0.0
    with pytest.raises(EstimateError, match="NaN"):
        mixed.logcdf(math.nan)


def test_continuous_across_the_mean(mixed, kernel_like):
    for dist in (mixed, GenChi2.from_arrays(*kernel_like)):
        m = dist.mean()
        at = dist.logcdf(m)
        for rel in (1e-12, 1e-9):
            below, above = dist.logcdf(m * (1 - rel)), dist.logcdf(m * (1 + rel))
            assert below <= at <= above
            # the density is below 1/sd, so P moves by at most ~rel * mean / sd
            assert above - below < 10 * rel * m / math.sqrt(dist.var()) + 1e-12
        # across the narrow band where the correction term is interpolated
        sd = math.sqrt(dist.var())
        grid = m + sd * np.linspace(-0.02, 0.02, 401)
        values = np.array([dist.logcdf(x) for x in grid])
        assert np.all(np.diff(values) >= 0)
        assert np.max(np.diff(values)) < 1e-3


def test_right_tail_is_close_to_zero_never_positive(mixed):
    sd = math.sqrt(mixed.var())
    values = [mixed.logcdf(mixed.mean() + k * sd) for k in (1, 3, 6, 10, 30, 1e3, 1e6)]
    assert all(v <= 0.0 for v in values)
    assert values[-1] > -1e-12
    assert values == sorted(values)


def test_fast_for_1000_components():
    rng = np.random.default_rng(5)
    dist = GenChi2.from_arrays(rng.uniform(0.01, 1.0, 1000), 10.0, rng.uniform(0, 5, 1000))
    xs = dist.mean() * np.geomspace(1e-6, 1.5, 10)
    t0 = time.perf_counter()
    for x in xs:
        dist.logcdf(x)
    per_x = (time.perf_counter() - t0) / len(xs)
    assert per_x < 0.05  # the target is < 10 ms (it takes ~0.5 ms); 5x slack for busy CI


# ------------------------------------------------------------------------------- properties

# dofs >= 0.3: below a total of ~0.3 degrees of freedom the saddlepoint approximation itself
# breaks down (documented in GenChi2.logcdf); 3000 examples of this strategy pass offline.
_component = st.tuples(
    st.floats(1e-3, 1e3), st.floats(0.3, 30.0), st.floats(0.0, 50.0)
)


@settings(max_examples=40, deadline=None, database=None)
@given(
    comps=st.lists(_component, min_size=1, max_size=6),
    offset=st.floats(0.0, 2.0),
    fractions=st.lists(st.floats(-12.0, 1.0), min_size=2, max_size=6),
)
def test_logcdf_is_nondecreasing_and_nonpositive(comps, offset, fractions):
    w, d, nc = (list(c) for c in zip(*comps, strict=True))
    dist = GenChi2.from_arrays(w, d, nc, offset=offset)
    spread = dist.mean() - offset
    xs = sorted(offset + spread * 10.0**f for f in fractions)
    values = [dist.logcdf(x) for x in xs]
    assert all(v <= 0.0 for v in values)
    assert all(not math.isnan(v) for v in values)
    for a, b in zip(values, values[1:], strict=False):
        assert b >= a - 1e-12 * max(1.0, abs(a))


# ---------------------------------------------------------- shared numerics (ibdb.stats.ncx2cdf)
def test_left_saddlepoint_solves_the_saddlepoint_equation(kernel_like):
    w, d, nc = kernel_like
    dist = GenChi2.from_arrays(w, d, nc, offset=0.5)
    x = dist.offset + 0.3 * (dist.mean() - dist.offset)
    tau, log_shift = dist.left_saddlepoint(x)
    s = -math.exp(tau)
    assert dist.cgf_d1(s) == pytest.approx(x, rel=1e-12)
    assert log_shift == pytest.approx(dist.cgf(s) - s * x, rel=1e-10)
    with pytest.raises(EstimateError, match="between the offset"):
        dist.left_saddlepoint(dist.mean() * 1.01)


@pytest.mark.parametrize("v", [-0.999999, -0.9, -0.3, -0.2499, -1e-3, -1e-9, 0.0, 1e-12, 1e-5,
                               0.1, 0.2501, 3.0, 1e6])
def test_v_minus_log1p_matches_mpmath(v):
    with mp.workdps(50):
        want = float(mp.mpf(v) - mp.log1p(mp.mpf(v)))
        log1p_v = float(mp.log1p(mp.mpf(v)))
    assert float(v_minus_log1p(np.array(v))) == pytest.approx(want, rel=1e-14, abs=1e-300)
    # with log1p(v) supplied (as the saddlepoint does near v = -1): the same value
    assert float(v_minus_log1p(np.array(v), np.array(log1p_v))) == pytest.approx(want, rel=1e-14)


def _mp_cumulants(w, d, nc, s):
    """(s K'(s) - K(s), K2, K3, K4) of sum_j w_j chi2'(d_j, nc_j) at s, in mpmath, from
    K^(k) = sum (d/2)(k-1)! (2w)^k / q^k + (nc/2) k! (2w)^k / q^(k+1), q = 1 - 2 s w."""
    with mp.workdps(40):
        s = mp.mpf(s)
        k0 = k1 = mp.mpf(0)
        ks = [mp.mpf(0)] * 5
        for wj, dj, ncj in zip(w, d, nc, strict=True):
            wj, dj, ncj = mp.mpf(wj), mp.mpf(dj), mp.mpf(ncj)
            q = 1 - 2 * s * wj
            k0 += -dj / 2 * mp.log(q) + ncj * wj * s / q
            k1 += dj * wj / q + ncj * wj / q**2
            for k in (2, 3, 4):
                ks[k] += (dj / 2 * mp.factorial(k - 1) * (2 * wj) ** k / q**k
                          + ncj / 2 * mp.factorial(k) * (2 * wj) ** k / q ** (k + 1))
        return [float(v) for v in (s * k1 - k0, ks[2], ks[3], ks[4])]


@pytest.mark.parametrize("s", [-0.01, -1.0, -300.0, -1e8])
def test_left_tail_terms_match_mpmath_cumulants(kernel_like, s):
    w, d, nc = kernel_like
    r = 1.0 / (1.0 - 2.0 * s * w)
    sig = 2.0 * abs(s) * w * r
    half_w2, u, rho3, rho4 = left_tail_terms(sig, r, d, nc, np.log(r))
    hw, k2, k3, k4 = _mp_cumulants(w, d, nc, s)
    assert float(half_w2) == pytest.approx(hw, rel=1e-12)
    assert float(u) == pytest.approx(s * math.sqrt(k2), rel=1e-12)
    assert float(rho3) == pytest.approx(k3 / k2**1.5, rel=1e-12)
    assert float(rho4) == pytest.approx(k4 / k2**2, rel=1e-12)


@pytest.mark.parametrize(("df", "nc"), [(8.0, 0.0), (30.0, 5.0), (200.0, 50.0)])
def test_lugannani_rice_with_daniels_matches_scipy_on_both_sides(df, nc):
    # one component, with the terms from the mpmath cumulants (not from left_tail_terms): the
    # assembly alone, left of the mean (log phi + log(R + G)) and right of it (log1p(-Q))
    law = stats.ncx2(df, nc) if nc else stats.chi2(df)
    for p in (1e-12, 1e-4, 0.3, 0.7, 1.0 - 1e-4, 1.0 - 1e-9):
        x = float(law.ppf(p))
        r = 2.0 * x / (df + math.sqrt(df * df + 4.0 * nc * x))  # 1 / (1 - 2s) at K'(s) = x
        s = 0.5 * (1.0 - 1.0 / r)
        hw, k2, k3, k4 = _mp_cumulants([1.0], [df], [nc], s)
        hw += s * (x - (df * r + nc * r * r))  # s x - K(s) = s K'(s) - K(s) + s (x - K'(s))
        w = math.copysign(math.sqrt(2.0 * hw), s)
        u = s * math.sqrt(k2)
        g = daniels_correction(w, u, k3 / k2**1.5, k4 / k2**2)
        got = float(lugannani_rice_logcdf(hw, w, u, g))
        # relative error of the smaller tail, measured: <= 5e-4 at df = 8, 4e-5 at 30, 4e-7 at
        # 200 (Daniels' second order, O(1/N^2))
        if p < 0.5:
            assert got == pytest.approx(math.log(p), abs=1e-3), (p, got)
        else:
            assert -math.expm1(got) == pytest.approx(1.0 - p, rel=1e-3), (p, got)


@pytest.mark.parametrize(("df", "nc", "log_y"), [(3.0, 0.0, -5.0), (1.0, 2.0, -40.0),
                                                 (7.5, 12.0, 1.5), (7.5, 12.0, 4.0),
                                                 (0.5, 300.0, 4.0), (20.0, 2000.0, 7.0)])
def test_ncx2_logcdf_poisson_matches_mpmath(df, nc, log_y):
    with mp.workdps(40):
        y, a, h = mp.exp(mp.mpf(log_y)), mp.mpf(df) / 2, mp.mpf(nc) / 2
        n_terms = int(h + 60 * mp.sqrt(h) + 80) if h else 1
        want = float(mp.log(mp.fsum(
            mp.exp(-h + (j * mp.log(h) if h else 0) - mp.loggamma(j + 1))
            * mp.gammainc(a + j, 0, y / 2, regularized=True) for j in range(n_terms))))
    got = ncx2_logcdf_poisson(log_y - LN2, df / 2, nc / 2)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert ncx2_logcdf_poisson(0.0, 1.0, 2.1e5) is None  # left to the saddlepoint
