"""Log-space CDFs of the noncentral chi-squared and of positive sums of them.

One home for the left-tail numerics that the point estimate (:mod:`ibdb.stats.ncx2fit`), its
bootstrap (:mod:`ibdb.stats.bootstrap`), the exact law of a kernel space
(:mod:`ibdb.stats.genchi2`) and
its tilted Monte Carlo check (:mod:`ibdb.stats.tilting`) share, so that a numerical fix lands once.
Everything is a natural logarithm: the tails wanted lie far below the smallest double.

- Exact series: :func:`ncx2_logcdf_poisson` (a Poisson mixture of regularised incomplete
  gammas, :func:`log_gammainc_lower`, any argument, one value at a time) and
  :func:`ncx2_logcdf_small_argument` (the same mixture summed to a fixed 20 x 20 terms where
  that converges, vectorised).
- The Lugannani-Rice saddlepoint with Daniels' second-order term, in pieces that work for one
  component or many: :func:`left_tail_terms` (the standardised cumulants left of the mean,
  from each component's logistic variable), :func:`daniels_correction` and
  :func:`lugannani_rice_logcdf`. :func:`ncx2_logcdf_saddlepoint` assembles them for a single
  scaled ncx2, whose saddlepoint equation is a quadratic.
- The dispatchers that choose between scipy, the series and the saddlepoint:
  :func:`ncx2_logcdf` (one value, as accurate as possible: the point estimate) and
  :func:`ncx2_logcdf_many` (vectorised, fast: the bootstrap replicates).

Notation: for a component w chi2'(d, nc) and a saddlepoint s < 0, sig = 2|s| w r and
r = 1 / (1 - 2 s w) = 1 - sig lie in (0, 1) however large |s| is (the caller forms them from
a logistic function or a closed form, in logs), so no quantity below overflows or cancels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = [
    "HUGE_DF", "SCIPY_LOGCDF_FLOOR", "daniels_correction", "left_tail_terms", "log_gammainc_lower",
    "lugannani_rice_logcdf", "ncx2_logcdf", "ncx2_logcdf_many", "ncx2_logcdf_poisson",
    "ncx2_logcdf_saddlepoint", "ncx2_logcdf_small_argument", "v_minus_log1p",
]

_LN2 = math.log(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
_SQRT2 = math.sqrt(2.0)
# scipy's ncx2.logcdf is trusted down to this many nats (~1000 bits); deeper it first loses
# accuracy and then returns -inf, and the series or the saddlepoint take over.
SCIPY_LOGCDF_FLOOR = -700.0
# The exact Poisson mixture sums ~nc/2 terms; past this nc/2 that costs too much, and the
# saddlepoint is then excellent (the law is close to normal: its error is O(1/nc)).
_EXACT_MAX_HALF_NC = 1e5
# Terms of each sum in the small-argument series (see ncx2_logcdf_small_argument).
_SERIES_TERMS = 20
# ncx2_logcdf_many: log-CDF (nats) above which replicate values come from scipy rather than
# the saddlepoint, and the df + nc beyond which the saddlepoint is kept at any depth.
_SHALLOW = -60.0
_NEAR_NORMAL = 500.0
# Past this df + nc scipy's ncx2 series costs seconds per value (13 s at df ~ 2e17, from losses
# that agree to 9 digits) and the law is normal to a skewness sqrt(8 / (df + nc)) < 1e-4: the
# saddlepoint (left of the mean, within 2e-6 bits of scipy at 1e10) and the normal CDF (right of
# it, within ~1e-5 nats) replace scipy, so that estimates on almost-constant losses stay fast.
HUGE_DF = 1e9


# ------------------------------------------------------------------------------ elementary
def v_minus_log1p(v: np.ndarray, log1p_v: np.ndarray | None = None) -> np.ndarray:
    """v - log1p(v) (>= 0) for v > -1, accurate at every v.

    As v -> 0 both terms are ~v and the difference loses every digit, so there the Taylor
    series is used (|v| < 0.25: 0.25^28 / 30 < 1e-18, below rounding). Elsewhere the direct
    difference, with ``log1p_v`` when the caller has log1p(v) more accurately than from v
    (near v = -1, where 1 + v itself has lost digits).
    """
    v = np.asarray(v, dtype=np.float64)
    acc = np.zeros_like(v)
    for k in range(30, 1, -1):
        acc = acc * v + (1.0 if k % 2 == 0 else -1.0) / k
    with np.errstate(invalid="ignore", divide="ignore"):
        direct = v - (np.log1p(v) if log1p_v is None else log1p_v)
    return np.where(np.abs(v) < 0.25, v * v * acc, direct)


def log_gammainc_lower(a: np.ndarray, log_z: float) -> np.ndarray:
    """log P(a, z), the regularised lower incomplete gamma, for an array a > 0, at z = e^log_z.

    scipy's gammainc is accurate relative to its value until it underflows; far left (only
    there, z << a) use P = z^a e^-z / Gamma(a+1) * 1F1(1; a+1; z) in logs, whose hypergeometric
    factor lies in [1, ~sqrt(a)]. Near P = 1, log1p(-Q) keeps the digits that log(P) loses.
    """
    z = math.exp(log_z) if log_z < 709.0 else math.inf
    p = special.gammainc(a, z)
    with np.errstate(divide="ignore"):
        out = np.log(p)
    upper = p > 0.5
    out[upper] = np.log1p(-special.gammaincc(a[upper], z))
    # well above the subnormals, where gammainc (in p, or through z) loses relative precision
    tiny = (p < 1e-280) | (z < 1e-280)
    if tiny.any():
        at = a[tiny]
        out[tiny] = (at * log_z - z - special.gammaln(at + 1.0)
                     + np.log(special.hyp1f1(1.0, at + 1.0, z)))
    return out


# ------------------------------------------------------------------------------ exact series
def ncx2_logcdf_poisson(log_z: float, half_df: float, half_nc: float) -> float | None:
    """Exact log P[chi2'(df, nc) <= 2z] at z = e^log_z, or None when nc/2 > 1e5 (too costly).

    chi2'(df, nc) is a Poisson(nc/2) mixture over i of chi2(df + 2i), so
    P = sum_i Pois(i; nc/2) P(df/2 + i, z). Terms past nc/2 + 40 sqrt(nc/2) + 40 are below
    e^-800 of the largest (both factors fall with i there). z enters by its log, so it never
    underflows; near P = 1 the upper tails are summed instead, to keep precision.
    """
    if half_nc == 0.0:
        return float(log_gammainc_lower(np.array([half_df]), log_z)[0])
    if half_nc > _EXACT_MAX_HALF_NC:
        return None
    i = np.arange(math.ceil(half_nc + 40.0 * math.sqrt(half_nc) + 40.0), dtype=np.float64)
    log_pois = i * math.log(half_nc) - half_nc - special.gammaln(i + 1.0)
    log_p = float(special.logsumexp(log_pois + log_gammainc_lower(half_df + i, log_z)))
    if log_p > -0.7:  # P > 1/2
        z = math.exp(log_z) if log_z < 709.0 else math.inf
        return math.log1p(-float(np.sum(np.exp(log_pois) * special.gammaincc(half_df + i, z))))
    return log_p


def ncx2_logcdf_small_argument(log_y: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """log P[chi2'(df, nc) <= y] for z = y/2 <= 1 and z nc/2 <= 1, exactly, vectorised.

    The Poisson mixture of :func:`ncx2_logcdf_poisson`, with the regularised lower incomplete
    gamma as P(b, z) = z^b e^-z / Gamma(b + 1) * sum_m z^m / ((b+1)...(b+m)). Both ratios are
    below 1/(i+1) and 1/(m+1) here, so 20 terms of each leave < 1e-18: a fixed amount of array
    work per value, where the saddlepoint fails (df below ~1, a near point mass at 0).
    """
    a = 0.5 * df
    h = 0.5 * nc
    z = np.exp(log_y - _LN2)
    with np.errstate(divide="ignore"):
        log_h = np.log(h)
    terms = []
    for i in range(_SERIES_TERMS):
        b = a + i
        hyp = np.ones_like(z)  # sum_m z^m / ((b+1)...(b+m)), Horner from the inside
        for m in range(_SERIES_TERMS, 0, -1):
            hyp = 1.0 + hyp * z / (b + m)
        log_gam = b * (log_y - _LN2) - z - special.gammaln(b + 1.0) + np.log(hyp)
        log_pois = -h + (i * log_h if i else 0.0) - special.gammaln(i + 1.0)
        terms.append(np.where(h > 0, log_pois, 0.0 if i == 0 else -np.inf) + log_gam)
    return special.logsumexp(np.stack(terms), axis=0)


# ------------------------------------------------------------------------------ saddlepoint
def left_tail_terms(sig: np.ndarray, r: np.ndarray, dof: np.ndarray, nc: np.ndarray,
                    log_r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(s x - K(s) = w^2/2, u, rho3, rho4) at a saddlepoint s < 0, summed over the last axis.

    Per component w_j chi2'(dof_j, nc_j): sig = 2|s| w r, r = 1 / (1 - 2 s w) = 1 - sig and
    log_r = log r (see the module docstring). Then 2 s^2 K'' = sum sig^2 (dof + 2 nc r),
    |s|^3 K''' = sum sig^3 (dof + 3 nc r), s^4 K''''/3 = sum sig^4 (dof + 4 nc r), and
    s K'(s) - K(s) = sum (dof/2)(v - log1p v) + (nc/2) sig^2 with v = -sig: a sum of
    non-negative terms, so no cancellation. u = s sqrt(K''), rho3 = K'''/K''^1.5 and
    rho4 = K''''/K''^2 are what Lugannani-Rice and Daniels' term need.
    """
    sig2 = sig * sig
    s2 = np.sum(sig2 * (dof + 2.0 * nc * r), axis=-1)
    s3 = np.sum(sig2 * sig * (dof + 3.0 * nc * r), axis=-1)
    s4 = np.sum(sig2 * sig2 * (dof + 4.0 * nc * r), axis=-1)
    half_w2 = 0.5 * np.sum(dof * v_minus_log1p(-sig, log_r) + nc * sig2, axis=-1)
    return half_w2, -np.sqrt(0.5 * s2), s3 * 2.0**1.5 / s2**1.5, 12.0 * s4 / (s2 * s2)


def daniels_correction(w: np.ndarray, u: np.ndarray, rho3: np.ndarray,
                       rho4: np.ndarray) -> np.ndarray:
    """G = 1/w - 1/u - D, with P[L <= x] = Phi(w) + phi(w) G (Lugannani-Rice + Daniels).

    D = (1/u)(rho4/8 - 5 rho3^2/24) - rho3/(2u^2) - 1/u^3 + 1/w^3 is Daniels' (1987)
    second-order term: it reproduces Stirling's 1/(12n) for the chi-squared, cutting the
    deep-tail error from O(1/N) to O(1/N^2) for N degrees of freedom. A 0/0 at the mean
    (w = u = 0): callers interpolate there.
    """
    daniels = ((rho4 / 8.0 - 5.0 * rho3**2 / 24.0) / u - rho3 / (2.0 * u * u)
               - 1.0 / u**3 + 1.0 / w**3)
    return 1.0 / w - 1.0 / u - daniels


def lugannani_rice_logcdf(half_w2: np.ndarray, w: np.ndarray, u: np.ndarray,
                          g: np.ndarray) -> np.ndarray:
    """log[Phi(w) + phi(w) G], vectorised and never positive, with phi(w) = e^-half_w2/sqrt(2pi).

    Left of the mean (w <= 0) as log phi(w) + log(R(|w|) + G) with R the Mills ratio (via
    erfcx), so it never underflows; right of it as log1p(-Q), Q = phi(w) (R(w) - G) the upper
    tail, so it keeps precision as P -> 1. Where that is not a probability (it does not happen
    for these laws in practice) the first-order r* form log Phi(w + log(u/w)/w) is used, or
    log 1/2 where even that is undefined (at the mean).
    """
    half_w2, w, u, g = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                             for a in (half_w2, w, u, g)))
    with np.errstate(all="ignore"):
        log_phi = -half_w2 - _LOG_SQRT_2PI
        mills = _SQRT_HALF_PI * special.erfcx(np.abs(w) / _SQRT2)
        left = w <= 0
        bracket = mills + g
        out_left = log_phi + np.log(bracket)
        q = np.exp(log_phi) * (mills - g)
        ok = np.where(left, (bracket > 0) & np.isfinite(out_left), (q >= 0) & (q < 1))
        out = np.where(left, out_left, np.log1p(-q))
        ratio = u / w
        defined = (w != 0) & (u != 0) & (ratio > 0)
        rstar = np.where(defined, special.log_ndtr(w + np.log(ratio) / w), math.log(0.5))
    return np.minimum(np.where(ok, out, rstar), 0.0)


