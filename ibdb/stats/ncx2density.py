"""The noncentral chi-squared log-density, finite wherever the density is positive.

The fit (:mod:`ibdb.stats.ncx2fit`) writes the density of chi2'(df, nc) at y as

    log f(y) = -(nu + 1) log 2 - (y + nc)/2 + nu log y + z + chi(nu, z),
    nu = df/2 - 1,  z = sqrt(nc y),  chi(nu, z) = log[I_nu(z) (z/2)^-nu] - z,

so that every term but chi is elementary and chi is smooth and bounded in log z, which lets
the fit replace it by a Chebyshev interpolant. This module computes chi itself (three branches:
power series, scipy's exponentially scaled Bessel function, Debye expansion) and the
log-density built from it. scipy's ``ncx2.logpdf`` underflows to -inf far in the tails, where
the fit still needs finite values.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = ["chi", "ncx2_logpdf"]

_LOG2 = math.log(2.0)
# chi's power series is used where q = z^2/4 <= _SERIES_Q (nu + 1) (7 terms suffice; ive
# underflows only there for nu < ~160), the Debye expansion where ive < _IVE_TINY.
_SERIES_Q = 0.01
_IVE_TINY = 1e-280


def _chi_series(nu: np.ndarray, z: np.ndarray) -> np.ndarray:
    """chi(nu, z) from the power series I_nu(z) (z/2)^-nu = sum_k q^k / (k! Gamma(nu+k+1)),
    q = z^2/4. Used where q <= 0.01 (nu + 1): term k is below 0.01^k / k!, so 7 terms leave
    < 1e-17 relative."""
    q = 0.25 * z * z
    acc = np.zeros_like(q)
    for k in range(7, 0, -1):  # Horner: 1 + q/(1 (nu+1)) (1 + q/(2 (nu+2)) (1 + ...))
        acc = q / (k * (nu + k)) * (1.0 + acc)
    return np.log1p(acc) - z - special.gammaln(nu + 1.0)


def _chi_debye(nu: np.ndarray, z: np.ndarray) -> np.ndarray:
    """chi(nu, z) by the uniform asymptotic expansion of I_nu(nu t) (DLMF 10.41.3), nu > 0.

    log I = nu eta - log(2 pi nu)/2 - log(1 + t^2)/4 + log sum_k u_k(p) / nu^k, p = (1+t^2)^-1/2,
    rewritten so that nu (sqrt(1+t^2) - 1 - t) and the log terms never cancel large values.
    """
    t = z / nu
    sq = np.sqrt(1.0 + t * t)
    p = 1.0 / sq
    p2 = p * p
    u1 = p * (3.0 - 5.0 * p2) / 24.0
    u2 = p2 * (81.0 + p2 * (-462.0 + 385.0 * p2)) / 1152.0
    u3 = p * p2 * (30375.0 + p2 * (-369603.0 + p2 * (765765.0 - 425425.0 * p2))) / 414720.0
    u4 = p2 * p2 * (4465125.0 + p2 * (-94121676.0 + p2 * (
        349922430.0 + p2 * (-446185740.0 + 185910725.0 * p2)))) / 39813120.0
    sm1 = t * t / (1.0 + sq)  # sqrt(1 + t^2) - 1 without cancellation
    inv = 1.0 / nu
    corr = inv * (u1 + inv * (u2 + inv * (u3 + inv * u4)))
    return (nu - nu * np.log(nu) - 0.5 * np.log(2.0 * math.pi * nu) + nu * (sm1 - t)
            - nu * np.log1p(0.5 * sm1) - 0.5 * np.log(sq) + np.log1p(corr))


def chi(nu: np.ndarray | float, z: np.ndarray) -> np.ndarray:
    """chi(nu, z) = log[I_nu(z) (z/2)^-nu] - z, for nu > -1, z >= 0 (-lgamma(nu+1) at z = 0).

    log[I_nu(z) (z/2)^-nu] = log sum_k q^k / (k! Gamma(nu+k+1)) (q = z^2/4) is smooth in nu
    down to nu = -1 and in q down to 0, so neither the central limit nc -> 0 nor df -> 0 loses
    anything to cancellation. Three branches: the power series where q <= 0.01 (nu + 1) (no
    Bessel call), log ive where ive is a normal double, else the Debye expansion (ive only
    underflows outside the series' range for nu > ~160, where it is accurate to < 1e-12).
    """
    nu, z = np.broadcast_arrays(np.asarray(nu, dtype=np.float64), np.asarray(z, dtype=np.float64))
    small = 0.25 * z * z <= _SERIES_Q * (nu + 1.0)
    out = np.empty(z.shape)
    out[small] = _chi_series(nu[small], z[small])
    big = ~small
    nb, zb = nu[big], z[big]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iv = special.ive(nb, zb)
        val = np.log(iv) - nb * (np.log(zb) - _LOG2)
    bad = ~(iv > _IVE_TINY) | ~np.isfinite(val)
    if bad.any():
        val[bad] = _chi_debye(nb[bad], zb[bad])
    out[big] = val
    return out


def ncx2_logpdf(y: np.ndarray, df: float, nc: float) -> np.ndarray:
    """log density of chi2'(df, nc) at y > 0, vectorised, without under- or overflow.

    Uses the decomposition in the module docstring (agrees with scipy.stats.ncx2.logpdf to
    ~1e-12 relative where scipy is finite; finite where scipy's density underflows).
    nc == 0 is the central chi-squared.
    """
    y = np.asarray(y, dtype=np.float64)
    nu = 0.5 * df - 1.0
    with np.errstate(divide="ignore"):
        base = -(nu + 1.0) * _LOG2 - 0.5 * (y + nc) + nu * np.log(y)
    if nc == 0.0:
        return base - special.gammaln(nu + 1.0)
    z = np.sqrt(nc * y)
    return base + z + chi(nu, z)
