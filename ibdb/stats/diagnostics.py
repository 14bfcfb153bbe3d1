"""Diagnostics stored with estimates: how well a fitted model matches the samples, and where
eps lies relative to them.

A fitted model read far below the smallest sample is an extrapolation; an estimate row says so,
with the eps's sample quantile, so that a user can tell a measured number from a modelled one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def goodness_of_fit(log_cdf: np.ndarray, log_sf: np.ndarray) -> dict[str, Any]:
    """Kolmogorov-Smirnov statistic and p-value, and the Anderson-Darling statistic, of a fitted
    continuous model against ascending samples, given the model's log CDF and log survival
    function at those samples.

    The p-value is the nominal one for a fully specified model: with parameters fitted to the
    same samples the true p-value is larger, so a small nominal p-value is still a warning, but
    a large one is weaker evidence of fit than it looks.
    """
    log_f = np.asarray(log_cdf, dtype=np.float64)
    log_s = np.asarray(log_sf, dtype=np.float64)
    n = len(log_f)
    cdf = np.exp(log_f)
    ranks = np.arange(1, n + 1)
    d_plus = float(np.max(ranks / n - cdf))
    d_minus = float(np.max(cdf - (ranks - 1) / n))
    ks = max(d_plus, d_minus)
    p_value = float(stats.kstwo.sf(ks, n))
    # A^2 = -n - (1/n) sum (2i - 1) [ln F(x_i) + ln(1 - F(x_{n+1-i}))], in logs for the tails.
    with np.errstate(invalid="ignore"):
        terms = (2 * ranks - 1) * (np.maximum(log_f, -745.0) + np.maximum(log_s[::-1], -745.0))
    ad = float(-n - terms.sum() / n)
    return {"ks_statistic": ks, "ks_pvalue_nominal": p_value, "ad_statistic": ad,
            "gof_note": "nominal p-value: parameters were fitted to the same samples"}


def eps_position(sorted_losses: np.ndarray, eps: float) -> dict[str, Any]:
    """Where eps lies among the samples: its sample quantile, and whether reading a model at eps
    interpolates between samples or extrapolates beyond them."""
    x = np.asarray(sorted_losses, dtype=np.float64)
    k = int(np.searchsorted(x, eps, side="right"))
    if k == 0:
        where = "below all samples (extrapolated)"
    elif k == len(x):
        where = "at or above all samples"
    else:
        where = "within the samples"
    out: dict[str, Any] = {"eps_sample_quantile": k / len(x), "eps_position": where,
                           "sample_min": float(x[0]), "sample_max": float(x[-1])}
    if k == 0 and x[0] > 0:
        out["eps_over_sample_min"] = eps / float(x[0])
    if not math.isfinite(out["sample_min"]):
        out.pop("sample_min")
    return out
