"""The published estimator (Boopathy et al., IJCAI 2024), re-implemented as its code does it.

    df, nc, loc, scale = scipy.stats.ncx2.fit(losses, floc=0)
    nats = -scipy.stats.ncx2.logcdf(eps, df, nc, loc=0, scale=scale)

and, where that log-CDF underflows to -inf, Sankaran's (1963) normal approximation of the
non-central chi-squared CDF, P ~ Phi(z), reporting z^2 / 2 nats. That is the leading term of
-log Phi(z) = z^2/2 + log(-z sqrt(2 pi)) + O(1/z^2) as z -> -inf: the dropped logarithm is
positive once -z > 1/sqrt(2 pi), so z^2/2 is below -log Phi(z). Worse, Sankaran's z tends to
a finite limit as eps -> 0 ((eps/scale)^h -> 0 with h in [1/3, 1/2]), so where the fallback
is used (beyond ~709 nats, by construction) z^2/2 is a few tens of nats while the true value
is hundreds to tens of thousands: an underestimate by orders of magnitude, hardly moving
with eps (measured in tests/stats/test_paper.py against the exact value).

Nothing here is tuned: the fit is scipy's default (Nelder-Mead from scipy's own start), so
this module is slow (seconds per 10^4 losses) and reproduces the published numbers, warts
included. :mod:`ibdb.stats.ncx2fit` is the careful version.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ibdb.core.errors import EstimateError

__all__ = ["PaperFit", "paper_fit", "paper_neg_log_cdf_nats", "sankaran_z"]


@dataclass(frozen=True)
class PaperFit:
    """scipy.stats.ncx2.fit(losses, floc=0) as the paper calls it, and what it cost."""

    df: float
    nc: float
    scale: float
    loglik: float  # sum of scipy's ncx2.logpdf at the fitted parameters (nats)
    seconds: float  # wall time of scipy's fit


def paper_fit(losses: np.ndarray) -> PaperFit:
    """scipy.stats.ncx2.fit(losses, floc=0), exactly as published (no other options).

    Needs at least 3 finite losses, all > 0 and not all equal (EstimateError otherwise);
    scipy's own warnings during the fit are silenced, its result is returned as it is.
    """
    x = np.asarray(losses, dtype=np.float64).ravel()
    if x.size < 3 or not np.all(np.isfinite(x)):
        raise EstimateError(
            f"the paper's fit needs at least 3 finite losses, got {x.size} values of which "
            f"{int((~np.isfinite(x)).sum())} are not finite; drop NaN/inf losses first."
        )
    if (x <= 0).any():
        i = int(np.flatnonzero(x <= 0)[0])
        raise EstimateError(
            f"losses[{i}] = {x[i]!r} is not positive; the paper's ncx2 model (loc = 0) needs "
            "losses > 0. Check that these are test MSEs, or use the 'empirical' method."
        )
    if x.min() == x.max():
        raise EstimateError(
            f"all {x.size} losses equal {x[0]!r}; no ncx2 can be fitted (are the sampled "
            "hypotheses identical?)."
        )
    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        df, nc, _loc, scale = stats.ncx2.fit(x, floc=0)
    seconds = time.perf_counter() - t0
    with np.errstate(all="ignore"):
        loglik = float(np.sum(stats.ncx2.logpdf(x, df, nc, loc=0, scale=scale)))
    # scipy's optimiser starts from scale 1: for losses far from 1 in scale (1e-20, 1e20) it
    # returns a model that does not describe them at all, and reading its CDF would give a
    # confident wrong number. A fitted mean off the sample's by more than a factor of 2 (a
    # bad fit of any sample of more than a few losses) is refused instead.
    fitted_mean = float(scale) * (float(df) + float(nc))
    sample_mean = float((x / x.max()).mean()) * float(x.max())
    if not (math.isfinite(loglik) and math.isfinite(fitted_mean) and fitted_mean > 0
            and abs(math.log(fitted_mean / sample_mean)) <= math.log(2.0)):
        raise EstimateError(
            f"scipy's ncx2.fit(floc=0) did not fit these {x.size} losses: its model's mean is "
            f"{fitted_mean:.4g} against the losses' {sample_mean:.4g} (log-likelihood "
            f"{loglik:.4g}); the published procedure breaks for losses far from 1 in scale. "
            "Use the 'ncx2' method (scale-free), or rescale the losses.")
    return PaperFit(df=float(df), nc=float(nc), scale=float(scale), loglik=loglik,
                    seconds=seconds)


def sankaran_z(y: float, df: float, nc: float) -> float:
    """Sankaran's (1963) normal deviate: P[chi2'(df, nc) <= y] ~ Phi(z).

    h = 1 - (2/3)(k + l)(k + 3l) / (k + 2l)^2, p = (k + 2l) / (k + l)^2, m = (h - 1)(1 - 3h),
    z = ((y / (k + l))^h - (1 + h p (h - 1 - (2 - h) m p / 2))) / (h sqrt(2p) (1 + m p / 2)).
    """
    k, lam = float(df), float(nc)
    h = 1.0 - (2.0 / 3.0) * (k + lam) * (k + 3.0 * lam) / (k + 2.0 * lam) ** 2
    p = (k + 2.0 * lam) / (k + lam) ** 2
    m = (h - 1.0) * (1.0 - 3.0 * h)
    mean_term = 1.0 + h * p * (h - 1.0 - 0.5 * (2.0 - h) * m * p)
    return ((y / (k + lam)) ** h - mean_term) / (h * math.sqrt(2.0 * p) * (1.0 + 0.5 * m * p))


def paper_neg_log_cdf_nats(fit: PaperFit, eps: float) -> tuple[float, str]:
    """(-log P[L <= eps] in nats as the paper computes it, 'scipy-logcdf' | 'sankaran-z2/2').

    scipy's ncx2.logcdf at the fitted parameters; where it is -inf, z^2/2 with z Sankaran's
    deviate at eps/scale (an underestimate deep in the tail: see the module docstring).
    """
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise EstimateError(f"eps must be finite and > 0 (a target test MSE), got {eps!r}.")
    with np.errstate(all="ignore"):
        lp = float(stats.ncx2.logcdf(eps, fit.df, fit.nc, loc=0, scale=fit.scale))
    if lp != -math.inf:
        return 0.0 - lp, "scipy-logcdf"
    z = sankaran_z(eps / fit.scale, fit.df, fit.nc)
    return 0.5 * z * z, "sankaran-z2/2"
