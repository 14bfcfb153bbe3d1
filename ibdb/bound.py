"""The ICML 2023 upper bound on inductive-bias complexity, from task statistics.

Boopathy et al., "Model-agnostic Measure of Generalization Difficulty" (ICML 2023); the formulas
are restated in REFERENCE.md section 3. In bits,

    I <~ (dim_Theta - n D) * [log2 B + 0.5 log2 D + 0.5 log2 C - log2 eps + log2 L_f + log2 W]

for band-limited hypotheses on an m-dimensional data manifold, with M = 2 pi R / delta,
K = (sqrt((m-1)^2 + 4 M^2) - (m-1)) / 2, E = binom(m+K, m) + binom(m+K-1, m) (generalised
binomials: m and K need not be integers), dim_Theta = 2 D C E, L_f = K sqrt(D) / R and
ln W = 0.5 ln(m/6) + [ln 2 + ((m+1)/2) ln pi + ln C - ln Gamma((m+1)/2)] / m + ln R - ln(n) / m.

dim_Theta is astronomically large for real data (~1e30 and beyond), so it and E are carried as
logarithms; the bound itself is returned as a float (inf only past ~1.8e308 bits, with its log10
in the intermediates). It sits beside the IJCAI 2024 estimates as a comparison: it bounds the
inductive bias of a much larger hypothesis space, so it is many orders of magnitude above them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.spatial import cKDTree

from ibdb.errors import EstimateError

__all__ = [
    "STATISTICS_MAX_POINTS",
    "TaskStatistics",
    "bound_bits",
    "class_separation",
    "intrinsic_dimension",
    "statistics_rows",
    "task_statistics",
]

log = logging.getLogger(__name__)

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)

# task_statistics measures the neighbour-based statistics (intrinsic dimension, separation) on at
# most this many training points, a fixed random subset: their cost grows as n^2 (k-d trees do no
# better than brute force in the dimensions of image data), and every run computes them.
STATISTICS_MAX_POINTS = 2000
_SUBSET_SEED = 0


@dataclass(frozen=True)
class TaskStatistics:
    """What the 2023 bound needs to know about a classification task's training set."""

    n: int  # training points
    intrinsic_dim: float  # m: Levina-Bickel MLE pooled over points, k = 5 neighbours
    radius: float  # R: largest data norm
    separation: float  # delta: minimum distance between points of different classes
    n_classes: int  # C
    output_dim: int  # D = classes - 1
    # Points intrinsic_dim and separation were measured on (statistics_rows(n) of the training
    # set; n, radius and the classes use every point). None: statistics stored before the cap,
    # or given by hand, measured on all n.
    subsample_size: int | None = None


# ----------------------------------------------------------------------------- statistics


def _as_points(x: np.ndarray) -> np.ndarray:
    pts = np.asarray(x, dtype=np.float64)
    if pts.ndim < 2 or pts.shape[0] == 0:
        raise EstimateError(
            f"x has shape {pts.shape}; pass one row per training point (n, features), or "
            "(n, ...) arrays such as images, which are flattened."
        )
    pts = pts.reshape(pts.shape[0], -1)
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise EstimateError(
            f"{int(bad.sum())} point(s) of x have non-finite coordinates (first at row "
            f"{int(np.flatnonzero(bad)[0])}); drop or impute them first."
        )
    return pts


def _check_k(k_neighbours: int) -> int:
    if isinstance(k_neighbours, bool) or not isinstance(k_neighbours, int | np.integer) \
            or k_neighbours < 2:
        raise EstimateError(
            f"k_neighbours = {k_neighbours!r}; the Levina-Bickel estimate compares the k-th "
            "neighbour with the nearer ones, so pass an integer >= 2 (the paper uses 5)."
        )
    return int(k_neighbours)


def intrinsic_dimension(x: np.ndarray, *, k_neighbours: int = 5) -> float:
    """Levina-Bickel maximum-likelihood intrinsic dimension, pooled over points.

    m = 1 / mean_{i, j<k} log(T_k(x_i) / T_j(x_i)), with T_j the distance to the j-th nearest
    other point. Pooling before inverting (rather than averaging per-point inverses) is what
    makes it consistent: for a locally uniform density, sum_{j<k} log(T_k/T_j) ~ Gamma(k-1, m).
    Duplicate points are dropped first: a zero distance would make a log ratio infinite.
    """
    k = _check_k(k_neighbours)
    pts = _as_points(x)
    unique = np.unique(pts, axis=0)
    if unique.shape[0] < k + 1:
        raise EstimateError(
            f"only {unique.shape[0]} distinct point(s) remain of {pts.shape[0]} after dropping "
            f"duplicates; k_neighbours = {k} needs at least {k + 1}: pass more points or a "
            "smaller k_neighbours."
        )
    dist, _ = cKDTree(unique).query(unique, k=k + 1)
    near = dist[:, 1:]  # column 0 is the point itself, the only one at distance 0
    mean_log = float(np.mean(np.log(near[:, -1:] / near[:, :-1])))
    if not mean_log > 0.0:
        raise EstimateError(
            f"every point's {k} nearest neighbours are equidistant (mean log ratio "
            f"{mean_log!r}), so the data carry no dimension estimate; pass a larger "
            "k_neighbours or data that are not on a lattice."
        )
    return 1.0 / mean_log


