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

Which points the statistics are measured on matters as much as the formula. The intrinsic
dimension and the separation are properties of a sample, not only of the distribution: with k
fixed, the Levina-Bickel estimate looks at finer scales as the sample grows, and the minimum
distance between classes can only fall as points are added. Measured on each run's training
set they drift with n_train (8x8 digits: m = 6.3, 6.7, 7.7 and delta = 1.66, 1.41, 1.23 at
n = 100, 300, 1000, so the bound grew 2.8e8 -> 1.1e9 -> 9.2e9 bits at eps 0.5). So a run's
statistics (:func:`statistics_for_task`) measure m and delta on one fixed-size, seeded sample of
the task's source (ibdb.data.task carries it as ``TaskData.x_pool_sample``): the same for every
n_train and split of that source (digits: its whole pool of 1797 images, m = 8.11, delta =
1.18, and the bound 2.47e10, 2.42e10, 2.37e10 bits at eps 0.5 for n = 100, 300, 1000, now
falling slightly through the formula's own n). n stays the run's n_train.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ibdb.core.errors import EstimateError

__all__ = [
    "MEASURED_ON_SOURCE",
    "MEASURED_ON_TRAINING",
    "STATISTICS_MAX_POINTS",
    "TaskStatistics",
    "bound_bits",
    "class_separation",
    "intrinsic_dimension",
    "statistics_for_task",
    "statistics_rows",
    "task_statistics",
]

log = logging.getLogger(__name__)

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)

# task_statistics measures the neighbour-based statistics (intrinsic dimension, separation) on at
# most this many points, a fixed random subset: their cost grows as n^2 (brute force, in the
# dimensions of image data), and every run computes them. It is also the
# size of the source sample ibdb.data.task draws for them (statistics_rows of the source's pool), so
# a run's m and delta are those of (at most) this many points, whatever its n_train.
STATISTICS_MAX_POINTS = 2000
_SUBSET_SEED = 0

MEASURED_ON_TRAINING = "training set"
MEASURED_ON_SOURCE = "source sample"


