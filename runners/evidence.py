"""The evidence (log marginal likelihood) of a gp space's kernel, and hyperparameters chosen by it.

Model. The k outputs (columns of the one-hot training targets Y, n x k) are independent GPs
with the same prior covariance ``a (K + j I)``: ``K`` the unit-amplitude kernel matrix of the
training points, ``a`` the amplitude, ``j`` the space's jitter. The jitter is relative to the
unit kernel (it is scaled by the amplitude with it): the runner factors ``K + j I`` exactly as
it always has and multiplies the posterior covariance by ``a``, so the posterior mean and the
interpolation error do not depend on ``a``, amplitude 1 is the space as it was, and the
amplitude's maximiser below is exact for any jitter. With ``q = tr(Y^T (K + j I)^-1 Y)`` and
``D = log det(K + j I)``,

    log p(Y | X) = -q / (2 a) - (n k / 2) log a - (k / 2) D - (n k / 2) log(2 pi)      (nats)

which ``a* = q / (n k)`` maximises, leaving the profile ``-(n k / 2) (1 + log(2 pi a*)) -
(k / 2) D``. One Cholesky factor ``L L^T = K + j I`` gives both terms: ``q = |L^-1 Y|^2`` and
``D = 2 sum log diag L``; no eigendecomposition is needed.

Bandwidth. The evidence (profiled over the amplitude when that is chosen too, otherwise at the
fixed amplitude) is evaluated on a grid of ``GRID_POINTS`` bandwidths spaced evenly in log
between ``centre / RANGE_FACTOR`` and ``centre * RANGE_FACTOR`` (``centre`` the median distance
between training points, the range 2^-5 .. 2^5 of it, two points per octave), then refined by a
bounded Brent search (``scipy.optimize.minimize_scalar``) in log bandwidth between the best grid
point's neighbours. The grid makes the search robust to several local maxima and to bandwidths
whose kernel matrix is not positive definite (skipped); the result is rounded to
``SIGNIFICANT`` significant digits, far finer than the search resolves, so that runners built on
different devices for one run (each chunk of a Ray or Slurm run builds its own) agree on it. A
maximum at an end of the range is kept, flagged ``at_bound`` (and logged): the evidence still
rose there, so a wider search, or a fixed bandwidth, may do better. Each evaluation costs one
kernel matrix and one Cholesky factorisation, O(n^3 / 3).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ibdb.core.errors import IbdbError

log = logging.getLogger(__name__)

RANGE_FACTOR = 32.0  # the bandwidth search spans centre / 32 .. centre * 32
GRID_POINTS = 21  # two per octave over that range
LOG_BANDWIDTH_TOLERANCE = 1e-4  # Brent's xatol, in log bandwidth
SIGNIFICANT = 6  # significant digits kept of a chosen bandwidth or amplitude

# (quad, logdet) of one bandwidth, or None when its kernel matrix is not positive definite
Terms = tuple[float, float] | None


def log_evidence(quad: float, logdet: float, n: int, k: int, amplitude: float) -> float:
    """log p(Y | X) in nats at amplitude ``a`` from ``q = tr(Y^T (K + jI)^-1 Y)`` and ``D = log
    det(K + jI)`` of n training points and k outputs (see the module docstring)."""
    if not amplitude > 0:
        raise ValueError(f"amplitude must be positive; got {amplitude!r}")
    return (-0.5 * quad / amplitude - 0.5 * n * k * math.log(amplitude) - 0.5 * k * logdet
            - 0.5 * n * k * math.log(2.0 * math.pi))


def best_amplitude(quad: float, n: int, k: int) -> float:
    """The amplitude that maximises the evidence, ``q / (n k)`` (to ``SIGNIFICANT`` digits)."""
    if not (quad > 0 and math.isfinite(quad)):
        raise IbdbError(f"amplitude 'marginal_likelihood': the targets' quadratic form "
                        f"tr(Y^T K^-1 Y) is {quad!r}, so no amplitude maximises the evidence; "
                        "check the kernel matrix (raise jitter) or give a numeric amplitude.")
    return round_significant(quad / (n * k))


def evidence_terms(gram: torch.Tensor, y: torch.Tensor, jitter: float) -> Terms:
    """``(q, D)`` of the kernel matrix ``gram`` (n x n, overwritten by its Cholesky factor) plus
    ``jitter`` on its diagonal and the targets ``y`` (n x k); None when it is not positive
    definite."""
    chol = gram.mT  # symmetric: the column-major view is the same matrix, for LAPACK
    chol.diagonal().add_(jitter)
    status = torch.empty((), dtype=torch.int32, device=gram.device)
    torch.linalg.cholesky_ex(chol, out=(chol, status))
    if int(status) != 0:
        return None
    return cholesky_terms(chol, y)


def cholesky_terms(chol: torch.Tensor, y: torch.Tensor,
                   half: torch.Tensor | None = None) -> tuple[float, float]:
    """``(q, D)`` from the lower Cholesky factor L of ``K + jI`` (and ``L^-1 Y`` if known)."""
    if half is None:
        half = torch.linalg.solve_triangular(chol, y, upper=False)
    quad = float(half.square().sum())
    logdet = 2.0 * float(chol.diagonal().log().sum())
    return quad, logdet


def profile(terms: tuple[float, float], n: int, k: int, amplitude: float | None) -> float:
    """The evidence at a fixed ``amplitude``, or at the best one when ``amplitude`` is None."""
    quad, logdet = terms
    chosen = quad / (n * k) if amplitude is None else amplitude
    return log_evidence(quad, logdet, n, k, chosen)


@dataclass(frozen=True)
class BandwidthSearch:
    """The evidence-maximising bandwidth and how the search found it."""

    bandwidth: float
    log_evidence: float  # at ``bandwidth``, profiled or at the fixed amplitude (nats)
    search_range: tuple[float, float]
    evaluations: int
    at_bound: bool
    seconds: float


def search_bandwidth(terms_at: Callable[[float], Terms], n: int, k: int, *, centre: float,
                     amplitude: float | None, label: str = "gp") -> BandwidthSearch:
    """Maximise the evidence over the bandwidth (see the module docstring).

    ``terms_at(bandwidth)`` returns ``(q, D)`` or None (not positive definite); ``amplitude`` is
    the fixed amplitude, or None to profile it out in closed form at each bandwidth.
    """
    from scipy.optimize import minimize_scalar

    if not (centre > 0 and math.isfinite(centre)):
        raise IbdbError(f"space {label!r}: bandwidth 'marginal_likelihood' searches around the "
                        f"median distance between training points, which is {centre!r}; give a "
                        "numeric bandwidth instead.")
    started = time.monotonic()
    low, high = math.log(centre / RANGE_FACTOR), math.log(centre * RANGE_FACTOR)
    evaluations = 0
    failures: list[float] = []

    def objective(log_bandwidth: float) -> float:
        nonlocal evaluations
        evaluations += 1
        terms = terms_at(math.exp(log_bandwidth))
        if terms is None:
            failures.append(math.exp(log_bandwidth))
            return math.inf
        value = -profile(terms, n, k, amplitude)
        return value if math.isfinite(value) else math.inf

    grid = np.linspace(low, high, GRID_POINTS)
    values = np.array([objective(float(x)) for x in grid])
    if not np.isfinite(values).any():
        raise IbdbError(
            f"space {label!r}: bandwidth 'marginal_likelihood': the training kernel matrix is "
            f"not positive definite (or its evidence not finite) at any of {GRID_POINTS} "
            f"bandwidths from {math.exp(low):.4g} to {math.exp(high):.4g}. Raise jitter (e.g. "
            "1e-6), check for duplicate training points, or give a numeric bandwidth.")
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, GRID_POINTS - 1)]
    # Brent's parabolic steps need finite values: a failed bandwidth inside the bracket counts
    # as far worse than any grid point rather than as inf
    worst = float(values[np.isfinite(values)].max())
    penalty = worst + 1e6 * (1.0 + abs(worst))
    result = minimize_scalar(
        lambda x: min(objective(x), penalty), bounds=(float(lo), float(hi)), method="bounded",
        options={"xatol": LOG_BANDWIDTH_TOLERANCE})
    if not result.success or not math.isfinite(result.fun):
        raise IbdbError(f"space {label!r}: bandwidth 'marginal_likelihood': the search between "
                        f"{math.exp(lo):.4g} and {math.exp(hi):.4g} failed ({result.message}); "
                        "give a numeric bandwidth instead.")
    log_best, value = (float(result.x), float(result.fun)) if result.fun <= values[best] else (
        float(grid[best]), float(values[best]))
    at_bound = min(log_best - low, high - log_best) <= 2 * LOG_BANDWIDTH_TOLERANCE
    bandwidth = round_significant(math.exp(log_best))
    if at_bound:
        log.warning("space %r: the evidence is largest at bandwidth %.4g, an end of the search "
                    "range [%.4g, %.4g]", label, bandwidth, math.exp(low), math.exp(high))
    if failures:
        log.info("space %r: %d bandwidths of the evidence search had a kernel matrix that is "
                 "not positive definite (e.g. %.4g); skipped", label, len(failures), failures[0])
    return BandwidthSearch(bandwidth=bandwidth, log_evidence=-value,
                           search_range=(math.exp(low), math.exp(high)),
                           evaluations=evaluations, at_bound=at_bound,
                           seconds=time.monotonic() - started)


def round_significant(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits - 1}e}")
