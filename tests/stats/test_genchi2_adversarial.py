"""Adversarial spectra for GenChi2's log-CDF (the `exact` method), against mpmath oracles.

The saddlepoint alone was off by up to 0.16 bits where few components carry the law (weights 1
and 1e-6, weights spread over 12 decades, one dominant weight); GenChi2 detects those places
(ibdb.stats.genchi2_inversion.effective_dof) and inverts the moment generating function numerically
there. Required everywhere: within 1e-3 bits of the oracles.

Oracles, independent of ibdb's code:
- _mp_inversion_logcdf: Laplace inversion in mpmath (20 digits) along a polyline (a vertical
  segment through the saddlepoint, then a horizontal ray to the right), a different contour and
  quadrature from ibdb's (a hyperbola, trapezoidal rule in double precision). Checked here
  against scipy for one component and against the next oracle for two.
- _mp_convolution_logcdf: for two components, P = E[F_0((x - w_1 X_1) / w_0)], a 1-D integral
  of one component's density against the other's CDF, both Poisson mixtures of incomplete
  gamma functions in mpmath.
- _mp_two_dof1_logcdf: for two components of 1 dof, the probability that a shifted 2-D normal
  vector falls in an ellipse, a 1-D integral of normal densities and erfc's (any noncentrality).
- scipy's chi2 / ncx2 logcdf where all weights are equal (the law is then one scaled ncx2).
mpmath's numbers have an unbounded exponent, so every oracle works at any depth.
"""

from __future__ import annotations

import math
import time

import mpmath as mp
import numpy as np
import pytest
from scipy import optimize, stats

from ibdb.stats.genchi2 import CDF_METHODS, GenChi2
from ibdb.stats.genchi2_inversion import N_EFF_SADDLEPOINT, effective_dof

from conftest import mp_cumulants

LN2 = math.log(2.0)
TOL_BITS = 1e-3  # required of every value


# ------------------------------------------------------------------------------- oracles
def _mp_log_gammainc_lower(a: mp.mpf, z: mp.mpf) -> mp.mpf:
    """log P(a, z), the regularised lower incomplete gamma, without cancellation."""
    if z <= 0:
        return mp.ninf
    if z < a + 30:  # P = z^a e^-z / Gamma(a + 1) * 1F1(1; a + 1; z), a sum of positive terms
        return a * mp.log(z) - z - mp.loggamma(a + 1) + mp.log(mp.hyp1f1(1, a + 1, z))
    return mp.log1p(-mp.gammainc(a, z, mp.inf, regularized=True))


def _poisson_terms(half_nc: mp.mpf) -> list[tuple[int, mp.mpf]]:
    """(i, log Pois(i; half_nc)) over every i that matters (all of it for half_nc = 0)."""
    if half_nc == 0:
        return [(0, mp.mpf(0))]
    n = int(half_nc + 12 * mp.sqrt(half_nc) + 40)
    return [(i, -half_nc + i * mp.log(half_nc) - mp.loggamma(i + 1)) for i in range(n)]


def _mp_ncx2_cdf(y: mp.mpf, dof: float, nc: float) -> mp.mpf:
    a = mp.mpf(dof) / 2
    return mp.fsum(mp.exp(lp + _mp_log_gammainc_lower(a + i, y / 2))
                   for i, lp in _poisson_terms(mp.mpf(nc) / 2))


def _mp_ncx2_pdf(y: mp.mpf, dof: float, nc: float) -> mp.mpf:
    a = mp.mpf(dof) / 2
    return mp.fsum(mp.exp(lp + (a + i - 1) * mp.log(y) - y / 2 - (a + i) * mp.log(2)
                          - mp.loggamma(a + i)) for i, lp in _poisson_terms(mp.mpf(nc) / 2))


def _mp_convolution_logcdf(w, dof, nc, x: float) -> float:
    """log P[w0 X0 + w1 X1 <= x] = log int_0^{x/w1} f_1(y) F_0((x - w1 y) / w0) dy."""
    with mp.workdps(25):
        xm, w0, w1 = mp.mpf(x), mp.mpf(w[0]), mp.mpf(w[1])
        top = xm / w1

        def integrand(y):
            return _mp_ncx2_pdf(y, dof[1], nc[1]) * _mp_ncx2_cdf((xm - w1 * y) / w0, dof[0], nc[0])

        inner = [p for p in (top * 1e-6, top * 1e-3, 1, 10, 100, top / 2, top * 0.9, top * 0.999)
                 if 0 < p < top]
        return float(mp.log(mp.quad(integrand, [mp.mpf(0), *sorted(set(inner)), top])))


