"""Maximum-likelihood fit of the paper's loss model: L ~ scale * chi2'(df, nc), location 0.

Boopathy et al. (IJCAI 2024) estimate inductive bias by fitting this three-parameter family to
sampled test losses and reading -log CDF(eps). ``scipy.stats.ncx2.fit(data, floc=0)`` does the
same, but takes seconds for 10^4 values (Nelder-Mead over scipy's per-element Boost density)
and can stop short of the maximum. Here: a moment-matching start, a vectorised log-density
through the exponentially scaled Bessel function, and L-BFGS-B over decoupled parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from ibdb.errors import EstimateError
from ibdb.genchi2 import GenChi2

__all__ = ["MIN_LOSSES", "Ncx2Fit", "fit_scaled_ncx2", "ncx2_logpdf"]

MIN_LOSSES = 10
_LOG2 = math.log(2.0)
# rho = nc / (df + nc) < 1 keeps df > 0
_RHO_MAX = 1.0 - 1e-9
_RHO_START_MIN, _RHO_START_MAX = 0.05, 0.995
_RHO_GRID = (0.05, 0.25, 0.5, 0.75, 0.9, 0.97, 0.995)
# above twice this many losses, a quantile subsample is fitted first (see fit_scaled_ncx2)
_SUBSAMPLE = 2000
# scipy's ncx2.logcdf is trusted down to this many nats (~1000 bits); deeper it first loses
# accuracy and then returns -inf, and the saddlepoint takes over.
_SCIPY_LOGCDF_FLOOR = -700.0


def ncx2_logpdf(y: np.ndarray, df: float, nc: float) -> np.ndarray:
    """log density of chi2'(df, nc) at y > 0, vectorised.

    f(y) = 1/2 exp(-(y + nc)/2) (y/nc)^(nu/2) I_nu(sqrt(nc y)),  nu = df/2 - 1,
    evaluated as log ive(nu, z) + z so the Bessel factor never overflows (agrees with
    scipy.stats.ncx2.logpdf to ~1e-13 relative, several times faster). Entries where ive
    underflows (large nu, small z) are recomputed by scipy; nc == 0 is the central chi-squared.
    """
    y = np.asarray(y, dtype=np.float64)
    if nc == 0.0:
        return stats.chi2.logpdf(y, df)
    nu = 0.5 * df - 1.0
    z = np.sqrt(nc * y)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = -_LOG2 - 0.5 * (y + nc) + 0.5 * nu * np.log(y / nc) + np.log(special.ive(nu, z)) + z
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = stats.ncx2.logpdf(y[bad], df, nc)
    return out


@dataclass(frozen=True)
class Ncx2Fit:
    """A fitted L ~ scale * chi2'(df, nc) (location 0) and how the fit went."""

    df: float
    nc: float
    scale: float
    loglik: float  # total log-likelihood of the losses (nats)
    converged: bool
    n_iter: int
    start: str  # 'moments', 'moments-clamped' or 'moments+grid' (see fit_scaled_ncx2)
    message: str
    n: int = 0  # number of losses fitted

    def logcdf_with_method(self, x: float) -> tuple[float, str]:
        """(natural log of P[L <= x], 'scipy' or 'saddlepoint').

        scipy.stats.ncx2.logcdf where it is finite and above -700 nats (it is reliable there);
        beyond, where it underflows to -inf or loses accuracy, the log-space Lugannani-Rice
        saddlepoint of :class:`~ibdb.genchi2.GenChi2` with this one component. For df < 1
        that saddlepoint's deep-tail error grows (to ~0.6 bits at df = 0.3), still a small
        fraction of the >= 1000 bits at which it is used.
        """
        x = float(x)
        if math.isnan(x):
            raise EstimateError("x is NaN; pass a finite loss value.")
        y = x / self.scale
        with np.errstate(all="ignore"):
            if self.nc == 0.0:
                lp = float(stats.chi2.logcdf(y, self.df))
            else:
                lp = float(stats.ncx2.logcdf(y, self.df, self.nc))
        if math.isfinite(lp) and lp > _SCIPY_LOGCDF_FLOOR:
            return min(lp, 0.0), "scipy"
        if x >= math.inf:
            return 0.0, "scipy"
        dist = GenChi2.from_arrays([self.scale], [self.df], [self.nc])
        return dist.logcdf(x), "saddlepoint"

    def logcdf(self, x: float) -> float:
        """Natural log of P[L <= x] under the fitted model."""
        return self.logcdf_with_method(x)[0]

    def as_params(self) -> dict[str, float | int | str]:
        """The fitted parameters as plain, JSON-able Python values."""
        return {
            "df": float(self.df),
            "nc": float(self.nc),
            "scale": float(self.scale),
            "loglik": float(self.loglik),
            "n_iter": int(self.n_iter),
            "start": self.start,
        }


def _validate(losses: np.ndarray) -> np.ndarray:
    x = np.asarray(losses, dtype=np.float64).ravel()
    n_bad = int((~np.isfinite(x)).sum())
    if n_bad:
        raise EstimateError(
            f"losses contain {n_bad} non-finite value(s) (NaN or inf) among {x.size}; drop them "
            "first (estimate_losses does this and counts them in its diagnostics)."
        )
    if x.size < MIN_LOSSES:
        raise EstimateError(
            f"the ncx2 fit needs at least {MIN_LOSSES} finite losses, got {x.size}; sample more "
            "hypotheses or use the 'empirical' method."
        )
    if (x <= 0).any():
        i = int(np.flatnonzero(x <= 0)[0])
        raise EstimateError(
            f"losses[{i}] = {x[i]!r} is not positive ({int((x <= 0).sum())} of {x.size} are "
            "<= 0); the scaled ncx2 model with location 0 needs losses > 0. Check that these "
            "are test MSEs, or use the 'empirical' method."
        )
    if x.min() == x.max():
        raise EstimateError(
            f"all {x.size} losses equal {x[0]!r}: the distribution is degenerate and no ncx2 "
            "can be fitted; check the sampler (are the hypotheses identical?)."
        )
    return x


