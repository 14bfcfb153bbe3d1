"""Tests of the ICML 2023 bound and the task statistics it reads (ibdb.stats.bound).

Oracles: synthetic data of known intrinsic dimension, brute-force numpy distances, the formula
of REFERENCE.md section 3 evaluated directly in mpmath at 50 digits, and the paper's published
figures for MNIST, CIFAR-10 and ImageNet from the statistics that its code states.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import mpmath as mp
import numpy as np
import pytest

from ibdb.core.errors import EstimateError
from ibdb.stats.bound import (
    STATISTICS_MAX_POINTS,
    TaskStatistics,
    bound_bits,
    class_separation,
    intrinsic_dimension,
    statistics_rows,
    task_statistics,
)

# The paper's statistics (its code's values for n, R, m, delta; C = 10 or 1000) and figures.
MNIST = TaskStatistics(n=60000, intrinsic_dim=14.0, radius=17.179045827183984,
                       separation=2.3987084824335305, n_classes=10, output_dim=9)
CIFAR10 = TaskStatistics(n=50000, intrinsic_dim=27.0, radius=54.9156786783691,
                         separation=2.7506414616587023, n_classes=10, output_dim=9)
IMAGENET = TaskStatistics(n=1280901, intrinsic_dim=48.0, radius=943.5923, separation=65.0,
                          n_classes=1000, output_dim=999)


def _embedded_cube(dim: int, n: int, seed: int) -> np.ndarray:
    """n points uniform on a unit cube spanning a random dim-dimensional subspace of R^20."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(20, dim)))
    return rng.uniform(size=(n, dim)) @ basis.T + rng.normal(size=20)


# ------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("dim", [2, 5])
def test_intrinsic_dimension_of_embedded_cubes(dim):
    # tolerance +-15%: with k = 5 and n = 2000 the pooled estimate measures -3% (2-D) and
    # -9% (5-D, where more neighbourhoods touch the cube's faces) over 5 seeds
    x = _embedded_cube(dim, 2000, seed=dim)
    assert intrinsic_dimension(x) == pytest.approx(dim, rel=0.15)


def test_intrinsic_dimension_matches_brute_force_formula():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 4))
    k = 5
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    near = np.sort(dist, axis=1)[:, 1:k + 1]  # drop the zero self-distance
    expected = 1.0 / np.mean(np.log(near[:, [k - 1]] / near[:, : k - 1]))
    assert intrinsic_dimension(x, k_neighbours=k) == pytest.approx(expected, rel=1e-12)


def test_duplicates_are_dropped_before_estimating_dimension():
    x = _embedded_cube(3, 400, seed=7)
    doubled = np.concatenate([x, x[:150]])
    assert intrinsic_dimension(doubled) == pytest.approx(intrinsic_dimension(x), rel=1e-12)
    with pytest.raises(EstimateError, match="only 4 distinct point"):
        intrinsic_dimension(np.repeat(np.eye(4), 10, axis=0))
    with pytest.raises(EstimateError, match="k_neighbours = 1"):
        intrinsic_dimension(x, k_neighbours=1)


def test_separation_and_radius_match_brute_force():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(90, 6)) + 0.3
    labels = rng.integers(0, 4, size=90)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    different = labels[:, None] != labels[None, :]
    stats = task_statistics(x, labels)
    assert stats.separation == pytest.approx(dist[different].min(), rel=1e-12)
    assert class_separation(x, labels) == stats.separation
    assert stats.radius == pytest.approx(np.sqrt((x**2).sum(1)).max(), rel=1e-12)
    assert (stats.n, stats.n_classes, stats.output_dim) == (90, 4, 3)