def _mp_two_dof1_logcdf(w, nc, x: float) -> float:
    """log P[w0 (Z0 + d0)^2 + w1 (Z1 + d1)^2 <= x], d_j = sqrt(nc_j), Z_j standard normal (two
    components of 1 dof): the integral over y = Z1 + d1 in [-R, R], R = sqrt(x / w1), of
    phi(y - d1) P[|Z0 + d0| <= r(y)], r = sqrt((x - w1 y^2) / w0), in 50 digits, with the inner
    probability Phi(r - d0) - Phi(-r - d0) as a difference of erfc's (no cancellation at large
    d0). The integrand can be sharply peaked: located on a grid first, then integrated by
    Gauss-Legendre on 100 pieces over where it exceeds e^-120 of its peak."""
    with mp.workdps(50):
        xm, w0, w1 = mp.mpf(x), mp.mpf(w[0]), mp.mpf(w[1])
        d0, d1, root2 = mp.sqrt(mp.mpf(nc[0])), mp.sqrt(mp.mpf(nc[1])), mp.sqrt(2)
        big = mp.sqrt(xm / w1)

        def integrand(y):
            r = mp.sqrt(max((xm - w1 * y * y) / w0, 0))
            return mp.npdf(y - d1) * (mp.erfc((d0 - r) / root2) - mp.erfc((d0 + r) / root2)) / 2

        grid = [-big + 2 * big * k / 2000 for k in range(2001)]
        logs = [mp.log(v) if v > 0 else mp.ninf for v in map(integrand, grid)]
        top = max(logs)
        inside = [k for k, v in enumerate(logs) if v > top - 120]
        lo, hi = grid[max(inside[0] - 1, 0)], grid[min(inside[-1] + 1, 2000)]
        cuts = [lo + (hi - lo) * k / 100 for k in range(101)]
        return float(mp.log(mp.quad(integrand, cuts, method="gauss-legendre")))


def _mp_inversion_logcdf(w, dof, nc, x: float) -> float:
    """log P[sum_j w_j chi2'(dof_j, nc_j) <= x] by Laplace inversion in mpmath.

    With K the cumulant generating function and c the saddlepoint (K'(c) = x),
    P[L <= x] = (1/2 pi i) int e^{K(t) - t x} (-dt/t) over Re t = c < 0 (lower tail, x below
    the mean), P[L > x] the same with +dt/t over Re t = c > 0 (upper tail). The line is
    deformed into the segment c -> c + ih and the ray c + ih -> inf + ih (and their mirror
    images), with h above the noncentral terms' essential singularities at t = 1/(2 w_j)
    (Re 1/(1 - 2 w t) <= 1/(4 w h) there, which e^{-t x} outweighs once h > nc / (4x)).
    """
    with mp.workdps(20):
        comps = [(mp.mpf(float(a)), mp.mpf(float(b)), mp.mpf(float(c)))
                 for a, b, c in zip(w, dof, nc, strict=True)]
        xm = mp.mpf(float(x))

        k, k1, k2 = mp_cumulants(comps)

        upper = xm > k1(0)
        if upper:  # bisection for c in (0, 1 / (2 max w))
            lo, hi = mp.mpf(0), 1 / (2 * max(wj for wj, _, _ in comps))
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if k1(mid) < xm else (lo, mid)
            c = (lo + hi) / 2
        else:  # bisection on log(-c); K'(c) <= (N + sum nc) / (2|c|) bounds |c|
            lo = mp.mpf(-80)
            hi = mp.log(mp.fsum(dj + cj for _, dj, cj in comps) / (2 * xm)) + 2
            for _ in range(120):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if k1(-mp.exp(mid)) > xm else (lo, mid)
            c = -mp.exp((lo + hi) / 2)
        sd = 1 / mp.sqrt(k2(c))
        h = 3 * max(abs(c), sd, max(cj for _, _, cj in comps) / (4 * xm))
        kc = k(c)

        def g(t):  # e^{K(t) - K(c) - (t - c) x} (-+1/t)
            return mp.exp(k(t) - kc - (t - c) * xm) / (t if upper else -t)

        # (1/2 pi i) int over both halves = (1/pi) [int_0^h Re g(c + iy) dy
        #                                         + int_c^inf Im g(u + ih) du]
        cuts = [0, sd / 2, sd, 2 * sd, h] if h > 2 * sd else [0, h / 2, h]
        vertical = mp.quad(lambda y: mp.re(g(mp.mpc(c, y))), cuts, method="gauss-legendre")
        # the ray in pieces doubling in length, through the branch points' abscissas, until the
        # integrand is below 1e-40 of its apex value at two successive ends
        apex, ends, step, small = abs(g(mp.mpc(c, 0))), [c], max(abs(c), sd) / 4, 0
        while small < 2:
            ends.append(ends[-1] + step)
            step *= 2
            small = small + 1 if abs(g(mp.mpc(ends[-1], h))) < 1e-40 * apex else 0
        pieces = sorted(set(ends + [1 / (2 * wj) for wj, _, _ in comps
                                    if c < 1 / (2 * wj) < ends[-1]]))
        ray = mp.quad(lambda u: mp.im(g(mp.mpc(u, h))), pieces, method="gauss-legendre")
        log_tail = kc - c * xm + mp.log((vertical + ray) / mp.pi)
        return float(mp.log1p(-mp.exp(log_tail)) if upper else log_tail)


