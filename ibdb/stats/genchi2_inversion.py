"""Numerical inversion of a generalised chi-squared's moment generating function, in log space.

The fallback of :meth:`ibdb.stats.genchi2.GenChi2.logcdf` where the saddlepoint approximation is not
accurate enough (few effective degrees of freedom: :func:`effective_dof`). With K the cumulant
generating function of L' = L - offset = sum_j w_j chi2'(d_j, nc_j) and phi(t) = K(t) - t x,
Laplace inversion of the CDF gives, for any c in the domain of K,

    P[L' <= x] = (1 / 2 pi i) int_{c - i inf}^{c + i inf} e^{phi(t)} (-1/t) dt   (c < 0)
    P[L' >  x] = (1 / 2 pi i) int_{c - i inf}^{c + i inf} e^{phi(t)} (+1/t) dt   (0 < c < 1/2w)

On that vertical line the integrand decays only algebraically, and oscillates. It is deformed
to the right (where e^{-t x} decays) around the singularities, all on the real axis: the
pole at t = 0 (enclosed for the lower tail, left outside for the upper) and the branch points
t = 1/(2 w_j). The contour is a hyperbola with its apex c at (or near) the saddlepoint,
leaving it vertically, like the steepest-descent path:

    t = c + l zeta(v),  zeta(v) = L [alpha (cosh v - 1) + i sinh v],  v real,

l being the distance from c to the nearest singularity. Written in zeta, every component goes
through b_j = 2 w_j l / (1 - 2 w_j c), in (0, 1], so nothing depends on the depth of the tail:
1 - 2 w_j t = (1 - 2 w_j c)(1 - b_j zeta) and

    phi(t) - phi(c) = sum_j [-(d_j/2) log(1 - b_j zeta) + (nc_j/2) r_j b_j zeta / (1 - b_j zeta)]
                      - m zeta,    r_j = 1 / (1 - 2 w_j c),  m = l x.

e^{phi(c)} (in logs, exact at any depth) is factored out, so the integral left is O(1) even
where P is 10^-10000: log P = phi(c) + log I. L = 2 k2 / k3 (k2, k3: the tilted law's second
and third cumulants in zeta's units) and alpha = 2/3 give the hyperbola the steepest-descent
path's curvature at the apex; L ~ 1 for a gamma law deep in its tail, L ~ 1 / b_j for
components far from saturation (a near-normal law), where the hyperbola stays above the region
in which e^{phi} would grow (Re zeta < alpha Im zeta). Along it the integrand decays like
exp(-m l Re zeta), i.e. double-exponentially in v. By symmetry,
I = (1/pi) int_0^inf Im[e^{phi(t) - phi(c)} zeta'(v) / (a -+ zeta)] dv, an even analytic
function of v: the trapezoidal rule converges exponentially. The step halves until two
estimates agree to 1e-10, and a result is accepted only if the integrand never exceeds its
apex value much (no cancellation); otherwise a wider contour is tried.
:func:`contour_log_integral` returns None if none passes (it has not happened in testing).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["N_EFF_SADDLEPOINT", "contour_log_integral", "effective_dof", "inversion_log_tail",
           "inversion_logcdf", "needs_inversion", "tilt"]

# Below this many effective degrees of freedom at the saddlepoint (see effective_dof), the
# saddlepoint's error can exceed ~1e-4 bits, and the CDF is computed by inversion instead.
N_EFF_SADDLEPOINT = 200.0
# The contour's apex is kept at least this many standard deviations (times |s|) from the pole
# at s = 0, near which the integrand would be sharply peaked (inversion_logcdf).
_APEX_U = 1.5
# Accept a trapezoidal estimate when halving the step changes it by less than this (relative).
_RTOL = 1e-10
# The most nodes a contour may use before the next shape is tried.
_N_MAX = 1 << 14
# The integrand is negligible beyond the v where it falls below e^-_TAIL of its apex value.
_TAIL = 45.0
# A contour on which Re(phi(t) - phi(c)) exceeds this is abandoned for the next shape, and a
# result whose sum of |terms| exceeds |sum| by _MAX_CANCELLATION is not accepted.
_MAX_SHIFT = 3.0
_MAX_CANCELLATION = 1e6
# Complex values per block of nodes x components.
_BLOCK = 1 << 18
# Hyperbolas (size / L, alpha) tried in turn (contour_log_integral).
_SHAPES = ((1.0, 2.0 / 3.0), (1.0, 1.0 / 3.0), (4.0, 1.0 / 3.0), (0.25, 2.0 / 3.0))


def effective_dof(g: np.ndarray, r: np.ndarray, dofs: np.ndarray, ncs: np.ndarray) -> float:
    """How many degrees of freedom carry the law tilted to a saddlepoint s: the smaller of

    - N3 = (sum g^2 d)^3 / (sum g^3 d)^2, the dof of the gamma law with the skewness of the
      tilted central parts (their noncentral parts are closer to normal; leaving them out is
      conservative: a noncentral component of small dof is as hard as a central one), and
    - Nc = min_j d_j / v_j, v_j = g_j^2 (d_j + 2 nc_j r_j) / sum_k g_k^2 (d_k + 2 nc_k r_k) the
      share of component j in the variance: one component of small dof d_j that carries a
      share v_j of the variance makes the law as far from normal as a chi2(d_j / v_j), whatever
      the other components do (its higher cumulants dominate: the limit of the gamma-equivalent
      dof of the k-th cumulant as k grows).

    Per component, g_j = 2 |s| w_j r_j and r_j = 1 / (1 - 2 s w_j) (g_j = sig_j left of the
    mean); both equal N for chi2(N) at any s. The saddlepoint's error is O(1/N^2) in these.
    """
    g2 = g * g
    central = float(np.sum(g2 * dofs))
    var = float(np.sum(g2 * (dofs + 2.0 * ncs * r)))
    skew = float(np.sum(g2 * g * dofs))
    n3 = central**3 / skew**2 if skew > 0 else math.inf
    share = g2 * (dofs + 2.0 * ncs * r)
    nc_min = float(np.min(dofs * var / np.where(share > 0, share, np.inf)))
    return min(n3, nc_min)


def tilt(weights: np.ndarray, root: float, left: bool) -> tuple[np.ndarray, np.ndarray]:
    """(g, r) per component, as :func:`effective_dof` takes them, at the saddlepoint s = -e^root
    if ``left``, else s = root (s = 0: their limit, g proportional to w)."""
    w = np.asarray(weights, dtype=np.float64)
    if left:
        a = root + np.log(2.0 * w)
        return np.exp(-np.logaddexp(0.0, -a)), np.exp(-np.logaddexp(0.0, a))  # expit(+-a)
    if root == 0.0:
        return w / float(w.max()), np.ones_like(w)
    r = 1.0 / (1.0 - 2.0 * root * w)
    return 2.0 * root * w * r, r


def needs_inversion(g: np.ndarray, r: np.ndarray, dofs: np.ndarray, ncs: np.ndarray) -> bool:
    """True where the saddlepoint may be off by more than ~1e-4 bits: fewer than
    N_EFF_SADDLEPOINT effective degrees of freedom (:func:`effective_dof`)."""
    return effective_dof(g, r, dofs, ncs) < N_EFF_SADDLEPOINT


def _log_terms(v: np.ndarray, size: float, alpha: float, b: np.ndarray, r: np.ndarray,
               dofs: np.ndarray, ncs: np.ndarray, m: float, a: float, sign: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """(Re log, the complex unit-modulus phase) of e^{dphi} zeta'(v) / (a + sign zeta) at v."""
    half = np.sinh(0.5 * v)
    zeta = size * (2.0 * alpha * half * half + 1j * np.sinh(v))  # (cosh v - 1 = 2 sinh^2(v/2))
    dzeta = size * (alpha * np.sinh(v) + 1j * np.cosh(v))
    dphi = np.empty_like(zeta)
    block = max(1, _BLOCK // max(b.size, 1))  # (nodes x components arrays of bounded size)
    for i in range(0, v.size, block):
        bz = zeta[i:i + block, None] * b[None, :]
        one_minus = 1.0 - bz
        dphi[i:i + block] = np.sum(-0.5 * dofs * np.log(one_minus)
                                   + (0.5 * ncs * r) * bz / one_minus, axis=1)
    dphi -= m * zeta
    log_rest = np.log(dzeta / (a + sign * zeta))
    return dphi.real + log_rest.real, np.exp(1j * (dphi.imag + log_rest.imag))


def _trapezoid(size: float, alpha: float, step: float, args: tuple) -> float | None:
    """I on one hyperbola by the trapezoidal rule, halving ``step`` until it converges;
    None if it does not, or if the integrand grows above its apex value (cancellation)."""
    a = args[-2]
    log_apex = math.log(size / a)  # the integrand at v = 0: Im[zeta'(0) / a] = L / a
    # nodes k * step, k >= 1, out to where the integrand has fallen e^-_TAIL below its largest
    # value (it decays double-exponentially in v: a few chunks at most)
    mags, phases, top = [], [], log_apex
    k0, chunk = 1, max(64, math.ceil(1.0 / step))  # (at least one unit of v per chunk)
    while True:
        if k0 - 1 + chunk > _N_MAX:
            # A step this fine for this long a contour (an almost degenerate law: tiny weights
            # beside a large offset) would cost unbounded time: give up, and the caller keeps
            # the saddlepoint, labelled as such.
            return None
        v = (k0 + np.arange(chunk)) * step
        mag, phase = _log_terms(v, size, alpha, *args)
        mags.append(mag)
        phases.append(phase)
        top = max(top, float(np.max(mag)))
        k0 += chunk
        if mag[-1] < top - _TAIL and np.all(np.diff(mag[-8:]) < 0) or v[-1] > 60.0:
            break
    mag, phase = np.concatenate(mags), np.concatenate(phases)
    keep = np.flatnonzero(mag > top - _TAIL - 10.0)
    v_max = (keep[-1] + 2) * step if keep.size else step
    shift = top
    if shift > log_apex + _MAX_SHIFT:
        return None
    vals = np.exp(mag - shift) * phase.imag
    total = 0.5 * math.exp(log_apex - shift) + float(np.sum(vals))
    absolute = 0.5 * math.exp(log_apex - shift) + float(np.sum(np.abs(vals)))
    estimate, n = step * total, vals.size
    while n < _N_MAX:
        step *= 0.5
        v = (2.0 * np.arange(math.ceil(v_max / (2.0 * step))) + 1.0) * step
        mag, phase = _log_terms(v, size, alpha, *args)
        if float(np.max(mag)) > shift + _MAX_SHIFT:
            return None
        new = np.exp(mag - shift) * phase.imag
        total += float(np.sum(new))
        absolute += float(np.sum(np.abs(new)))
        n += v.size
        previous, estimate = estimate, step * total
        if estimate > 0 and abs(estimate - previous) <= _RTOL * estimate:
            if absolute > _MAX_CANCELLATION * total:
                return None
            return math.log(estimate / math.pi) + shift
    return None


def contour_log_integral(b: np.ndarray, r: np.ndarray, dofs: np.ndarray, ncs: np.ndarray,
                         m: float, a: float, sign: float) -> float | None:
    """log I, I = (1 / 2 pi i) int e^{phi(t) - phi(c)} dzeta / (a + sign zeta) along the
    hyperbola of the module docstring: sign = -1, a = 1 for the lower tail (pole at zeta = 1),
    sign = +1, a = c / l for the upper tail (pole at zeta = -a). None if no contour converges.
    """
    b, r, dofs, ncs = (np.asarray(v, dtype=np.float64) for v in (b, r, dofs, ncs))
    b2 = b * b
    k2 = 0.5 * float(np.sum(b2 * (dofs + 2.0 * ncs * r)))
    k3 = float(np.sum(b2 * b * (dofs + 3.0 * ncs * r)))
    size = 2.0 * k2 / k3 if k3 > 0 else 1.0
    args = (b, r, dofs, ncs, m, a, sign)
    for rel, alpha in _SHAPES:
        # first step: a third of the apex's Gaussian width, 1/sqrt(k2) in zeta, in units of v
        step = min(0.25, 1.0 / (3.0 * rel * size * math.sqrt(k2)))
        out = _trapezoid(rel * size, alpha, step, args)
        if out is not None:
            return out
    return None


def inversion_log_tail(weights: np.ndarray, dofs: np.ndarray, ncs: np.ndarray, xp: float, *,
                       tau: float | None = None, c: float | None = None) -> float | None:
    """log P[L' <= xp] (given ``tau``: apex c = -e^tau < 0) or log P[L' > xp] (given ``c``,
    0 < c < 1 / (2 max w)), by :func:`contour_log_integral`; None if that does not converge.

    The apex need not be the saddlepoint (any c in the domain is exact); the caller moves it
    away from the pole at 0 near the mean. For c < 0 the scale is l = |c| and b_j is the
    logistic sig_j = expit(tau + log 2 w_j), so |c| may exceed the largest double.
    """
    w, d, nc = (np.asarray(v, dtype=np.float64) for v in (weights, dofs, ncs))
    if tau is not None:
        a_j = tau + np.log(2.0 * w)
        b, r = tilt(w, tau, True)  # sig_j = 2 |c| w_j r_j and r_j = 1 - sig_j
        m = math.exp(tau + math.log(xp))  # |c| x
        # phi(c) = K(c) - c x = sum [-(d/2) log(1 + 2 w |c|) - (nc/2) sig] + |c| x
        log_scale = float(np.sum(-0.5 * d * np.logaddexp(0.0, a_j) - 0.5 * nc * b)) + m
        log_i = contour_log_integral(b, r, d, nc, m, 1.0, -1.0)
    else:
        if c is None or not 0.0 < c < 0.5 / float(w.max()):
            raise ValueError(f"c = {c!r}: pass tau, or c in (0, 1 / (2 max w)).")
        two_wc = 2.0 * w * c
        r = 1.0 / (1.0 - two_wc)
        ell = min(c, 0.5 / float(w.max()) - c)  # the nearest singularity: pole or branch point
        b = 2.0 * w * ell * r
        m = ell * xp
        log_scale = float(np.sum(-0.5 * d * np.log1p(-two_wc) + 0.5 * nc * two_wc * r)) - c * xp
        log_i = contour_log_integral(b, r, d, nc, m, c / ell, 1.0)
    return None if log_i is None else log_scale + log_i


def inversion_logcdf(weights: np.ndarray, dofs: np.ndarray, ncs: np.ndarray, xp: float,
                     mu: float, var: float, root: float | None) -> float | None:
    """log P[L' <= xp] (L' = L - offset, mean mu, variance var) by the inversion integral,
    with its apex at the saddlepoint ``root`` (tau = log(-s) below the mean, s above it, None
    at the mean) moved at least _APEX_U standard deviations (in s) away from the pole at 0.
    Below the mean the lower tail is integrated, above it the upper one (log1p(-Q) keeps
    precision as P -> 1). None if the integral does not converge."""
    near = _APEX_U / math.sqrt(var)
    if xp <= mu:
        tau = math.log(near) if root is None else max(root, math.log(near))
        log_p = inversion_log_tail(weights, dofs, ncs, xp, tau=tau)
        return None if log_p is None else min(log_p, 0.0)  # (rounding near the mean)
    c = max(root or 0.0, min(near, 0.25 / float(np.max(weights))))
    log_q = inversion_log_tail(weights, dofs, ncs, xp, c=c)
    if log_q is None or log_q >= 0:
        return None
    return math.log1p(-math.exp(log_q))
