"""Tests of the re-implemented published estimator (ibdb.stats.paper).

Oracles: scipy.stats.ncx2 called directly (the paper's own code path), the exact ncx2 CDF
(scipy where it is finite, GenChi2's exact one-component Poisson mixture deeper, itself
checked against mpmath in tests/stats/test_ncx2fit.py), and the normal CDF.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from ibdb.core.errors import EstimateError
from ibdb.stats.genchi2 import GenChi2
from ibdb.stats.paper import PaperFit, paper_fit, paper_neg_log_cdf_nats, sankaran_z


def _fit(df: float, nc: float, scale: float) -> PaperFit:
    return PaperFit(df=df, nc=nc, scale=scale, loglik=0.0, seconds=0.0)


def test_fit_is_scipys_fit_exactly():
    rng = np.random.default_rng(0)
    x = stats.ncx2.rvs(3.0, 20.0, size=300, random_state=rng) * 0.01
    fit = paper_fit(x)
    df, nc, loc, scale = stats.ncx2.fit(x, floc=0)
    assert (fit.df, fit.nc, fit.scale) == (df, nc, scale)
    assert loc == 0
    assert fit.loglik == pytest.approx(float(stats.ncx2.logpdf(x, df, nc, 0, scale).sum()),
                                       rel=1e-14)
    assert fit.seconds > 0


@pytest.mark.parametrize("eps", [0.05, 0.15, 0.2, 0.3])
def test_scipy_path_is_minus_ncx2_logcdf(eps):
    fit = _fit(6.9, 13.6, 0.0034)
    nats, how = paper_neg_log_cdf_nats(fit, eps)
    assert how == "scipy-logcdf"
    assert nats == -stats.ncx2.logcdf(eps, 6.9, 13.6, loc=0, scale=0.0034)


@pytest.mark.parametrize(("df", "nc"), [(3.0, 20.0), (6.9, 13.6), (50.0, 10.0), (4.0, 300.0)])
def test_sankaran_z_tracks_the_exact_cdf_where_it_is_moderate(df, nc):
    # Measured: Phi(z) is within 3% (relative) of P for 0.01 <= P <= 0.99 at these df >= 3
    # (within 33% at df = 1, P = 0.01); asserted: 5%.
    for p in (0.01, 0.05, 0.2, 0.5, 0.8, 0.99):
        y = stats.ncx2.ppf(p, df, nc)
        approx = stats.norm.cdf(sankaran_z(y, df, nc))
        assert approx == pytest.approx(p, rel=0.05), p


def test_fallback_used_exactly_when_scipy_underflows():
    fit = _fit(6.9, 13.6, 1.0)
    # scipy's logcdf goes from finite (-727 nats at 1e-90) to -inf (at 1e-93) here
    for eps in np.geomspace(1e-110, 1e-70, 41):
        scipy_value = stats.ncx2.logcdf(eps, 6.9, 13.6, loc=0, scale=1.0)
        nats, how = paper_neg_log_cdf_nats(fit, float(eps))
        if scipy_value == -math.inf:
            assert how == "sankaran-z2/2"
            z = sankaran_z(eps, 6.9, 13.6)
            assert nats == 0.5 * z * z
        else:
            assert how == "scipy-logcdf"
            assert nats == -scipy_value
    assert {paper_neg_log_cdf_nats(fit, e)[1] for e in (1e-110, 1e-70)} == {
        "sankaran-z2/2", "scipy-logcdf"}


@pytest.mark.parametrize(("df", "nc", "scale"), [(6.9, 13.6, 0.0034), (3.0, 20.0, 0.01),
                                                 (50.0, 10.0, 1.0)])
def test_fallback_underestimates_the_true_tail(df, nc, scale):
    """z^2/2 is far below the true -log CDF deep in the tail.

    Sankaran's z tends to a finite limit as eps -> 0 ((eps/scale)^h -> 0 with h in [1/3, 1/2]),
    so z^2/2 saturates at a few tens of nats while the truth grows like (df/2) log(1/eps).
    Measured at eps = 1e-300 (true value 2375, 1041 and 17350 nats): z^2/2 = 15.1, 12.7 and
    105.8 nats. It is also below Sankaran's own -log Phi(z), by log(-z sqrt(2 pi)) + O(1/z^2).
    """
    dist = GenChi2.from_arrays([scale], [df], [nc])
    fit = _fit(df, nc, scale)
    for eps in (1e-300, 1e-250, 1e-200):
        nats, how = paper_neg_log_cdf_nats(fit, eps)
        true = -dist.logcdf(eps)
        if how != "sankaran-z2/2":
            continue
        z = sankaran_z(eps / scale, df, nc)
        assert z < -1.0
        assert nats < -float(special.log_ndtr(z)) < true
        assert -float(special.log_ndtr(z)) - nats == pytest.approx(
            math.log(-z * math.sqrt(2 * math.pi)), abs=1.5 / z**2)
        assert true - nats > 500.0  # hundreds to thousands of nats short
    # the saturation: the fallback hardly moves over 50 orders of magnitude of eps
    lo, how_lo = paper_neg_log_cdf_nats(fit, 1e-300)
    hi, how_hi = paper_neg_log_cdf_nats(fit, 1e-250)
    assert how_lo == how_hi == "sankaran-z2/2"
    assert abs(lo - hi) < 0.01 * lo


@pytest.mark.parametrize(
    ("losses", "fragment"),
    [
        (np.array([0.1, 0.2]), "at least 3"),
        (np.array([0.1, 0.2, np.nan, 0.3]), "not finite"),
        (np.array([0.1, 0.2, 0.0, 0.3]), "not positive"),
        (np.full(5, 0.3), "all 5 losses equal"),
    ],
)
def test_bad_losses_raise(losses, fragment):
    with pytest.raises(EstimateError, match=fragment):
        paper_fit(losses)


@pytest.mark.parametrize("eps", [0.0, -1.0, math.nan, math.inf])
def test_bad_eps_raises(eps):
    with pytest.raises(EstimateError, match="eps must be finite and > 0"):
        paper_neg_log_cdf_nats(_fit(3.0, 2.0, 1.0), eps)