def _check(dist: GenChi2, x: float, oracle_log_p: float, method: str | None = None) -> float:
    """Assert GenChi2 is within TOL_BITS of the oracle (and used ``method``); the error."""
    bits, used = dist.bits_below_with_method(x)
    assert bits == dist.bits_below(x)
    error = abs(bits + oracle_log_p / LN2)
    assert error <= TOL_BITS, (x, bits, -oracle_log_p / LN2, used)
    if method is not None:
        assert used == method, (x, used)
    return error


# ------------------------------------------------------------------------------- the oracles
@pytest.mark.parametrize(("dof", "nc"), [(1.0, 0.0), (3.0, 2.0)])
def test_inversion_oracle_matches_scipy_for_one_component(dof, nc):
    law = stats.ncx2(dof, nc) if nc else stats.chi2(dof)
    for q in (1e-200, 1e-5, 0.6, 0.99, 1.0 - 1e-9):
        y = float(law.ppf(q))
        if y > 0:
            got = _mp_inversion_logcdf([0.7], [dof], [nc], 0.7 * y)
            assert got == pytest.approx(float(law.logcdf(y)), rel=1e-9, abs=1e-12), q


def test_the_three_oracles_agree_for_two_components():
    w, dof = [1.0, 1e-6], [1.0, 1.0]
    for x in (1e-8, 0.3):
        central = _mp_convolution_logcdf(w, dof, [0.0, 0.0], x)
        assert _mp_inversion_logcdf(w, dof, [0.0, 0.0], x) == pytest.approx(central, rel=1e-10)
        assert _mp_two_dof1_logcdf(w, [0.0, 0.0], x) == pytest.approx(central, rel=1e-10)
        # (noncentral, the convolution oracle is slow: test_weights_1_and_1e6_noncentral_by_...)
        noncentral = _mp_two_dof1_logcdf(w, [1.0, 2.0], x)
        assert _mp_inversion_logcdf(w, dof, [1.0, 2.0], x) == pytest.approx(noncentral, rel=1e-10)


# ------------------------------------------------------------------------------- weights 1, 1e-6
TWO = ([1.0, 1e-6], [1.0, 1.0])


@pytest.mark.parametrize("fraction", [1e-9, 1e-6, 1e-4, 1e-2, 0.3, 0.99, 1.5, 4.0])
def test_weights_1_and_1e6_central(fraction):
    # the saddlepoint alone: 0.11 bits off at fraction 1e-6, 0.03 at 1e-4, 0.026 at 0.3
    w, dof = TWO
    dist = GenChi2.from_arrays(w, dof, 0.0)
    x = dist.mean() * fraction
    _check(dist, x, _mp_convolution_logcdf(w, dof, [0.0, 0.0], x), "inversion")


