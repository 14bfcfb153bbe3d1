"""Exact Gaussian-process hypothesis space: posteriors of a GP that interpolates the training set.

Hypotheses are ``h(T) = mu + S^{1/2} Z`` with ``mu`` and ``S`` the posterior mean and covariance
at the test points (REFERENCE.md section 2), all in float64. With ``S = Q diag(lam) Q^T`` a
hypothesis is ``mu + Q diag(sqrt(lam)) Z``, and because Q is orthogonal its test MSE is
``sum_jc (R_jc + sqrt(lam_j) Z_jc)^2 / (m k)`` with ``R = Q^T (mu - Y)``: the loss costs O(m k)
and is exactly the generalized chi-squared whose spectrum (lam, R) the run hands to the store.
The 0-1 error needs the predictions themselves, one (m x m) @ (m x B k) product per chunk.
(See ``sample`` for why that product alone runs in float32.) The kernels and their
conventions are in ``kernels.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ibdb.errors import IbdbError
from ibdb.runners.kernels import kernel_matrix
from ibdb.specs import GPSpace
from ibdb.tasks import TaskData


class GPRunner:
    kind: ClassVar[str] = "gp"

    def __init__(self, space: GPSpace, data: TaskData, *, device: torch.device) -> None:
        self._device = device
        f64 = {"dtype": torch.float64, "device": device}
        x_train = torch.as_tensor(data.x_train, **f64)
        x_test = torch.as_tensor(data.x_test, **f64)
        y_train = torch.as_tensor(data.y_train, **f64)
        self._y_test = torch.as_tensor(data.y_test, **f64)
        self._labels = torch.as_tensor(data.labels_test, dtype=torch.int64, device=device)
        bandwidth = _median_distance(x_train) if space.bandwidth == "median" else space.bandwidth

        def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return kernel_matrix(a, b, kernel=space.kernel, bandwidth=bandwidth, nu=space.nu,
                                 bias_variance=space.bias_variance or 0.0)

        k_train = kernel(x_train, x_train)
        k_train.diagonal().add_(space.jitter)
        chol, status = torch.linalg.cholesky_ex(k_train)
        if int(status) != 0:
            raise IbdbError(
                f"space {space.name!r}: the training {space.kernel} kernel matrix "
                f"(n_train={len(x_train)}, bandwidth={bandwidth:.4g}) is not positive definite "
                f"with jitter {space.jitter:g}. Raise jitter (e.g. 1e-6) or check for duplicate "
                "points.")
        k_cross = kernel(x_train, x_test)  # (n, m)
        solved = torch.cholesky_solve(k_cross, chol)  # K^-1 K(X, T)
        alpha = torch.cholesky_solve(y_train, chol)  # K^-1 Y
        mean = k_cross.T @ alpha  # (m, k): mu = K(T, X) K^-1 Y
        cov = kernel(x_test, x_test) - k_cross.T @ solved
        cov = 0.5 * (cov + cov.T)  # symmetric up to rounding; eigh assumes exact symmetry
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        self.mean, self.cov = mean, cov
        self.eigenvectors = eigenvectors
        self._eigvecs32 = eigenvectors.to(torch.float32)
        self._mean32 = mean.to(torch.float32)
        self._eigenvalues = eigenvalues.clamp_min(0.0)  # rounding can leave tiny negatives
        self._sqrt_eig = self._eigenvalues.sqrt()
        self._sqrt_eig32 = self._sqrt_eig.to(torch.float32)
        self._residuals = eigenvectors.T @ (mean - self._y_test)  # R = Q^T (mu - Y), (m, k)
        # With jitter j, (K + jI) alpha = Y, so the posterior mean at the training points misses
        # Y by exactly -j alpha: the interpolation error the jitter costs.
        interp_error = float((space.jitter * alpha).abs().max())
        self._info = {
            "kernel": space.kernel,
            "bandwidth": float(bandwidth),
            "bandwidth_rule": "median" if space.bandwidth == "median" else "fixed",
            "jitter": space.jitter,
            "train_interp_max_abs_error": interp_error,
            "min_eigenvalue_before_clamp": float(eigenvalues.min()),
            "max_eigenvalue": float(eigenvalues.max()),
            "n_test": int(mean.shape[0]),
            "n_outputs": int(mean.shape[1]),
        }
        if space.nu is not None:
            self._info["nu"] = space.nu
        if space.kernel == "arccos":
            self._info["bias_variance"] = space.bias_variance or 0.0

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def spectrum(self) -> dict[str, np.ndarray]:
        return {
            "eigenvalue": self._eigenvalues.cpu().numpy(),
            "residuals": self._residuals.cpu().numpy(),
        }

    def sample(self, hypothesis_ids: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        m, k = self.mean.shape
        batch = len(seeds)
        z = _standard_normals(seeds, (m, k)).to(self._device)  # (m, B, k), float32 draws
        deviation = torch.addcmul(self._residuals[:, None, :], self._sqrt_eig[:, None, None],
                                  z.to(torch.float64))  # R + sqrt(lam) Z, per hypothesis
        test_mse = deviation.square_().mean(dim=(0, 2))
        # The 0-1 error needs the predictions mu + Q W. One GEMM for the whole chunk,
        # Q @ [W_1 | ... | W_B], is far faster than B small products on a CPU, and float32 halves
        # its cost again: an argmax changes only where two class scores agree to ~1e-7, while
        # the MSE above, which the estimators use, stays exact float64.
        scaled = z.mul_(self._sqrt_eig32[:, None, None]).view(m, batch * k)
        preds = (self._eigvecs32 @ scaled).view(m, batch, k)
        preds += self._mean32[:, None, :]
        wrong = preds.argmax(dim=2) != self._labels[:, None]  # (m, B)
        test_error = wrong.to(torch.float64).mean(dim=0)
        return {
            "test_mse": test_mse.cpu().numpy(),
            "test_error": test_error.cpu().numpy(),
        }


def _standard_normals(seeds: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """Hypothesis i's normals from its own CPU generator, laid out (m, B, k) for one GEMM.

    Drawing on the CPU keeps the values identical between CPU and GPU runs; float32 draws are
    about five times faster than float64 ones here and are promoted before any arithmetic.
    """
    rows, cols = shape
    out = torch.empty((rows, len(seeds), cols), dtype=torch.float32)
    draw = torch.empty(shape, dtype=torch.float32)
    generator = torch.Generator()
    for column, seed in enumerate(seeds.tolist()):
        generator.manual_seed(int(seed))
        torch.randn(shape, generator=generator, out=draw)
        out[:, column, :] = draw
    return out


def _median_distance(x: torch.Tensor) -> float:
    n = len(x)
    dist = torch.cdist(x, x)
    upper = dist[torch.triu_indices(n, n, offset=1, device=x.device).unbind()]
    if len(upper) == 0:
        median = 0.0
    else:  # the usual median: the mean of the two middle values when their number is even
        ordered = upper.sort().values
        median = float(0.5 * (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]))
    if not median > 0:
        raise IbdbError("bandwidth 'median': the median distance between training points is 0; "
                        "give a numeric bandwidth instead.")
    return median


RUNNER = GPRunner