def test_task_statistics_flattens_images_and_validates():
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(40, 3, 3))
    labels = np.arange(40) % 2
    assert task_statistics(images, labels) == task_statistics(images.reshape(40, 9), labels)
    with pytest.raises(EstimateError, match="single class"):
        task_statistics(images, np.zeros(40, dtype=int))
    with pytest.raises(EstimateError, match=r"labels have shape \(40, 2\)"):
        task_statistics(images, np.eye(2)[labels])
    bad = images.copy()
    bad[5, 0, 0] = np.nan
    with pytest.raises(EstimateError, match="row 5"):
        task_statistics(bad, labels)


def test_conflicting_duplicate_gives_zero_separation_and_refused_bound(caplog):
    x = _embedded_cube(2, 50, seed=1)
    x[1] = x[0]
    labels = np.arange(50) % 3  # points 0 and 1 carry different labels
    with caplog.at_level(logging.WARNING, logger="ibdb.stats.bound"):
        stats = task_statistics(x, labels)
    assert stats.separation == 0.0
    assert "separation is 0" in caplog.text
    with pytest.raises(EstimateError, match="separation = 0"):
        bound_bits(stats, 0.01)


# ------------------------------------------------------------------------------- the bound


def _mpmath_bound(stats: TaskStatistics, eps: float, b: float = 1.0) -> mp.mpf:
    """REFERENCE.md section 3 evaluated literally, at 50 digits."""
    with mp.workdps(50):
        m, r, delta = mp.mpf(stats.intrinsic_dim), mp.mpf(stats.radius), mp.mpf(stats.separation)
        n, c, d = mp.mpf(stats.n), mp.mpf(stats.n_classes), mp.mpf(stats.output_dim)
        big_m = 2 * mp.pi * r / delta
        k = (mp.sqrt((m - 1) ** 2 + 4 * big_m**2) - (m - 1)) / 2
        e = mp.binomial(m + k, m) + mp.binomial(m + k - 1, m)
        dim_theta = 2 * d * c * e
        lf = k * mp.sqrt(d) / r
        ln_w = (mp.log(m / 6) / 2
                + (mp.log(2) + (m + 1) / 2 * mp.log(mp.pi) + mp.log(c) - mp.loggamma((m + 1) / 2))
                / m + mp.log(r) - mp.log(n) / m)
        bracket = (mp.log(b, 2) + mp.log(d, 2) / 2 + mp.log(c, 2) / 2 - mp.log(eps, 2)
                   + mp.log(lf, 2) + ln_w / mp.log(2))
        return (dim_theta - n * d) * bracket


@pytest.mark.parametrize(
    ("stats", "eps"),
    [
        (MNIST, 1e-3),
        (IMAGENET, 0.1),
        # non-integer m below and above 1, a large K (delta << R), D != C - 1, B != 1
        (TaskStatistics(n=1234, intrinsic_dim=7.37, radius=3.3, separation=0.021, n_classes=3,
                        output_dim=2), 0.05),
        (TaskStatistics(n=10, intrinsic_dim=0.6, radius=1.0, separation=1e-3, n_classes=2,
                        output_dim=1), 0.2),
        (TaskStatistics(n=500, intrinsic_dim=31.5, radius=20.0, separation=0.5, n_classes=5,
                        output_dim=3), 1e-4),
    ],
)
def test_bound_matches_mpmath_evaluation(stats, eps):
    bits, info = bound_bits(stats, eps, B=1.0 if stats.n != 500 else 2.5)
    ref = _mpmath_bound(stats, eps, 1.0 if stats.n != 500 else 2.5)
    assert bits == pytest.approx(float(ref), rel=1e-9)
    assert info["log10_bits"] == pytest.approx(float(mp.log10(ref)), rel=1e-12)
    assert not info["vacuous"]


@pytest.mark.parametrize(
    ("stats", "eps", "published"),
    [(MNIST, 1e-3, 1.5e16), (CIFAR10, 1e-2, 3.4e32), (IMAGENET, 0.1, 3.6e41)],
)
def test_reproduces_the_papers_figures(stats, eps, published):
    # REFERENCE.md section 3 quotes 2 significant figures; we measure 0.99, 1.011 and 0.995
    bits, _ = bound_bits(stats, eps)
    assert bits == pytest.approx(published, rel=0.04)