def _moment_start(x: np.ndarray) -> tuple[float, float, float, bool]:
    """(mean, kappa, rho, exact) of scale * chi2'(df, nc) matching three sample moments.

    With mean = s (df + nc), var = 2 s^2 (df + 2 nc), k3 = 8 s^3 (df + 3 nc), and the fit's
    parameters kappa = 2 mean^2 / var = (df + nc) / (1 + rho), rho = nc / (df + nc), the
    skewness is 2 sqrt(2) (1 + 2 rho) / ((1 + rho)^2 sqrt(kappa)). So r = k3 mean / (2 var^2)
    must lie in (3/4, 1], and r (1 + rho)^2 = 1 + 2 rho gives rho = (q + sqrt q) / r with
    q = 1 - r (the other root is negative). A sample r outside that range (a skewness the
    family cannot reach) is clamped to the nearest end, and exact is False.
    """
    m = float(x.mean())
    c = x - m
    v = float(np.mean(c * c))
    k3 = float(np.mean(c * c * c))
    kappa = 2.0 * m * m / v
    r = k3 * m / (2.0 * v * v)
    if r > 1.0:
        return m, kappa, 0.0, False
    if r <= 0.75:
        return m, kappa, _RHO_START_MAX, False
    q = 1.0 - r
    return m, kappa, min((q + math.sqrt(q)) / r, _RHO_START_MAX), True


def _unpack(theta: np.ndarray) -> tuple[float, float, float]:
    """(df, nc, scale) from theta = (log mean, log kappa, rho)."""
    mean, kappa, rho = math.exp(theta[0]), math.exp(theta[1]), float(theta[2])
    total = kappa * (1.0 + rho)  # df + nc
    return (1.0 - rho) * total, rho * total, mean / total


def _mean_nll(data: np.ndarray) -> Callable[[np.ndarray], float]:
    """theta -> mean negative log-likelihood of data."""

    def nll(theta: np.ndarray) -> float:
        df, nc, sc = _unpack(theta)
        total = float(ncx2_logpdf(data / sc, df, nc).sum()) - data.size * math.log(sc)
        if not math.isfinite(total):  # parameters far off: a large value steers the search back
            return 1e10
        return -total / data.size

    return nll


def fit_scaled_ncx2(losses: np.ndarray) -> Ncx2Fit:
    """Maximum-likelihood (df, nc, scale) of L ~ scale * chi2'(df, nc), location 0.

    Needs >= 10 losses, all finite and > 0, not all equal (EstimateError otherwise).
    """
    x = _validate(losses)
    n = x.size
    # Losses are divided by their mean so that parameters and objective are O(1) whatever the
    # units; the scale and log-likelihood are converted back at the end.
    xm = float(x.mean())
    y = x / xm

    # Parameters: the model's mean, kappa (twice its inverse squared CV) and rho. The first two
    # are pinned by the first two moments and rho by the shape, so the axes are nearly
    # uncoupled, and rho = 0 (the central chi-squared, a common MLE) is a plain bound. But
    # rho = 0 is also a stationary point (the score for nc at nc = 0 is linear in y, which the
    # scale absorbs), so the search never starts there: the moment start is floored at
    # _RHO_START_MIN and compared with a coarse grid of rho (7 density evaluations).
    mean0, kappa0, rho_m, exact = _moment_start(y)
    start = "moments" if exact else "moments-clamped"
    # Large samples are first fitted on an evenly spaced subsample of the sorted losses (a
    # deterministic, quantile-preserving thinning), whose optimum starts the full fit a few
    # iterations from its own: density evaluations are the whole cost.
    stages = [y]
    if n > 2 * _SUBSAMPLE:
        stages.insert(0, np.sort(y)[np.linspace(0, n - 1, _SUBSAMPLE).round().astype(int)])
    theta = np.array([math.log(mean0), math.log(kappa0), max(rho_m, _RHO_START_MIN)])
    nll0 = _mean_nll(stages[0])
    f0 = nll0(theta)
    for rho in _RHO_GRID:
        cand = np.array([theta[0], theta[1], rho])
        fc = nll0(cand)
        if fc < f0:
            theta, f0, start = cand, fc, "moments+grid"
    bounds = [(theta[0] - 20.0, theta[0] + 20.0), (-30.0, 40.0), (0.0, _RHO_MAX)]
    n_iter, converged, message = 0, False, ""
    for data in stages:
        nll = _mean_nll(data)
        f_start = nll(theta)
        # L-BFGS-B: the objective is smooth, and a finite-difference gradient costs 3 density
        # evaluations, several times fewer per unit of progress than Nelder-Mead at this
        # precision; it also takes the bound rho >= 0 natively.
        res = optimize.minimize(
            nll, theta, method="L-BFGS-B", bounds=bounds,
            options={"ftol": 1e-11, "gtol": 1e-8, "maxiter": 1000},
        )
        n_iter += int(res.nit)
        converged, message = bool(res.success), str(res.message)
        if float(res.fun) <= f_start:  # never end a stage worse than it started
            theta = res.x
    best = _mean_nll(y)(theta)
    df, nc, sc = _unpack(theta)
    return Ncx2Fit(
        df=df, nc=nc, scale=sc * xm, loglik=-best * n - n * math.log(xm), converged=converged,
        n_iter=n_iter, start=start, message=message, n=n,
    )
