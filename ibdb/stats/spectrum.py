"""The exact loss distribution of a Gaussian-process run, from its stored spectrum.

With posterior covariance ``S = Q diag(lam) Q^T`` and residuals ``R = Q^T (mu - y)``, a
hypothesis's test MSE over m test points and k outputs is (REFERENCE.md section 2)

    L = sum_j lam_j / (m k) * chi2'(k, sum_c R_jc^2 / lam_j)

Directions whose eigenvalue is zero (to rounding) carry no randomness: they add the constant
``sum_c R_jc^2 / (m k)``. We call an eigenvalue zero when it is below ``RELATIVE_ZERO`` times the
largest one, since an eigendecomposition in float64 cannot resolve it from 0 anyway.
"""

from __future__ import annotations

import numpy as np

from ibdb.core.errors import EstimateError
from ibdb.stats.genchi2 import GenChi2

NEGATIVE_TOLERANCE = 1e-6  # relative to the largest eigenvalue: rounding, not damage
RELATIVE_ZERO = 1e-12


def gp_loss_distribution(eigenvalues: np.ndarray, residual_sq: np.ndarray, *, n_test: int,
                         n_outputs: int) -> GenChi2:
    """The generalized chi-squared law of a gp run's test MSE."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    rsq = np.asarray(residual_sq, dtype=np.float64)
    if lam.shape != rsq.shape or lam.ndim != 1 or lam.size == 0:
        raise EstimateError(f"a spectrum needs one residual_sq per eigenvalue; got shapes "
                            f"{lam.shape} and {rsq.shape}.")
    if n_test <= 0 or n_outputs <= 0:
        raise EstimateError(f"n_test = {n_test} and n_outputs = {n_outputs} must be positive.")
    for name, values in (("eigenvalue", lam), ("residual_sq", rsq)):
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EstimateError(
                f"the spectrum has {int(bad.sum())} non-finite {name} value(s) (component {i}: "
                f"{values[i]!r}); a gp posterior's spectrum is finite. The stored spectrum is "
                "damaged: sample the run again into a new store.")
    top = float(lam.max())
    # a covariance's eigenvalues are >= 0; rounding leaves small negatives, which count as
    # zero below, but one far below zero means these are not a covariance's
    if lam.min() < -NEGATIVE_TOLERANCE * max(top, 0.0) or top <= 0 and lam.min() < 0:
        i = int(np.argmin(lam))
        raise EstimateError(
            f"eigenvalue {i} of the spectrum is {lam[i]!r}, below zero by more than rounding "
            f"(the largest is {top!r}); a posterior covariance has no negative eigenvalues. "
            "The stored spectrum is damaged: sample the run again into a new store.")
    if (rsq < 0).any():
        i = int(np.flatnonzero(rsq < 0)[0])
        raise EstimateError(
            f"residual_sq[{i}] = {rsq[i]!r} is negative; squared residuals are >= 0. The stored "
            "spectrum is damaged: sample the run again into a new store.")
    scale = float(n_test * n_outputs)
    random = lam > RELATIVE_ZERO * max(float(lam.max()), 0.0)
    offset = float(rsq[~random].sum()) / scale
    return GenChi2.from_arrays(
        weights=lam[random] / scale,
        dofs=float(n_outputs),
        noncentralities=rsq[random] / lam[random],
        offset=offset,
    )