def test_huge_dimension_stays_in_log_space():
    stats = dataclasses.replace(IMAGENET, intrinsic_dim=400.0, separation=0.01)
    bits, info = bound_bits(stats, 0.1)
    assert info["log10_dim_theta"] > 308 and info["dim_theta"] == math.inf
    assert bits == math.inf and math.isfinite(info["log10_bits"]) and info["log10_bits"] > 308
    ref = _mpmath_bound(stats, 0.1)
    assert info["log10_bits"] == pytest.approx(float(mp.log10(ref)), rel=1e-12)


def test_more_bits_for_smaller_eps_and_more_classes():
    eps = np.geomspace(0.5, 1e-8, 25)
    bits = np.array([bound_bits(MNIST, e)[0] for e in eps])
    assert np.all(np.diff(bits) > 0)
    fewer = dataclasses.replace(MNIST, n_classes=5, output_dim=4)
    assert bound_bits(fewer, 1e-3)[0] < bound_bits(MNIST, 1e-3)[0]


def test_zero_bits_when_the_data_fix_every_parameter():
    # m = 1: K = M = 2 pi, E = (1 + K) + K ~ 13.6, dim_Theta = 2 D C E ~ 54 <= n D = 100
    stats = TaskStatistics(n=100, intrinsic_dim=1.0, radius=1.0, separation=1.0, n_classes=2,
                           output_dim=1)
    bits, info = bound_bits(stats, 0.01)
    assert bits == 0.0 and info["vacuous"] is True
    assert "<= n D = 100" in info["note"]
    assert float(info["dim_theta"]) == pytest.approx(float(2 * 2 * (
        mp.binomial(1 + info["K"], 1) + mp.binomial(info["K"], 1))), rel=1e-12)
    # and when eps is so large that the bracket is not positive
    bits, info = bound_bits(MNIST, 1e12)
    assert bits == 0.0 and info["vacuous"] is True and info["bracket_bits"] <= 0


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("intrinsic_dim", 0.0, "intrinsic_dim = 0.0"),
        ("radius", math.nan, "radius = nan"),
        ("separation", -1.0, "separation = -1.0"),
        ("n_classes", 1, "n_classes = 1"),
        ("n", 0, "n = 0"),
        ("output_dim", 2.5, "output_dim = 2.5"),
    ],
)
def test_bound_rejects_bad_statistics(field, value, fragment):
    with pytest.raises(EstimateError, match=fragment):
        bound_bits(dataclasses.replace(MNIST, **{field: value}), 0.01)


def test_bound_rejects_bad_eps_and_b():
    with pytest.raises(EstimateError, match="eps = 0"):
        bound_bits(MNIST, 0)
    with pytest.raises(EstimateError, match="B = -1"):
        bound_bits(MNIST, 0.01, B=-1)


def test_digits_order_of_magnitude():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    for n in (300, 1000):
        stats = task_statistics(x[:n], y[:n])
        assert 4.0 < stats.intrinsic_dim < 12.0  # 64 pixels, far fewer degrees of freedom
        assert stats.output_dim == 9 and 0 < stats.separation < stats.radius <= 8.0
        for eps in (0.1, 0.01):
            bits, info = bound_bits(stats, eps)
            print(f"digits n={n} eps={eps}: {bits:.4g} bits, m={stats.intrinsic_dim:.3f}, "
                  f"R={stats.radius:.3f}, delta={stats.separation:.3f}, M={info['M']:.3f}, "
                  f"K={info['K']:.3f}, dim_Theta=1e{info['log10_dim_theta']:.3f}")
            assert math.isfinite(bits) and bits > 0
            # measured 1.7e9 to 1.2e10: far below MNIST's 1.5e16 (8x8 images, fewer points)
            assert 1e7 < bits < 1e13


# ------------------------------------------------------------------------ the statistics' sample