@pytest.mark.parametrize("nc", [[1.0, 1.0], [5.0, 0.0], [0.0, 5.0]])
def test_weights_1_and_1e6_noncentral(nc):
    w, dof = TWO
    dist = GenChi2.from_arrays(w, dof, nc)
    for fraction in (1e-8, 1e-3, 0.5):
        x = dist.mean() * fraction
        _check(dist, x, _mp_inversion_logcdf(w, dof, nc, x), "inversion")


@pytest.mark.slow
@pytest.mark.parametrize("nc", [[1.0, 1.0], [5.0, 0.0], [0.0, 5.0]])
def test_weights_1_and_1e6_noncentral_by_convolution(nc):
    w, dof = TWO
    dist = GenChi2.from_arrays(w, dof, nc)
    for fraction in (1e-9, 1e-6, 1e-4, 1e-2, 0.3, 0.99):
        x = dist.mean() * fraction
        _check(dist, x, _mp_convolution_logcdf(w, dof, nc, x), "inversion")


@pytest.mark.parametrize(("w", "nc"), [([1.0, 0.5], [1e4, 1e4]), ([1.0, 1e-3], [3e3, 0.0])])
def test_huge_noncentralities(w, nc):
    # sum nc / 2 > 1e3: near normal, yet two components of 1 dof (the effective dof of the
    # central parts is ~2), so inversion, whose contour passes the noncentral terms' essential
    # singularities; the polyline oracle loses digits here, the ellipse integral does not
    dist = GenChi2.from_arrays(w, 1.0, nc)
    for fraction in (1e-12, 1e-4, 0.5, 0.99):
        x = dist.mean() * fraction
        _check(dist, x, _mp_two_dof1_logcdf(w, nc, x), "inversion")  # 2 to 14000 bits


# ------------------------------------------------------------------------------- 12 decades
def _log_spaced(n: int, dof: float, seed: int) -> GenChi2:
    rng = np.random.default_rng(seed)
    return GenChi2.from_arrays(10.0 ** np.linspace(-12.0, 0.0, n), dof, rng.uniform(0.0, 3.0, n))


@pytest.mark.parametrize("fraction", [0.5, 1e-4, 1e-12])
def test_weights_log_spaced_over_12_decades(fraction):
    dist = _log_spaced(13, 1.0, seed=1)
    x = dist.mean() * fraction
    oracle = _mp_inversion_logcdf(dist.weights, dist.dofs, dist.noncentralities, x)
    _check(dist, x, oracle, "inversion")  # ~1.4, 23 and 150 bits


@pytest.mark.slow
@pytest.mark.parametrize(("n", "dof"), [(20, 2.0), (40, 1.0), (50, 2.0)])
def test_weights_log_spaced_over_12_decades_more_components(n, dof):
    dist = _log_spaced(n, dof, seed=n)
    for fraction in (1.5, 0.9, 0.1, 1e-2, 1e-4, 1e-8, 1e-12, 1e-20, 1e-40):
        x = dist.mean() * fraction
        _check(dist, x, _mp_inversion_logcdf(dist.weights, dist.dofs, dist.noncentralities, x))


# ------------------------------------------------------------------------------- one dominant
def test_one_dominant_weight_and_300_tiny_equal_ones():
    # 1 chi2'(1, 2) + 1e-4 * sum of 300 chi2'(1, 0.5) = 1 chi2'(1, 2) + 1e-4 chi2'(300, 150):
    # GenChi2 sees 301 components, the oracle two
    dist = GenChi2.from_arrays([1.0] + [1e-4] * 300, 1.0, [2.0] + [0.5] * 300)
    for fraction, method in ((1.5, "inversion"), (0.99, "inversion"), (0.5, "inversion"),
                             (0.1, "inversion"), (1e-2, "inversion"),  # N_eff < 60
                             (1e-3, "saddlepoint"), (1e-5, "saddlepoint")):  # all saturated
        x = dist.mean() * fraction
        _check(dist, x, _mp_inversion_logcdf([1.0, 1e-4], [1.0, 300.0], [2.0, 150.0], x),
               method)