def ncx2_logcdf_saddlepoint(x: np.ndarray, df: np.ndarray, nc: np.ndarray,
                            scale: np.ndarray) -> np.ndarray:
    """log P[scale * chi2'(df, nc) <= x] left of the mean by Lugannani-Rice with Daniels'
    second-order term, vectorised (broadcast) and in log space: finite for every x > 0.

    For one component the saddlepoint equation is a quadratic, so the root is closed-form:
    r = 1 / (1 - 2 s scale) = 2y / (df + sqrt(df^2 + 4 nc y)), y = x / scale (formed in logs,
    so that it never underflows), and sig = 1 - r. Against an mpmath oracle
    (tests/stats/test_bootstrap.py) its error is 0.014 bits at df = 2.5 (0.005 beyond 20 bits),
    <= 0.001 bits at df >= 7, 0.04 bits at df = 1, at any depth; it fails for df << 1 near
    y = 0 (a near point mass), where :func:`ncx2_logcdf_small_argument` takes over.
    """
    x, df, nc, scale = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                             for a in (x, df, nc, scale)))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_y = np.log(x) - np.log(scale)
        y = np.exp(log_y)
        log_r = _LN2 + log_y - np.log(df + np.sqrt(df * df + 4.0 * nc * y))
        r = np.exp(log_r)
        half_w2, u, rho3, rho4 = left_tail_terms(
            (1.0 - r)[..., None], r[..., None], df[..., None], nc[..., None], log_r[..., None])
        w = -np.sqrt(2.0 * half_w2)
        out = lugannani_rice_logcdf(half_w2, w, u, daniels_correction(w, u, rho3, rho4))
    return np.where(x > 0, out, -np.inf)