def class_separation(x: np.ndarray, labels: np.ndarray) -> float:
    """delta: the smallest distance between two points with different labels (0 if a point
    appears with two labels). One k-d tree per class, queried with the other classes' points."""
    pts = _as_points(x)
    lab = _as_labels(labels, pts.shape[0])
    classes = np.unique(lab)
    if classes.size < 2:
        raise EstimateError(
            f"labels hold a single class ({classes[0]!r}); class separation needs at least "
            "two classes."
        )
    best = math.inf
    for c in classes[:-1]:  # the pair (last class, c) is seen while c is the tree's class
        inside = lab == c
        gaps, _ = cKDTree(pts[inside]).query(pts[~inside], k=1)
        best = min(best, float(gaps.min()))
    return best


def _as_labels(labels: np.ndarray, n: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise EstimateError(
            f"labels have shape {lab.shape}; pass one class label per point, shape ({n},) "
            "(for one-hot targets, pass their argmax along axis 1)."
        )
    return lab


def statistics_rows(n: int, max_points: int | None = STATISTICS_MAX_POINTS) -> np.ndarray:
    """The training rows :func:`task_statistics` measures m and delta on, in increasing order:
    all ``n`` when ``n <= max_points`` (or ``max_points`` is None), else ``max_points`` of them
    drawn without replacement by a generator with a fixed seed, so that the same data always
    give the same statistics."""
    if max_points is not None and (isinstance(max_points, bool) or max_points < 1):
        raise EstimateError(f"max_points = {max_points!r}; pass a positive number of points, "
                            "or None for all of them.")
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(_SUBSET_SEED).choice(n, size=max_points, replace=False))


def _has_conflicting_duplicate(pts: np.ndarray, lab: np.ndarray) -> bool:
    """Whether some point appears twice with different labels (O(n log n), every point)."""
    # + 0.0 turns -0.0 into 0.0, so that equal points have equal bytes
    rows = np.ascontiguousarray(pts + 0.0)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, point = np.unique(keys, return_inverse=True)
    _, label = np.unique(lab, return_inverse=True)
    pairs = np.unique(np.stack([point.ravel(), label.ravel()]), axis=1)
    return bool(np.unique(pairs[0]).size < pairs.shape[1])


def task_statistics(
    x: np.ndarray, labels: np.ndarray, *, k_neighbours: int = 5,
    max_points: int | None = STATISTICS_MAX_POINTS,
) -> TaskStatistics:
    """n, m, R, delta, C and D = C - 1 of a training set (x: (n, ...) points, labels: (n,)).

    n, R (the largest Euclidean norm of a point, as given: not centred) and C use every point.
    m and delta, whose cost grows as n^2, are measured on :func:`statistics_rows`: at most
    ``max_points`` points (None: all), a fixed random subset (recorded as ``subsample_size``);
    delta is then the minimum over that sample, which can only exceed the minimum over all
    points. A separation of 0 (a point that appears with two labels) is found among all points
    and reported as such; :func:`bound_bits` then refuses it.
    """
    pts = _as_points(x)
    lab = _as_labels(labels, pts.shape[0])
    n_classes = int(np.unique(lab).size)
    rows = statistics_rows(pts.shape[0], max_points)
    sample, sample_labels = pts[rows], lab[rows]
    if len(rows) < pts.shape[0] and _has_conflicting_duplicate(pts, lab):
        separation = 0.0
    elif n_classes > 1 and np.unique(sample_labels).size < 2:
        raise EstimateError(
            f"the {len(rows)} points sampled for the class separation all carry one label "
            f"(the data hold {n_classes} classes); pass a larger max_points."
        )
    else:
        separation = class_separation(sample, sample_labels)
    if separation == 0.0:
        log.warning("two points with different labels coincide: class separation is 0")
    return TaskStatistics(
        n=int(pts.shape[0]),
        intrinsic_dim=intrinsic_dimension(sample, k_neighbours=k_neighbours),
        radius=float(np.linalg.norm(pts, axis=1).max()),
        separation=separation,
        n_classes=n_classes,
        output_dim=n_classes - 1,
        subsample_size=int(len(rows)),
    )


# ----------------------------------------------------------------------------- the bound