@pytest.mark.slow
def test_one_dominant_weight_and_50_unequal_tiny_ones():
    rng = np.random.default_rng(3)
    w = np.concatenate([[1.0], 10.0 ** rng.uniform(-5.0, -3.0, 50)])
    dist = GenChi2.from_arrays(w, 1.0, rng.uniform(0.0, 2.0, 51))
    for fraction in (1.2, 0.7, 0.2, 1e-2, 1e-4, 1e-6):
        x = dist.mean() * fraction
        _check(dist, x, _mp_inversion_logcdf(dist.weights, dist.dofs, dist.noncentralities, x))


# ------------------------------------------------------------------------------- equal weights
@pytest.mark.parametrize(("n", "dof", "nc"), [(1, 1.0, 0.0), (7, 1.0, 0.0), (7, 1.0, 0.4),
                                              (30, 2.0, 0.1)])
def test_equal_weights_match_scipy_by_series_and_by_inversion(n, dof, nc):
    dist = GenChi2.from_arrays(np.full(n, 0.3), dof, nc)
    df, total_nc = n * dof, n * nc
    law = stats.ncx2(df, total_nc) if total_nc else stats.chi2(df)
    for q in (1e-250, 1e-30, 1e-3, 0.5, 0.99):
        y = float(law.ppf(q))
        if not y > 0:
            continue
        if q > 1e-100 or not total_nc:
            ref = float(law.logcdf(y))
        else:  # scipy's ncx2.logcdf is off by 0.017 nats at 1e-250 for ncx2(7, 2.8): mpmath
            with mp.workdps(30):
                ref = float(mp.log(_mp_ncx2_cdf(mp.mpf(y), df, total_nc)))
        got, method = dist.logcdf_with_method(0.3 * y)
        assert method == "series"
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-12), q
        # the inversion integral, forced, agrees too (it is exact whatever the spectrum)
        assert abs(dist.logcdf_inversion(0.3 * y) - ref) / LN2 <= 1e-9, q


# ------------------------------------------------------------------------------- deep tails
@pytest.mark.parametrize("target_bits", [10.0, 30.0, 100.0, 300.0, 1500.0])
def test_moderately_deep_and_very_deep_left_tails(target_bits):
    w, dof, nc = [1.0, 0.1, 1e-3], [1.0, 1.0, 1.0], [0.5, 0.0, 2.0]
    dist = GenChi2.from_arrays(w, dof, nc)
    log_x = optimize.brentq(lambda lx: dist.bits_below(math.exp(lx)) - target_bits,
                            -2000.0, math.log(dist.mean()))
    x = math.exp(log_x)
    oracle = _mp_inversion_logcdf(w, dof, nc, x)  # (1500 bits: P ~ 1e-450)
    assert -oracle / LN2 == pytest.approx(target_bits, rel=1e-3)
    _check(dist, x, oracle, "inversion")


def test_inversion_is_exact_to_1e8_bits_where_measured():
    # the requirement is 1e-3 bits; the inversion measures ~1e-14 against the oracles
    w, dof = TWO
    dist = GenChi2.from_arrays(w, dof, 0.0)
    for fraction in (1e-7, 0.2):
        x = dist.mean() * fraction
        assert abs(dist.logcdf_inversion(x) - _mp_convolution_logcdf(w, dof, [0, 0], x)) <= 1e-8


# ------------------------------------------------------------------------------- which method
def test_real_like_spectra_keep_the_saddlepoint_and_stay_fast():
    rng = np.random.default_rng(5)
    dist = GenChi2.from_arrays(rng.uniform(0.2, 2.0, 300), 10.0, rng.uniform(0.0, 3.0, 300))
    t0 = time.perf_counter()
    for fraction in (1e-6, 1e-3, 0.1, 0.5, 0.9, 0.99, 1.01, 1.2):
        assert dist.bits_below_with_method(dist.mean() * fraction)[1] == "saddlepoint"
    assert (time.perf_counter() - t0) / 8 < 0.05  # ~0.2 ms each


def test_methods_at_the_boundaries():
    dist = GenChi2.from_arrays([1.0, 1e-6], 1.0, 0.0, offset=0.5)
    assert dist.logcdf_with_method(0.5) == (-math.inf, "boundary")
    assert dist.logcdf_with_method(math.inf) == (0.0, "boundary")
    assert dist.bits_below_with_method(0.4) == (math.inf, "boundary")
    assert GenChi2.from_arrays([0.0], 1.0, offset=0.3).logcdf_with_method(0.3) == (0.0,
                                                                                   "boundary")
    assert set(CDF_METHODS) == {"saddlepoint", "inversion", "series", "boundary"}