@dataclass(frozen=True)
class TaskStatistics:
    """What the 2023 bound needs to know about a classification task.

    n is the run's number of training points (the formula's n). intrinsic_dim and separation
    are measured on ``subsample_size`` points drawn (statistics_rows, fixed seed) from
    ``pool_size`` points of ``measured_on``: MEASURED_ON_SOURCE ("source sample") for the
    source's own points, the same for every n_train of a source, or MEASURED_ON_TRAINING
    ("training set") for the run's training set, which makes them drift with n. Fields after
    output_dim default to None, which is what statistics stored before they existed mean:
    measured on the training set (all of it, or statistics_rows(n) of it), k = 5.
    """

    n: int  # training points
    intrinsic_dim: float  # m: Levina-Bickel MLE pooled over points (MacKay-Ghahramani), k = 5
    radius: float  # R: largest data norm (every training point and source-sample point)
    separation: float  # delta: minimum distance between points of different classes
    n_classes: int  # C
    output_dim: int  # D = classes - 1
    # Points intrinsic_dim and separation were measured on (statistics_rows of the pool named by
    # measured_on). None: statistics stored before the cap, or given by hand, measured on all n.
    subsample_size: int | None = None
    measured_on: str | None = None  # MEASURED_ON_SOURCE or MEASURED_ON_TRAINING; None: training
    pool_size: int | None = None  # points the sample was drawn from (n for the training set)
    k_neighbours: int | None = None  # the Levina-Bickel k (None: stored before; it was 5)


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
    other point. This is MacKay and Ghahramani's correction of Levina-Bickel: average the
    per-point *inverse* estimates 1/m_i = mean_{j<k} log(T_k/T_j), then invert, rather than
    average the per-point m_i (whose mean is biased upward, since E[1/X] > 1/E[X]). It is
    consistent: for a locally uniform density, sum_{j<k} log(T_k/T_j) ~ Gamma(k-1, rate m).
    k = 5 by default, as in the 2023 paper's code. Duplicate points are dropped first: a zero
    distance would make a log ratio infinite.

    Measured on (2000 points, 20 seeds, random embeddings in R^50): a circle 1.00 +- 0.012,
    a 2-sphere 2.0 +- 0.03, a 2-torus 2.0 +- 0.03, a 5-D Gaussian 5.05 +- 0.05; biased low
    where neighbourhoods touch a boundary or the dimension is high (5-D cube 4.6, 10-D
    Gaussian 9.5). The estimate depends on the sample size, since k neighbours among more points
    are nearer (a finer scale): 8x8 digits give 6.1, 6.5, 7.5, 8.1 on 100, 300, 1000, 1797
    points. Compare only estimates made on samples of one size (task_statistics' source sample).
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
    near = _nearest_distances(unique, k)
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
    appears with two labels). In few dimensions one k-d tree per class, queried with the other
    classes' points; in many, one pass over blocks of the distance matrix.

    This is the sample minimum the paper uses. It can only overestimate the distribution's
    separation, by less on a larger sample, so like the dimension it depends on the sample
    size (8x8 digits: 1.52, 1.36, 1.23, 1.18 on 100, 300, 1000, 1797 points): compare only
    values measured on samples of one size. Where classes approach each other along a surface
    it is close to the true gap (two 3-D slabs 0.3 apart, 2000 points: +2% to +8%); where they
    approach only near a point (two balls) it overestimates more (+14% to +56%).
    """
    pts = _as_points(x)
    lab = _as_labels(labels, pts.shape[0])
    classes = np.unique(lab)
    if classes.size < 2:
        raise EstimateError(
            f"labels hold a single class ({classes[0]!r}); class separation needs at least "
            "two classes."
        )
    if pts.shape[1] > _KD_TREE_MAX_DIM:
        return float(_nearest_distances(pts, 1, labels=lab).min())
    from scipy.spatial import cKDTree

    best = math.inf
    for c in classes[:-1]:  # the pair (last class, c) is seen while c is the tree's class
        inside = lab == c
        gaps, _ = cKDTree(pts[inside]).query(pts[~inside], k=1)
        best = min(best, float(gaps.min()))
    return best


# k-d trees beat brute force only in few dimensions; above this many, distances come from one
# matrix product per block of points (2000 points of 3072 features, 2 cores: m and delta in
# about 3 s instead of 8.4 s).
_KD_TREE_MAX_DIM = 16
_BLOCK_BYTES = 32 * 2**20
_EXTRA_CANDIDATES = 2


def _nearest_distances(x: np.ndarray, k: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Distances from each point of ``x`` (distinct rows, unless ``labels``) to its k nearest
    other points, or with ``labels`` to its k nearest points of another label (inf where there
    are fewer), ascending, (n, k).

    In few dimensions a k-d tree answers (without labels only). Otherwise candidates come from
    ||a||^2 + ||b||^2 - 2 a.b (centred first, to keep the cancellation small), k + 2 per point,
    and their distances are then computed directly from the coordinates as given: the
    distances returned are exact, and so is the choice among candidates unless two distances
    agree to ~1e-13 of the data's squared spread.
    """
    if labels is None and x.shape[1] <= _KD_TREE_MAX_DIM:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(x).query(x, k=k + 1)
        return dist[:, 1:]  # column 0: the point itself, the only one at distance 0
    pts = x - x.mean(axis=0)
    n = pts.shape[0]
    sq = np.einsum("ij,ij->i", pts, pts)
    n_cand = min(n - 1, k + _EXTRA_CANDIDATES)  # n - 1: a row's own entry is never picked
    block = max(1, _BLOCK_BYTES // (8 * max(n, n_cand * pts.shape[1])))
    out = np.empty((n, k))
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        q = pts[rows]
        d2 = sq[rows, None] + sq[None, :] - 2.0 * (q @ pts.T)
        d2[np.arange(len(rows)), rows] = np.inf
        if labels is not None:
            d2[labels[rows, None] == labels[None, :]] = np.inf
        cand = np.argpartition(d2, n_cand - 1, axis=1)[:, :n_cand]
        diff = x[rows, None, :] - x[cand]  # from the coordinates as given, not the centred
        exact = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        exact[np.isinf(np.take_along_axis(d2, cand, axis=1))] = np.inf
        out[rows] = np.sort(exact, axis=1)[:, :k]
    return out


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
    x: np.ndarray, labels: np.ndarray, *, sample: tuple[np.ndarray, np.ndarray] | None = None,
    pool_size: int | None = None, k_neighbours: int = 5,
    max_points: int | None = STATISTICS_MAX_POINTS,
) -> TaskStatistics:
    """n, m, R, delta, C and D = C - 1 of a task (x: (n, ...) training points, labels: (n,)).

    Without ``sample``, m and delta are measured on the training set: on
    :func:`statistics_rows` of it, at most ``max_points`` points (None: all), a fixed random
    subset. They then drift with n (see the module's docstring); runs use ``sample`` instead.

    ``sample``: (points, labels) of the task's source, a fixed-size seeded sample of its pool
    that does not depend on the run's n_train (``TaskData.x_pool_sample``; ``pool_size``: how
    many points it was drawn from, default its length). m and delta are then measured on
    statistics_rows of it (all of it when it holds at most ``max_points``), and
    ``measured_on`` says so. n stays the training set's size, the formula's n.

    m: :func:`intrinsic_dimension` with ``k_neighbours`` (5, the paper's); delta:
    :func:`class_separation`, the minimum over the measured points, which can only exceed the
    minimum over all points. R (the largest Euclidean norm of a point, as given: not centred)
    and C use every training point and every point of ``sample``. A separation of 0 (a point
    that appears with two labels) is looked for among all those points and reported as such;
    :func:`bound_bits` then refuses it.
    """
    pts = _as_points(x)
    lab = _as_labels(labels, pts.shape[0])
    k = _check_k(k_neighbours)
    if sample is None:
        pool, pool_labels, measured_on = pts, lab, MEASURED_ON_TRAINING
        every, every_labels = pts, lab
        pool_size = int(pts.shape[0])
    else:
        pool = _as_points(sample[0])
        pool_labels = _as_labels(sample[1], pool.shape[0])
        if pool.shape[1] != pts.shape[1]:
            raise EstimateError(
                f"the sample's points have {pool.shape[1]} features but the training points "
                f"{pts.shape[1]}; pass a sample of the same task (preprocessed alike).")
        measured_on = MEASURED_ON_SOURCE
        every = np.concatenate([pts, pool])
        every_labels = np.concatenate([lab, pool_labels])
        pool_size = int(pool.shape[0]) if pool_size is None else int(pool_size)
    n_classes = int(np.unique(every_labels).size)
    rows = statistics_rows(pool.shape[0], max_points)
    measured, measured_labels = pool[rows], pool_labels[rows]
    if every.shape[0] > len(rows) and _has_conflicting_duplicate(every, every_labels):
        separation = 0.0
    elif n_classes > 1 and np.unique(measured_labels).size < 2:
        raise EstimateError(
            f"the {len(rows)} points sampled for the class separation all carry one label "
            f"(the data hold {n_classes} classes); pass a larger max_points."
        )
    else:
        separation = class_separation(measured, measured_labels)
    if separation == 0.0:
        log.warning("two points with different labels coincide: class separation is 0")
    return TaskStatistics(
        n=int(pts.shape[0]),
        intrinsic_dim=intrinsic_dimension(measured, k_neighbours=k),
        radius=float(np.linalg.norm(every, axis=1).max()),
        separation=separation,
        n_classes=n_classes,
        output_dim=n_classes - 1,
        subsample_size=int(len(rows)),
        measured_on=measured_on,
        pool_size=pool_size,
        k_neighbours=k,
    )


def statistics_for_task(data: Any, *, k_neighbours: int = 5) -> TaskStatistics:
    """The statistics a run records for the 2023 bound, from its ``ibdb.data.task.TaskData``.

    n, and the training points' norms and classes, come from the training split; m and delta
    from ``data.x_pool_sample`` (a fixed seeded sample of at most STATISTICS_MAX_POINTS of the
    source's points, preprocessed like the splits), so that runs of one source at different
    n_train or split_seed get the same m and delta. A TaskData without that sample (built by
    hand) falls back to the training set, which ``measured_on`` then records.
    """
    labels = np.asarray(data.y_train).argmax(axis=1)
    x_pool = getattr(data, "x_pool_sample", None)
    if x_pool is None:
        return task_statistics(data.x_train, labels, k_neighbours=k_neighbours)
    return task_statistics(data.x_train, labels, sample=(x_pool, data.labels_pool_sample),
                           pool_size=getattr(data, "pool_size", None),
                           k_neighbours=k_neighbours)


# ----------------------------------------------------------------------------- the bound


def _positive(name: str, value: float, advice: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
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
    from scipy import special

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
    from scipy import special

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
