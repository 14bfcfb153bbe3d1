"""Estimators on almost-constant losses (issue 13): bounded time and right or refused, never
minutes of scipy series. Before, a scaled ncx2 fitted to losses agreeing to 9 digits had df ~
1e17, where scipy's ncx2 CDF took ~13 s per value, and the KS test and the bootstrap called it
thousands of times."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from ibdb.errors import EstimateError
from ibdb.estimators import estimate_losses
from ibdb.ncx2cdf import HUGE_DF, ncx2_logcdf, ncx2_logcdf_many


@pytest.mark.parametrize(("df", "nc"), [(1e9, 1e9), (3e10, 1e10)])
def test_near_normal_path_agrees_with_scipy(df, nc):
    """Past HUGE_DF the saddlepoint (left of the mean) and the normal CDF (right of it) replace
    scipy; scipy is still affordable at these df, so it is the oracle (1e-4 bits)."""
    assert df + nc >= HUGE_DF
    mean, sd = df + nc, math.sqrt(2 * (df + 2 * nc))
    xs = mean + sd * np.array([-30.0, -8.0, -2.0, -0.3, 0.0, 0.5, 2.0, 4.0])
    want = stats.ncx2.logcdf(xs, df, nc)
    many = ncx2_logcdf_many(xs, df, nc, 1.0)
    for x, w, m in zip(xs, want, many, strict=True):
        one, _ = ncx2_logcdf(x, df, nc, 1.0)
        assert abs(one - w) / math.log(2) < 1e-4 and abs(m - w) / math.log(2) < 1e-4, (x, w)


@pytest.mark.parametrize("relative", [1e-6, 3e-8])
def test_ncx2_on_almost_constant_losses_is_fast_and_agrees_with_the_sample(relative):
    rng = np.random.default_rng(4)
    losses = 0.5 * (1 + relative * rng.standard_normal(2000))
    eps = 0.5 * (1 - 2.5 * relative)
    t0 = time.perf_counter()
    (row,) = estimate_losses(losses, [eps], "ncx2")
    seconds = time.perf_counter() - t0
    (empirical,) = estimate_losses(losses, [eps], "empirical")
    assert seconds < 20  # (0.2 s here; minutes to hours before)
    # inside the sample the model and the sample fraction agree (Clopper-Pearson 95 %, with a
    # margin of 1 bit for the model's own error)
    assert empirical.lower_bits - 1 <= row.bits <= empirical.upper_bits + 1
    assert math.isfinite(row.lower_bits) and row.lower_bits <= row.bits <= row.upper_bits


@pytest.mark.parametrize("relative", [2e-9, 1e-12, 1e-15])
def test_ncx2_refuses_losses_narrower_than_it_resolves(relative):
    rng = np.random.default_rng(5)
    losses = 0.5 * (1 + relative * rng.standard_normal(1000))
    t0 = time.perf_counter()
    with pytest.raises(EstimateError, match="vary by only .* 'empirical'"):
        estimate_losses(losses, [0.49], "ncx2")
    assert time.perf_counter() - t0 < 5
    (row,) = estimate_losses(losses, [0.49], "empirical")  # still answers, as a lower bound
    assert row.bound == "lower"