# ------------------------------------------------------------------------------ dispatchers
def _scipy_logcdf(y: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """scipy's log-CDF of chi2'(df, nc) at y, with nc = 0 as the central chi-squared (which
    scipy's ncx2 does not accept). scipy.stats is imported here, on first use: it takes ~0.3 s,
    and GenChi2 (the exact method, which imports this module) never needs it."""
    from scipy import stats

    with np.errstate(all="ignore"):
        return np.where(nc > 0, stats.ncx2.logcdf(y, df, np.where(nc > 0, nc, 1.0)),
                        stats.chi2.logcdf(y, df))


def ncx2_logcdf(x: float, df: float, nc: float, scale: float) -> tuple[float, str]:
    """(log P[scale * chi2'(df, nc) <= x], 'scipy' or 'saddlepoint'), as accurately as known.

    scipy.stats.ncx2.logcdf where it is finite and above -700 nats (it is reliable there);
    beyond, where it underflows to -inf or loses accuracy, the exact Poisson mixture
    (:func:`ncx2_logcdf_poisson`, within 1e-9 bits of an mpmath oracle at 10 to 10^5 bits,
    tests/stats/test_ncx2fit.py), or for nc/2 > 1e5 the saddlepoint (the law is then near normal).
    The label of that path stays 'saddlepoint', as stored in earlier diagnostics.
    """
    if df + nc >= HUGE_DF:
        return float(_near_normal_logcdf(np.asarray(x, dtype=np.float64), df, nc, scale)), \
            "saddlepoint"
    lp = float(_scipy_logcdf(x / scale, df, nc))
    if math.isfinite(lp) and lp > SCIPY_LOGCDF_FLOOR:
        return min(lp, 0.0), "scipy"
    if x >= math.inf:
        return 0.0, "scipy"
    if x <= 0.0:
        return -math.inf, "saddlepoint"
    exact = ncx2_logcdf_poisson(math.log(x) - math.log(2.0 * scale), 0.5 * df, 0.5 * nc)
    if exact is None:
        return float(ncx2_logcdf_saddlepoint(x, df, nc, scale)), "saddlepoint"
    return min(exact, 0.0), "saddlepoint"


def _near_normal_logcdf(x: np.ndarray, df: float, nc: float, scale: float) -> np.ndarray:
    """log P[scale chi2'(df, nc) <= x] for df + nc >= HUGE_DF: the saddlepoint left of the
    mean, the normal CDF at and right of it (see HUGE_DF)."""
    z = (x / scale - (df + nc)) / math.sqrt(2.0 * (df + 2.0 * nc))
    if z < 0:
        return ncx2_logcdf_saddlepoint(x, np.float64(df), np.float64(nc), np.float64(scale))
    return special.log_ndtr(z)


def ncx2_logcdf_many(x: np.ndarray, df: np.ndarray, nc: np.ndarray,
                     scale: np.ndarray) -> np.ndarray:
    """log P[scale * chi2'(df, nc) <= x], broadcast and vectorised, for the replicates.

    Where x is below the mean by half a standard deviation or more, the log-space saddlepoint
    is computed first (0.5 us per value against scipy's 3-30). Where that says the value is
    above -60 nats (87 bits; there the intervals are narrow) and df + nc < 500, and wherever
    x is not that far below the mean, scipy's ncx2.logcdf is used, as for the point estimate.
    Deeper, the exact Poisson-gamma series where it converges in a few terms (y = x/scale <= 2,
    y nc <= 4), else the saddlepoint: against scipy, within 0.04 bits for df < 2, 0.007 for
    df >= 2, 0.002 for df >= 10 (at 87 bits and more), and exact for df + nc > ~1000.
    """
    x, df, nc, scale = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                             for a in (x, df, nc, scale)))
    lp = np.full(x.shape, -np.inf)
    pos = x > 0
    with np.errstate(all="ignore"):
        log_y = np.log(x) - np.log(scale)
        z = (np.exp(log_y) - (df + nc)) / np.sqrt(2.0 * (df + 2.0 * nc))
        left = pos & (z < -0.5)
        lp[left] = ncx2_logcdf_saddlepoint(x[left], df[left], nc[left], scale[left])
        # (for df + nc >= _NEAR_NORMAL the saddlepoint is within 1e-5 bits at every depth)
        use_scipy = pos & (~left | ~((lp < _SHALLOW) | (df + nc >= _NEAR_NORMAL)))
        huge = pos & ~left & (df + nc >= HUGE_DF)  # right of the mean, where scipy is slow
        lp[huge] = special.log_ndtr(z[huge])
        use_scipy &= ~huge
        lp[use_scipy] = _scipy_logcdf(np.exp(log_y[use_scipy]), df[use_scipy], nc[use_scipy])
    # where scipy underflows or degrades, and where the saddlepoint was never replaced by it
    deep = pos & ~(np.isfinite(lp) & (lp > SCIPY_LOGCDF_FLOOR))
    deep |= left & ~use_scipy
    small = deep & (log_y <= _LN2)
    with np.errstate(divide="ignore"):
        small &= log_y + np.log(nc) <= 2.0 * _LN2
    if small.any():
        lp[small] = ncx2_logcdf_small_argument(log_y[small], df[small], nc[small])
    rest = deep & ~small & ~(left & ~use_scipy) & ~huge  # (those hold their value already)
    if rest.any():
        lp[rest] = ncx2_logcdf_saddlepoint(x[rest], df[rest], nc[rest], scale[rest])
    return np.minimum(lp, 0.0)