def test_effective_dof_of_a_chi2_is_its_dof_at_any_tilt():
    for n in (1.0, 7.0, 300.0):
        for g in (1e-6, 0.3, 0.999999):  # (g = sig_j: how saturated the component is)
            # n components of 1 dof, or one of n: the same chi2(n)
            assert effective_dof(np.full(int(n), g), np.full(int(n), 1 - g), np.ones(int(n)),
                                 np.zeros(int(n))) == pytest.approx(n, rel=1e-9)
            assert effective_dof(np.array([g]), np.array([1 - g]), np.array([n]),
                                 np.array([0.0])) == pytest.approx(n, rel=1e-9)


def test_switching_between_methods_moves_the_value_by_less_than_1e4_bits():
    # where the effective dof crosses N_EFF_SADDLEPOINT the two methods meet; the jump there is
    # the saddlepoint's error at that N (<= 4e-5 bits over random spectra)
    dist = GenChi2.from_arrays([1.0] + [1e-4] * 300, 1.0, [2.0] + [0.5] * 300)
    lo, hi = math.log(1e-3 * dist.mean()), math.log(1e-2 * dist.mean())  # saddlepoint, inversion
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if dist.bits_below_with_method(math.exp(mid))[1] == "inversion" \
            else (mid, hi)
    below, above = (dist.bits_below_with_method(math.exp(v)) for v in (lo, hi))
    assert (below[1], above[1]) == ("saddlepoint", "inversion")
    assert abs(below[0] - above[0]) < 1e-4
    # and it happens where the effective dof at the saddlepoint s = -e^tau is the threshold
    tau, _ = dist.left_saddlepoint(math.exp(hi))
    sig = 1.0 / (1.0 + np.exp(-(tau + np.log(2.0 * dist.weights))))
    n_eff = effective_dof(sig, 1.0 - sig, dist.dofs, dist.noncentralities)
    assert n_eff == pytest.approx(N_EFF_SADDLEPOINT, rel=1e-6)


def test_inversion_cost_per_value():
    dists = [GenChi2.from_arrays(*TWO, 0.0), _log_spaced(13, 1.0, seed=1),
             GenChi2.from_arrays([1.0] + [1e-4] * 300, 1.0, [2.0] + [0.5] * 300)]
    for dist in dists:
        xs = dist.mean() * np.geomspace(1e-8, 1.0, 8)
        t0 = time.perf_counter()
        for x in xs:
            dist.logcdf_inversion(float(x))
        # measured ~0.3 ms (2 components), ~1 ms (13), ~15 ms (301); 10x slack for busy CI
        assert (time.perf_counter() - t0) / len(xs) < 0.2


def test_saddlepoint_only_skips_the_inversion_and_stays_close():
    """An almost degenerate law like that of a gp run that does not interpolate (tiny
    eigenvalues beside large residuals: the inversion's slowest case): saddlepoint_only gives
    the saddlepoint, labelled so, within 0.5 bits of the full method over the bulk, and both
    are finite and increasing in x."""
    from ibdb.stats.spectrum import gp_loss_distribution

    rng = np.random.default_rng(5)
    dist = gp_loss_distribution(1e-9 * rng.uniform(0.1, 1.0, 300),
                                (0.15 * rng.normal(size=(300, 4)) ** 2).sum(axis=1),
                                n_test=300, n_outputs=4)
    xs = dist.mean() + np.sqrt(dist.var()) * np.array([-4.0, -2.0, 0.0, 2.0])
    fast = [dist.logcdf_with_method(float(x), saddlepoint_only=True) for x in xs]
    full = [dist.logcdf_with_method(float(x)) for x in xs]
    assert {m for _, m in fast} == {"saddlepoint"}
    assert {m for _, m in full} <= {"saddlepoint", "inversion"}
    for (a, _), (b, _) in zip(fast, full, strict=True):
        assert np.isfinite(a) and np.isfinite(b) and abs(a - b) / math.log(2) < 0.5
    assert np.all(np.diff([v for v, _ in full]) > 0)
