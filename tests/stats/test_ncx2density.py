"""Tests of the noncentral chi-squared log-density (ibdb.stats.ncx2density).

Oracles: scipy.stats.ncx2.logpdf where it is finite, and mpmath's Bessel functions at 40
digits where scipy underflows.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

from ibdb.stats.ncx2density import chi, ncx2_logpdf


def test_logpdf_matches_scipy():
    rng = np.random.default_rng(0)
    for df, nc in [(0.4, 0.01), (2.0, 3.0), (5.0, 30.0), (300.0, 2000.0), (3.0, 0.0)]:
        y = stats.ncx2.rvs(df, max(nc, 1e-300), size=500, random_state=rng)
        ref = stats.ncx2.logpdf(y, df, nc) if nc > 0 else stats.chi2.logpdf(y, df)
        np.testing.assert_allclose(ncx2_logpdf(y, df, nc), ref, rtol=1e-10, atol=1e-10)


def _chi_mp(nu: float, z: float) -> float:
    nu, z = mp.mpf(nu), mp.mpf(z)
    return float(mp.log(mp.besseli(nu, z)) - nu * mp.log(z / 2) - z)


@pytest.mark.parametrize(
    ("nu", "z"),
    [
        (-0.999, 1e-8), (-0.999, 0.3), (-0.5, 1e-3), (0.5, 2.0), (1.3, 40.0),  # series, ive
        (3.0, 1e4), (40.0, 1e-3), (40.0, 15.0), (300.0, 1e-200), (300.0, 50.0),  # series, ive
        (800.0, 100.0), (2000.0, 900.0), (2000.0, 5000.0),  # Debye (ive underflows) and ive
    ],
)
def test_chi_matches_mpmath(nu, z):
    mp.mp.dps = 40
    got = float(chi(nu, np.array([z]))[0])
    want = _chi_mp(nu, z)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_logpdf_finite_where_scipy_underflows():
    # df = 1200, nc = 0.5 at y = 20: the density is ~e^-2800; ive(599, 2.2) underflows
    mp.mp.dps = 40
    df, nc, y = 1200.0, 0.5, 20.0
    nu = mp.mpf(df) / 2 - 1
    want = float(-mp.log(2) - (y + nc) / 2 + nu / 2 * mp.log(mp.mpf(y) / nc)
                 + mp.log(mp.besseli(nu, mp.sqrt(nc * y))))
    got = float(ncx2_logpdf(np.array([y]), df, nc)[0])
    assert math.isfinite(got)
    assert got == pytest.approx(want, rel=1e-12)