def test_statistics_rows_are_a_fixed_sorted_sample():
    assert np.array_equal(statistics_rows(50, 100), np.arange(50))
    rows = statistics_rows(5000)
    assert len(rows) == STATISTICS_MAX_POINTS == 2000
    assert np.array_equal(rows, np.unique(rows)) and rows[0] >= 0 and rows[-1] < 5000
    assert np.array_equal(rows, statistics_rows(5000))  # the same data give the same sample
    assert np.array_equal(statistics_rows(5000, None), np.arange(5000))
    with pytest.raises(EstimateError, match="max_points = 0"):
        statistics_rows(10, 0)


@pytest.mark.parametrize("max_points", [120, None])
def test_large_data_are_measured_on_the_stated_sample(max_points):
    # 2500 points: above the default cap of 2000, so both the default and a small cap sample
    n = 2500
    x = _embedded_cube(3, n, seed=4)
    labels = np.random.default_rng(5).integers(0, 4, size=n)
    kwargs = {} if max_points is None else {"max_points": max_points}
    rows = statistics_rows(n, **kwargs)
    far = np.setdiff1d(np.arange(n), rows)[0]
    x[far] *= 10.0  # the largest norm belongs to a point outside the sample
    stats = task_statistics(x, labels, **kwargs)
    cap = max_points or STATISTICS_MAX_POINTS
    assert len(rows) == cap < n
    assert stats.subsample_size == cap
    # m and delta are those of the sample ...
    assert stats.intrinsic_dim == intrinsic_dimension(x[rows])
    assert stats.separation == class_separation(x[rows], labels[rows])
    # ... while n, R and the classes are those of every point
    assert stats.n == n
    assert stats.radius == pytest.approx(np.linalg.norm(x[far]), rel=1e-12)
    assert stats.radius > np.linalg.norm(x[rows], axis=1).max()
    assert (stats.n_classes, stats.output_dim) == (4, 3)
    # the bound reads the full n
    assert bound_bits(stats, 0.05)[1]["n_D"] == n * 3


def test_small_data_or_no_cap_are_measured_on_every_point():
    x = _embedded_cube(2, 300, seed=8)
    labels = np.arange(300) % 3
    for stats in (task_statistics(x, labels), task_statistics(x, labels, max_points=None),
                  task_statistics(x, labels, max_points=300)):
        assert stats.subsample_size == 300
        assert stats.intrinsic_dim == intrinsic_dimension(x)
        assert stats.separation == class_separation(x, labels)


def test_conflicting_duplicate_outside_the_sample_still_gives_zero_separation():
    n = 400
    x = _embedded_cube(2, n, seed=9)
    labels = np.arange(n) % 2
    rows = statistics_rows(n, 100)
    outside = np.setdiff1d(np.arange(n), rows)
    a, b = outside[0], outside[1]
    x[b] = x[a]
    labels[b] = 1 - labels[a]
    assert task_statistics(x, labels, max_points=100).separation == 0.0
    # without the conflict the sample minimum is positive
    labels[b] = labels[a]
    assert task_statistics(x, labels, max_points=100).separation > 0.0


def test_a_one_class_sample_is_a_clear_error():
    labels = np.zeros(300, dtype=int)
    rows = statistics_rows(300, 50)
    rare = np.setdiff1d(np.arange(300), rows)[0]
    labels[rare] = 1  # the only point of class 1 is not in the sample
    with pytest.raises(EstimateError, match="all carry one label"):
        task_statistics(_embedded_cube(2, 300, seed=3), labels, max_points=50)


def test_statistics_stored_before_the_sample_existed_still_load():
    stored = {k: v for k, v in dataclasses.asdict(MNIST).items() if k != "subsample_size"}
    stats = TaskStatistics(**stored)
    assert stats.subsample_size is None
    assert bound_bits(stats, 1e-3)[0] == bound_bits(MNIST, 1e-3)[0]
