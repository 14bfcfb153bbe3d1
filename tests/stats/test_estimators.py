"""Tests of the estimator registry and its estimate rows (ibdb.stats.estimators)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from ibdb.core.errors import EstimateError
from ibdb.core.estimate import Estimate
from ibdb.core.methods import METHODS
from ibdb.stats.estimators import estimate_exact, estimate_losses
from ibdb.stats.genchi2 import GenChi2

SAMPLE_METHODS = tuple(m.name for m in METHODS.reading("losses"))


@pytest.fixture(scope="module")
def losses() -> np.ndarray:
    rng = np.random.default_rng(7)
    return stats.ncx2.rvs(6.0, 4.0, size=500, random_state=rng) * 0.01


def _bits(p: float) -> float:
    return -math.log2(p)


def test_method_registry():
    assert set(SAMPLE_METHODS) == {"ncx2", "empirical", "paper"}
    assert METHODS.names() == ("exact", "ncx2", "paper", "empirical", "splitting", "bound")
    assert [m.name for m in METHODS.defaults()] == ["exact", "ncx2", "empirical", "splitting",
                                                    "bound"]


def test_empirical_matches_clopper_pearson(losses):
    eps = [0.03, 0.06, 0.1, 0.2]
    rows = estimate_losses(losses, eps, "empirical")
    assert [r.eps for r in rows] == eps
    for row in rows:
        k = int(np.sum(losses <= row.eps))
        ci = stats.binomtest(k, losses.size).proportion_ci(confidence_level=0.95, method="exact")
        assert 0 < k < losses.size
        assert row.bound == "point"
        assert row.n == losses.size
        assert row.diagnostics["k_below"] == k
        assert row.bits == pytest.approx(_bits(k / losses.size), rel=1e-12)
        # more probability means fewer bits: the upper P limit gives the lower bits
        assert row.lower_bits == pytest.approx(_bits(ci.high), rel=1e-9)
        assert row.upper_bits == pytest.approx(_bits(ci.low), rel=1e-9)
        assert row.lower_bits < row.bits < row.upper_bits


def test_empirical_confidence_level_is_used(losses):
    row90 = estimate_losses(losses, [0.06], "empirical", confidence=0.9)[0]
    k = row90.diagnostics["k_below"]
    ci = stats.binomtest(k, losses.size).proportion_ci(confidence_level=0.9, method="exact")
    assert row90.lower_bits == pytest.approx(_bits(ci.high), rel=1e-9)
    with pytest.raises(EstimateError, match="confidence"):
        estimate_losses(losses, [0.06], "empirical", confidence=1.0)


def test_empirical_with_no_loss_below_eps_is_a_lower_bound(losses):
    eps = float(losses.min()) / 2
    (row,) = estimate_losses(losses, [eps], "empirical")
    # a one-sided 95 % limit: the two-sided 90 % interval's upper end (scipy's exact binomial
    # interval as the oracle), not the two-sided 95 % one's (a one-sided 97.5 % limit)
    ci = stats.binomtest(0, losses.size).proportion_ci(confidence_level=0.90, method="exact")
    assert row.bound == "lower"
    assert row.diagnostics["k_below"] == 0
    assert row.bits == pytest.approx(_bits(ci.high), rel=1e-9)
    assert row.diagnostics["interval"] == "clopper-pearson, one-sided"
    # and P[no sample <= eps] = (1 - p_hi)^n is exactly 5 %
    assert (1 - 2.0 ** -row.bits) ** losses.size == pytest.approx(0.05, rel=1e-9)
    assert row.lower_bits == row.bits
    assert row.upper_bits is None
    assert "lower bound" in row.diagnostics["note"]


def test_empirical_counts_ties_as_below():
    x = np.array([0.1, 0.2, 0.2, 0.3])
    (row,) = estimate_losses(x, [0.2], "empirical")
    assert row.diagnostics["k_below"] == 3
    (row,) = estimate_losses(x, [1.0], "empirical")
    assert row.bits == 0.0 and row.lower_bits == 0.0


def test_nonfinite_losses_are_excluded_and_counted(losses):
    dirty = np.r_[losses, np.nan, np.inf, -np.inf]
    for method in SAMPLE_METHODS:
        (row,) = estimate_losses(dirty, [0.06], method)
        (clean,) = estimate_losses(losses, [0.06], method)
        assert row.diagnostics["n_excluded_nonfinite"] == 3
        assert clean.diagnostics["n_excluded_nonfinite"] == 0
        assert row.n == losses.size
        assert row.bits == pytest.approx(clean.bits, rel=1e-12)


@pytest.mark.parametrize("bad_eps", [0.0, -0.1, math.nan, math.inf])
def test_bad_eps_raises(losses, bad_eps):
    for method in SAMPLE_METHODS:
        with pytest.raises(EstimateError, match="eps must be finite and > 0"):
            estimate_losses(losses, [0.05, bad_eps], method)
    with pytest.raises(EstimateError, match="eps"):
        estimate_exact(GenChi2.from_arrays([1.0], 2.0), [bad_eps])


def test_unknown_method_lists_known_ones(losses):
    with pytest.raises(EstimateError,
                       match="'kde'.*exact, ncx2, paper, empirical, splitting, bound"):
        estimate_losses(losses, [0.05], "kde")
    with pytest.raises(EstimateError, match="'bound' reads the task statistics.*ncx2, paper, "
                                            "empirical"):
        estimate_losses(losses, [0.05], "bound")


def test_negative_or_missing_losses_raise():
    with pytest.raises(EstimateError, match="negative"):
        estimate_losses([0.1, -0.2, 0.3], [0.1], "empirical")
    with pytest.raises(EstimateError, match="no finite losses"):
        estimate_losses([math.nan, math.nan], [0.1], "empirical")


def test_ncx2_rows(losses):
    eps = [0.02, 0.05, 0.1]
    rows = estimate_losses(losses, eps, "ncx2")
    assert [r.eps for r in rows] == eps
    fit_params = rows[0].params
    for row in rows:
        assert isinstance(row, Estimate)
        assert row.method == "ncx2" and row.method_version == "2" and row.bound == "point"
        assert row.lower_bits < row.bits < row.upper_bits  # the bootstrap interval
        assert row.params == fit_params  # one fit serves every eps
        assert row.diagnostics["converged"] is True
        assert row.diagnostics["approximation"] == "scipy"
        json.dumps({"params": row.params, "diagnostics": row.diagnostics})
        # bits agree with the fitted distribution's CDF, as scipy computes it
        p = fit_params
        ref = stats.ncx2.logcdf(row.eps / p["scale"], p["df"], p["nc"]) / -math.log(2)
        assert row.bits == pytest.approx(ref, rel=1e-9)
    assert rows[0].bits > rows[1].bits > rows[2].bits > 0


def test_ncx2_above_every_sample_is_near_zero_bits(losses):
    (row,) = estimate_losses(losses, [float(losses.max()) * 1.5], "ncx2")
    assert 0.0 <= row.bits < 0.01


def test_ncx2_deep_tail_uses_the_saddlepoint(losses):
    (row,) = estimate_losses(losses, [1e-200], "ncx2")  # P ~ eps^(df/2): far below 1e-308
    assert row.diagnostics["approximation"] == "saddlepoint"
    assert math.isfinite(row.bits) and row.bits > 1000


def test_exact_check_by_importance_sampling_brackets_the_saddlepoint():
    dist = GenChi2.from_arrays(np.linspace(0.01, 0.05, 20), 10.0, np.linspace(0, 3, 20))
    (row,) = estimate_exact(dist, [0.3 * dist.mean()], check=True, check_samples=20000)
    se = row.diagnostics["is_stderr_bits"]
    assert 0 < se < 0.05
    assert abs(row.diagnostics["is_bits"] - row.bits) < 5 * se
    assert row.lower_bits < row.diagnostics["is_bits"] < row.upper_bits


def test_exact_matches_genchi2():
    dist = GenChi2.from_arrays([0.02, 0.05, 0.01], 10.0, [1.0, 0.0, 3.0], offset=0.001)
    eps = [0.05, 0.2, 1.0]
    rows = estimate_exact(dist, eps)
    for row in rows:
        assert row.method == "exact" and row.n == 0 and row.bound == "point"
        assert row.lower_bits is None and row.upper_bits is None
        assert row.bits == pytest.approx(-dist.logcdf(row.eps) / math.log(2), rel=1e-14)
        assert row.diagnostics == {"approximation": dist.bits_below_with_method(row.eps)[1]}
        assert row.diagnostics["approximation"] in ("saddlepoint", "inversion", "series")
        assert row.params["n_components"] == 3
        assert row.params["mean"] == pytest.approx(dist.mean())
        json.dumps(row.params)
    with pytest.raises(EstimateError, match="GenChi2"):
        estimate_exact([0.1, 0.2], eps)


def test_edge_cases_say_why():
    equal = np.full(50, 0.3)
    for method in ("ncx2", "paper"):
        with pytest.raises(EstimateError, match="all 50 losses equal 0.3"):
            estimate_losses(equal, [0.2], method)
        with pytest.raises(EstimateError, match="refusing to fit .* to 9 finite losses"):
            estimate_losses(np.linspace(0.1, 0.9, 9), [0.2], method)
    below, at = estimate_losses(equal, [0.2, 0.3], "empirical")
    assert below.bound == "lower" and at.bits == 0.0


def test_rows_say_where_eps_lies(losses):
    inside, outside = estimate_losses(losses, [float(np.median(losses)),
                                              float(losses.min()) / 2], "ncx2", interval=False)
    assert inside.diagnostics["eps_position"] == "within the samples"
    assert inside.diagnostics["eps_sample_quantile"] == pytest.approx(0.5, abs=0.01)
    assert outside.diagnostics["eps_position"] == "below all samples (extrapolated)"
    assert outside.diagnostics["eps_over_sample_min"] == pytest.approx(0.5)
    assert 0 <= inside.diagnostics["ks_pvalue_nominal"] <= 1


def test_ncx2_fits_its_own_model_and_flags_a_wrong_one():
    rng = np.random.default_rng(3)
    good = stats.ncx2.rvs(5.0, 2.0, size=3000, random_state=rng) * 0.1
    bimodal = np.r_[rng.uniform(1.0, 1.1, 1500), rng.uniform(3.0, 3.1, 1500)]
    (fit_good,) = estimate_losses(good, [0.3], "ncx2", interval=False)
    (fit_bad,) = estimate_losses(bimodal, [1.0], "ncx2", interval=False)
    assert fit_good.diagnostics["ks_pvalue_nominal"] > 0.01
    assert fit_bad.diagnostics["ks_pvalue_nominal"] < 1e-6


def test_ncx2_rows_on_a_discrete_loss_say_so():
    """A 0-1 error on 50 test points takes at most 51 values: the ncx2 rows carry a note (the
    continuous model and its KS test are approximations there); a continuous loss has none."""
    rng = np.random.default_rng(4)
    errors = rng.binomial(50, 0.3, size=600) / 50
    (row,) = estimate_losses(errors, [0.2], "ncx2", interval=False)
    assert row.diagnostics["discrete_loss"] is True
    assert row.diagnostics["distinct_values"] == len(np.unique(errors))
    assert "discrete loss" in row.diagnostics["note"]
    (row,) = estimate_losses(rng.chisquare(5, 600), [2.0], "ncx2", interval=False)
    assert "discrete_loss" not in row.diagnostics and "note" not in row.diagnostics