def _positive(name: str, value: float, advice: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise EstimateError(f"{name} = {value!r}; it must be finite and > 0 ({advice}).")
    return v


def _validate(stats: TaskStatistics, eps: float, b: float) -> None:
    for name in ("n", "n_classes", "output_dim"):
        value = getattr(stats, name)
        least = 2 if name == "n_classes" else 1
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise EstimateError(f"{name} = {value!r}; it must be an integer >= {least}.")
    _positive("intrinsic_dim", stats.intrinsic_dim, "estimate it with task_statistics")
    _positive("radius", stats.radius, "the largest norm of a data point")
    if stats.separation == 0.0:
        raise EstimateError(
            "separation = 0: two points with different labels coincide, so the maximum "
            "frequency 2 pi R / delta is infinite; drop or relabel the conflicting duplicates."
        )
    _positive("separation", stats.separation, "the minimum distance between classes")
    _positive("eps", eps, "the target error, e.g. 0.01")
    _positive("B", b, "a bound on |f|; 1 for classification")


def _log_binom(top: float, bottom: float) -> float:
    """ln binom(top, bottom) for real top - bottom > -1 and bottom > 0, via the beta function:
    binom(a, b) = 1 / ((a + 1) B(a - b + 1, b + 1)). betaln avoids the cancellation of two
    ~K ln K gammaln terms when K is much larger than m."""
    return -math.log(top + 1.0) - float(special.betaln(top - bottom + 1.0, bottom + 1.0))


def bound_bits(
    stats: TaskStatistics, eps: float, *, B: float = 1.0
) -> tuple[float, dict[str, float | bool | str]]:
    """The 2023 bound in bits, and its intermediate values.

    Returns (bits, info) with info holding M, K, log10_E, dim_theta (inf if > 1.8e308) and
    log10_dim_theta, n_D, L_f, log2_L_f, log2_W, bracket_bits (the bracketed factor),
    log10_bits, vacuous and note. The bound is 0 bits (vacuous True, and the note says why) when
    dim_Theta <= n D (the data pin down every parameter) or the bracket is <= 0 (eps is so
    large that one cell of the parameter grid already reaches it).
    """
    _validate(stats, eps, B)
    m, radius, delta = float(stats.intrinsic_dim), float(stats.radius), float(stats.separation)
    n, c, d = int(stats.n), int(stats.n_classes), int(stats.output_dim)

    big_m = 2.0 * math.pi * radius / delta
    b = m - 1.0
    root = math.hypot(b, 2.0 * big_m)
    # (root - b) / 2 cancels when b >> M; the conjugate form 2 M^2 / (root + b) does not
    k = 2.0 * big_m * big_m / (root + b) if b > 0.0 else 0.5 * (root - b)
    log_e = float(np.logaddexp(_log_binom(m + k, m), _log_binom(m + k - 1.0, m)))
    log_dim = math.log(2.0 * d * c) + log_e
    log_nd = math.log(n) + math.log(d)
    log2_lf = math.log2(k) + 0.5 * math.log2(d) - math.log2(radius)
    ln_w = (
        0.5 * math.log(m / 6.0)
        + (_LN2 + 0.5 * (m + 1.0) * math.log(math.pi) + math.log(c)
           - float(special.gammaln(0.5 * (m + 1.0)))) / m
        + math.log(radius) - math.log(n) / m
    )
    bracket = (math.log2(B) + 0.5 * math.log2(d) + 0.5 * math.log2(c) - math.log2(eps)
               + log2_lf + ln_w / _LN2)
    info: dict[str, float | bool | str] = {
        "M": big_m,
        "K": k,
        "log10_E": log_e / _LN10,
        "dim_theta": math.exp(log_dim) if log_dim < 709.0 else math.inf,
        "log10_dim_theta": log_dim / _LN10,
        "n_D": float(n * d),
        "L_f": k * math.sqrt(d) / radius,
        "log2_L_f": log2_lf,
        "log2_W": ln_w / _LN2,
        "bracket_bits": bracket,
    }
    if log_dim <= log_nd:
        info.update(log10_bits=-math.inf, vacuous=True, note=(
            f"dim_Theta = 10^{log_dim / _LN10:.4g} <= n D = {n * d}: the training data fix "
            "every parameter of the band-limited space, so the bound is 0 bits."))
        return 0.0, info
    if bracket <= 0.0:
        info.update(log10_bits=-math.inf, vacuous=True, note=(
            f"the bracketed factor is {bracket:.4g} bits <= 0 (eps = {eps!r} is reached "
            "without any choice among hypotheses), so the bound is 0 bits."))
        return 0.0, info
    # ln(dim_Theta - n D) without forming dim_Theta, which may overflow
    log_excess = log_dim + math.log1p(-math.exp(log_nd - log_dim))
    log10_bits = (log_excess + math.log(bracket)) / _LN10
    if log_excess < 700.0:
        bits = math.exp(log_excess) * bracket
    else:
        bits = 10.0**log10_bits if log10_bits < 308.0 else math.inf
    info.update(log10_bits=log10_bits, vacuous=False, note="")
    return bits, info
