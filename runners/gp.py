"""Exact Gaussian-process hypothesis space: posteriors of a GP that interpolates the training set.

Hypotheses are ``h(T) = mu + S^{1/2} Z`` with ``mu`` and ``S`` the posterior mean and covariance
at the test points (REFERENCE.md section 2), all in float64. With ``S = Q diag(lam) Q^T`` a
hypothesis is ``mu + Q diag(sqrt(lam)) Z``, and because Q is orthogonal its test MSE is
``sum_jc (R_jc + sqrt(lam_j) Z_jc)^2 / (m k)`` with ``R = Q^T (mu - Y)``: the loss costs O(m k)
and is exactly the generalized chi-squared whose spectrum (lam, R) the run hands to the store.
The 0-1 error needs the predictions themselves, one (m x m) @ (m x B k) product per chunk.
(See ``sample`` for why that product alone runs in float32.) The kernels and their
conventions are in ``kernels.py``.

The space's amplitude ``a`` makes the prior ``a k`` with the jitter scaled alike: the runner
factors ``K + jitter I`` as for ``a = 1`` and multiplies the posterior covariance (and so its
eigenvalues) by ``a``; the mean does not depend on it. ``marginal_likelihood`` for the amplitude
or the bandwidth chooses them by the evidence (``evidence.py``), which every run records in its
``info`` from the Cholesky factor it makes anyway.

With K + jitter I = L L^T, the posterior takes one triangular solve, V = L^-1 K(X, T), then
mu = V^T L^-1 Y and S = K(T, T) - V^T V. Memory is the training kernel (n_train^2 float64, which
the Cholesky factor overwrites) plus n_train x n_test for V (which overwrites K(X, T)), so the
largest n_train a machine can hold is set by that one matrix.

Explicit noise (``noise_dim``, ``noise``, ``evaluate``; what rare-event samplers move): a
hypothesis's noise is its Z, (m, k) flattened row-major, so noise_dim = m k; nothing else is
random. ``noise(seeds)`` is the noise ``sample`` draws (float32 normals, exactly promoted to
float64), and ``evaluate`` on it is ``sample`` bit for bit; for other noise (a pCN move), the MSE
is computed from the float64 noise and only the 0-1 error's GEMM sees it rounded to float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ibdb.core.errors import IbdbError
from ibdb.core.references import resolve
from ibdb.data.task import TaskData
from ibdb.runners.blocks import one_thread, row_blocks
from ibdb.runners.compatibility import check_gp
from ibdb.runners.conditioning import TrainMseConditioning
from ibdb.runners.evidence import (
    BandwidthSearch,
    best_amplitude,
    cholesky_terms,
    evidence_terms,
    log_evidence,
    search_bandwidth,
)
from ibdb.runners.kernels import kernel_matrix
from ibdb.spec.kernels import KERNELS, ArcCosKernel, MaternKernel, NetworkKernel, has_bandwidth
from ibdb.spec.spaces import GPSpace

log = logging.getLogger(__name__)

# A gp run "interpolates" when its posterior mean misses no training target (one-hot, so of
# scale 1) by more than this; past it the run's hypotheses do not fit the training set and the
# run is flagged (runner info, run_summary, the CLI's run header).
INTERPOLATION_TOLERANCE = 1e-3

ML = "marginal_likelihood"  # the spec's word for a hyperparameter chosen by the evidence


@dataclass
class _Posterior:
    """The posterior at the test points for a unit amplitude: its mean (m, k) and covariance
    (m, m); K^-1 Y (the interpolation error's); the evidence's (q, log det) terms; and, for a
    space conditioned on a train MSE, K + jI and K(T, X) (conditioning.py needs them)."""

    mean: torch.Tensor
    cov: torch.Tensor
    alpha: torch.Tensor
    terms: tuple[float, float]
    train_kernel: torch.Tensor | None = None
    cross: torch.Tensor | None = None


class GPRunner:
    kind: ClassVar[str] = "gp"

    def __init__(self, space: GPSpace, data: TaskData, *, device: torch.device) -> None:
        self._device = device
        self._buffers: dict[str, torch.Tensor] = {}  # see _scratch
        f64 = {"dtype": torch.float64, "device": device}
        x_train = torch.as_tensor(data.x_train, **f64)
        x_test = torch.as_tensor(data.x_test, **f64)
        y_train = torch.as_tensor(data.y_train, **f64)
        self._y_test = torch.as_tensor(data.y_test, **f64)
        check_gp(space, data)  # a cnn's limit needs images: say so before any kernel is made
        n_train, n_outputs = y_train.shape
        fixed_amplitude = None if space.amplitude == ML else float(space.amplitude)
        image_shape = None if data.image_shape is None else tuple(data.image_shape)
        input_shape = tuple(data.input_shape)

        def kernel_at(a: torch.Tensor, b: torch.Tensor, bandwidth: float | None) -> torch.Tensor:
            return kernel_matrix(a, b, kernel=space.kernel, bandwidth=bandwidth,
                                 image_shape=image_shape, input_shape=input_shape)

        bandwidth, search = _bandwidth(space, x_train, y_train, kernel_at, fixed_amplitude)
        posterior = _posterior(space, lambda a, b: kernel_at(a, b, bandwidth), x_train, x_test,
                               y_train, bandwidth)
        amplitude = fixed_amplitude if fixed_amplitude is not None else \
            best_amplitude(posterior.terms[0], n_train, n_outputs)
        eigenvalues, eigenvectors = _spectrum(space, posterior, amplitude, n_train, bandwidth)
        self.mean, self.cov, self.eigenvectors = posterior.mean, posterior.cov, eigenvectors
        mean = self._condition(space, posterior, y_train, amplitude)
        self._prepare_predictions(mean, eigenvectors, np.asarray(data.labels_test))
        self._eigenvalues = eigenvalues.clamp_min(0.0)  # rounding can leave tiny negatives
        self._sqrt_eig = self._eigenvalues.sqrt()
        self._sqrt_eig32 = self._sqrt_eig.to(torch.float32)
        self._residuals = eigenvectors.T @ (mean - self._y_test)  # R = Q^T (mu - Y), (m, k)
        self._info = self._run_info(space, data, posterior, eigenvalues, bandwidth, search,
                                    amplitude, fixed_amplitude)

    def _condition(self, space: GPSpace, posterior: _Posterior, y_train: torch.Tensor,
                   amplitude: float) -> torch.Tensor:
        """Set up a space conditioned on a train MSE (conditioning.py); return the mean the
        hypotheses centre on: the noisy posterior's for such a space, else the posterior's."""
        self._conditioning = None
        if space.fit is None:
            return posterior.mean
        fit = space.fit
        self._conditioning = TrainMseConditioning(
            posterior.train_kernel, posterior.cross, y_train, amplitude=amplitude,
            train_mse_max=fit.train_mse_max, label=space.name,
            proposal_noise=None if fit.proposal_noise == "auto" else fit.proposal_noise)
        posterior.train_kernel = posterior.cross = None
        # hypotheses move with their training normals through C = Q^T B, (m, n), in the
        # eigenbasis of S
        self._shift = self.eigenvectors.T @ self._conditioning.shift_map
        self._shift32 = self._shift.to(torch.float32)
        return self._conditioning.test_mean

    def _prepare_predictions(self, mean: torch.Tensor, eigenvectors: torch.Tensor,
                             labels: np.ndarray) -> None:
        """The float32 copies that make the predictions for the 0-1 error, their test points
        (rows) sorted by label, so that each label's points are one block of rows (see
        sample)."""
        order = np.argsort(labels, kind="stable")
        rows = torch.as_tensor(order, device=self._device)
        self._eigvecs32 = eigenvectors[rows].to(torch.float32)
        self._mean32 = mean[rows].to(torch.float32)
        bounds = np.searchsorted(labels[order], np.arange(mean.shape[1] + 1))
        self._label_rows = [(label, slice(int(bounds[label]), int(bounds[label + 1])))
                            for label in range(mean.shape[1]) if bounds[label + 1] > bounds[label]]

    def _run_info(self, space: GPSpace, data: TaskData, posterior: _Posterior,
                  eigenvalues: torch.Tensor, bandwidth: float | None,
                  search: BandwidthSearch | None, amplitude: float,
                  fixed_amplitude: float | None) -> dict[str, Any]:
        """What the run records about itself (``runs.runner_info``)."""
        conditioned = self._conditioning is not None
        n_train, n_outputs = data.y_train.shape
        if conditioned:
            of_mean = spread = None  # the conditioned law is not Gaussian: no closed form
        else:
            # E[test MSE] = (posterior mean's test MSE) + (spread around it, trace(S) / m): bias
            # and variance, so a reader sees which of the two drives the inductive bias
            of_mean = float((posterior.mean - self._y_test).square().mean())
            spread = float(self._eigenvalues.sum() / posterior.mean.shape[0])
        # With jitter j, (K + jI) alpha = Y, so the posterior mean at the training points misses
        # Y by exactly -j alpha: the interpolation error the jitter costs.
        interp_error = float((space.jitter * posterior.alpha).abs().max())
        if interp_error > INTERPOLATION_TOLERANCE and not conditioned:
            log.warning("space %r does not interpolate its training data: the posterior mean "
                        "misses a training target by %.3g (> %g), so its hypotheses are not "
                        "ones that fit the training set; lower the jitter, or change the "
                        "bandwidth or amplitude (e.g. marginal_likelihood)", space.name,
                        interp_error, INTERPOLATION_TOLERANCE)
        kernel = space.kernel
        if isinstance(kernel, NetworkKernel) and kernel.architecture == "cnn":
            scale = {"architecture": "cnn", "layers": kernel.layers,
                     "kernel_size": kernel.kernel_size, "pooling": kernel.pooling,
                     "init_scale": kernel.init_scale, "channels": kernel.channels,
                     "image_shape": list(data.image_shape)}
        elif isinstance(kernel, NetworkKernel):  # (the input dimension sets layer 1's scale)
            scale = {"depth": kernel.depth, "init_scale": kernel.init_scale,
                     "width": kernel.width, "input_dim": int(data.x_train.shape[1])}
        elif KERNELS.of(kernel).run_info is not None:  # the kernel's own record (its entry's)
            x_train = torch.as_tensor(data.x_train, dtype=torch.float64, device=self._device)
            scale = resolve(KERNELS.of(kernel).run_info)(
                kernel, x_train, input_shape=tuple(data.input_shape))
        else:
            rule = kernel.bandwidth  # type: ignore[attr-defined]
            scale = {"bandwidth": float(bandwidth),
                     "bandwidth_rule": rule if isinstance(rule, str) else "fixed"}
        evidence = log_evidence(*posterior.terms, n_train, n_outputs, amplitude)
        info: dict[str, Any] = {
            "kernel": kernel.kind,
            **scale,
            "amplitude": amplitude,
            "amplitude_rule": "fixed" if fixed_amplitude is not None else ML,
            "log_evidence": evidence,  # nats, of a (K + jitter I); see evidence.py
            "log_evidence_per_point": evidence / n_train,
            "jitter": space.jitter,
            "test_mse_of_mean": of_mean,
            "test_mse_spread": spread,
            "train_interp_max_abs_error": interp_error,
            # a conditioned space's hypotheses fit by its own criterion, checked per hypothesis
            "interpolates": None if conditioned else interp_error <= INTERPOLATION_TOLERANCE,
            "min_eigenvalue_before_clamp": float(eigenvalues.min()),
            "max_eigenvalue": float(eigenvalues.max()),
            "n_test": int(posterior.mean.shape[0]),
            "n_outputs": int(posterior.mean.shape[1]),
        }
        if self._conditioning is not None:
            choice = self._conditioning.choice
            info.update({
                "fit_criterion": "train_mse", "train_mse_max": space.fit.train_mse_max,
                "proposal_noise": choice.noise, "proposal_noise_rule": choice.rule,
                "pilot_acceptance": choice.acceptance})
        if search is not None:
            info["evidence_search"] = {
                "bandwidth_range": list(search.search_range), "evaluations": search.evaluations,
                "at_bound": search.at_bound, "seconds": search.seconds}
        if isinstance(kernel, MaternKernel):
            info["nu"] = kernel.nu
        if isinstance(kernel, ArcCosKernel):
            info["bias_variance"] = kernel.bias_variance or 0.0
        return info

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def spectrum(self) -> dict[str, np.ndarray] | None:
        if self._conditioning is not None:
            return None  # the conditioned test loss is not a generalized chi-squared
        return {
            "eigenvalue": self._eigenvalues.cpu().numpy(),
            "residuals": self._residuals.cpu().numpy(),
        }

    def sample(self, hypothesis_ids: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        if self._conditioning is not None:
            return self._sample_conditioned(np.asarray(seeds))
        m, k = self.mean.shape
        # (m, B, k) float32 draws, into host memory kept between chunks (see _scratch)
        host = self._scratch("normals", (m, len(seeds), k), torch.device("cpu"))
        z = _standard_normals(seeds, (m, k), out=host).to(self._device)
        return self._losses(z)

    # -- explicit noise (REFERENCE.md, "Rare-event estimation over a runner's noise") ----------
    # Hypothesis = mu + Q diag(sqrt(lam)) Z with Z the (m, k) standard normals; its noise vector
    # is Z flattened row-major (test point by test point), so noise_dim = m k. Nothing else is
    # random.

    @property
    def noise_dim(self) -> int:
        m, k = self.mean.shape
        if self._conditioning is not None:  # Z, then the training normals and the coin's
            return int(m * k + self._conditioning.n * k + 1)
        return int(m * k)

    @property
    def step_scale(self) -> None:
        return None  # every normal of Z moves alike

    def noise(self, seeds: np.ndarray) -> np.ndarray:
        """The noise ``sample`` draws for ``seeds`` (float32 normals, exactly promoted), so that
        ``evaluate(noise(seeds))`` equals ``sample(ids, seeds)`` bit for bit."""
        m, k = self.mean.shape
        if self._conditioning is not None:
            train, test = _train_then_test_normals(np.asarray(seeds), self._conditioning.n, m, k)
            rows = [test.permute(1, 0, 2).reshape(len(seeds), -1),
                    train[:-1].permute(1, 0, 2).reshape(len(seeds), -1), train[-1, :, :1]]
            return torch.cat(rows, dim=1).numpy().astype(np.float64)
        z = _standard_normals(np.asarray(seeds), (m, k))  # (m, B, k)
        return z.permute(1, 0, 2).reshape(len(seeds), m * k).numpy().astype(np.float64)

    def evaluate(self, noise: np.ndarray) -> dict[str, np.ndarray]:
        """Losses of ``mu + Q diag(sqrt(lam)) Z`` for the given Z (B, m k) float64: the MSE in
        float64 from Z itself; the 0-1 error, as in ``sample``, from Z rounded to float32 (exact
        for the noise ``noise`` returns, which is why the two then agree bit for bit)."""
        m, k = self.mean.shape
        noise = np.asarray(noise, dtype=np.float64)
        if noise.ndim != 2 or noise.shape[1] != self.noise_dim:
            extra = ", then training points x outputs + 1" if self._conditioning else ""
            raise IbdbError(f"gp evaluate: noise must be (B, {self.noise_dim}) (noise_dim = test "
                            f"points x outputs{extra}), not {noise.shape}.")
        rows = torch.as_tensor(noise, device=self._device)
        # laid out (m, B, k) in a tensor of our own, as sample lays out its draws
        z = torch.empty((m, len(noise), k), dtype=torch.float64, device=self._device)
        z.copy_(rows[:, :m * k].view(-1, m, k).permute(1, 0, 2))
        if self._conditioning is None:
            return self._losses(z)
        n = self._conditioning.n
        train = rows[:, m * k:-1].view(-1, n, k).permute(1, 0, 2)
        return self._conditioned_losses(train, rows[:, -1], lambda keep: z[:, keep, :])

    # -- conditioned on train MSE <= tau (conditioning.py): a hypothesis is a proposal, kept or
    # not by its training normals and its coin; only kept ones get test losses (NaN otherwise)

    def _sample_conditioned(self, seeds: np.ndarray) -> dict[str, np.ndarray]:
        m, k = self.mean.shape
        n = self._conditioning.n
        train = _standard_normals(seeds, (n + 1, k)).to(self._device)  # as the noise's first draw

        def test_normals(keep: torch.Tensor) -> torch.Tensor:
            # only kept proposals draw their test normals (from their own seed, after the
            # training block, as ``noise`` does): rejected ones cost O(n k) each
            kept = seeds[keep.cpu().numpy()]
            return _train_then_test_normals(kept, n, m, k)[1].to(self._device)

        return self._conditioned_losses(train[:-1], train[-1, :, 0], test_normals)

    def _conditioned_losses(self, train: torch.Tensor, coin: torch.Tensor,
                            test_normals: Any) -> dict[str, np.ndarray]:
        """Losses of proposals with training normals ``train`` (n, B, k), coin normals (B,), and
        ``test_normals(keep)`` giving the kept ones' Z, (m, kept, k)."""
        batch = train.shape[1]
        train_mse = torch.empty(batch, dtype=torch.float64, device=self._device)
        for rows in row_blocks(batch, train.shape[0] * train.shape[2], self._device):
            # one layout whichever path made ``train``, so that sums run in one order
            block = train[:, rows, :].to(torch.float64).contiguous()
            train_mse[rows] = self._conditioning.train_mse(block)
        keep = torch.nonzero(self._conditioning.accepted(train_mse, coin.to(torch.float64)))[:, 0]
        out = {"test_mse": np.full(batch, np.nan), "test_error": np.full(batch, np.nan),
               "train_mse": train_mse.cpu().numpy(), "fitted": np.zeros(batch, dtype=bool)}
        if len(keep):
            n, _, k = train.shape
            kept = train[:, keep, :].to(torch.float64).reshape(n, -1)
            shift = (self._shift @ kept).view(-1, len(keep), k)  # C Z_X, (m, kept, k)
            losses = self._losses(test_normals(keep), shift)
            where = keep.cpu().numpy()
            for name, values in losses.items():
                out[name][where] = values
            out["fitted"][where] = True
        return out

    def _losses(self, z: torch.Tensor, shift: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """Test MSE and 0-1 error of the hypotheses whose normals are z, (m, B, k) float32 or
        float64 on the device; z may be overwritten. ``shift`` (m, B, k) float64, a conditioned
        space's C Z_X, is added to sqrt(lam) Z in the eigenbasis."""
        m, k = self.mean.shape
        batch = z.shape[1]
        test_mse = torch.empty(batch, dtype=torch.float64, device=self._device)
        with one_thread():  # memory-bound passes: see blocks.one_thread
            # sum_jc (R + sqrt(lam) Z)^2 in float64, a few hypotheses at a time so that the
            # float64 copy of their normals stays in cache instead of doubling the chunk's memory
            for rows in row_blocks(batch, m * k, self._device):
                deviation = z[:, rows, :].to(torch.float64, copy=True)
                deviation.mul_(self._sqrt_eig[:, None, None])
                if shift is not None:
                    deviation.add_(shift[:, rows, :])
                deviation.add_(self._residuals[:, None, :]).square_()
                # summed over the test points first: a reduction down contiguous columns
                per_output = deviation.view(m, -1).sum(0).view(-1, k)
                torch.sum(per_output, dim=1, out=test_mse[rows])
            test_mse /= m * k
            z32 = z if z.dtype == torch.float32 else z.to(torch.float32)
            scaled = z32.mul_(self._sqrt_eig32[:, None, None])
            if shift is not None:
                scaled.add_(shift.to(torch.float32))
            scaled = scaled.view(m, batch * k)
        # The 0-1 error needs the predictions mu + Q W. One GEMM for the whole chunk,
        # Q @ [W_1 | ... | W_B], is far faster than B small products on a CPU, and float32 halves
        # its cost again: an argmax changes only where two class scores agree to ~1e-7, while
        # the MSE above, which the estimators use, stays exact float64.
        # into memory kept between chunks: on a CPU, writing into a fresh allocation of this size
        # made the GEMM ~8% slower (page faults)
        preds = self._scratch("predictions", (m, batch * k), self._device)
        torch.mm(self._eigvecs32, scaled, out=preds)
        with one_thread():
            preds = preds.view(m, batch, k).add_(self._mean32[:, None, :])
            test_error = _misclassified(preds, self._label_rows).to(torch.float64) / m
        return {
            "test_mse": test_mse.cpu().numpy(),
            "test_error": test_error.cpu().numpy(),
        }

    def _scratch(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A float32 tensor of ``shape``, reusing the memory this name had in earlier calls."""
        size = math.prod(shape)
        held = self._buffers.get(name)
        if held is None or held.numel() < size:
            held = self._buffers[name] = torch.empty(size, dtype=torch.float32, device=device)
        return held[:size].view(shape)


def _bandwidth(space: GPSpace, x_train: torch.Tensor, y_train: torch.Tensor,
               kernel_at: Callable[[torch.Tensor, torch.Tensor, float | None], torch.Tensor],
               fixed_amplitude: float | None) -> tuple[float | None, BandwidthSearch | None]:
    """The kernel's bandwidth as a number (None for a kernel without one: nngp, ntk), and the
    evidence search that chose it when the spec says ``marginal_likelihood``."""
    if not has_bandwidth(space.kernel):
        return None, None
    rule = space.kernel.bandwidth  # type: ignore[attr-defined]
    if rule == ML:  # see evidence.py
        n_train, n_outputs = y_train.shape
        search = search_bandwidth(
            lambda bw: evidence_terms(kernel_at(x_train, x_train, bw), y_train, space.jitter),
            n_train, n_outputs, centre=_median_distance(x_train), amplitude=fixed_amplitude,
            label=space.name)
        return search.bandwidth, search
    if rule == "median":
        return _median_distance(x_train), None
    return float(rule), None


def _posterior(space: GPSpace, kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               x_train: torch.Tensor, x_test: torch.Tensor, y_train: torch.Tensor,
               bandwidth: float | None) -> _Posterior:
    """The unit-amplitude posterior at the test points (see the module doc for the algebra)."""
    # The training kernel becomes its own Cholesky factor (no second n_train^2 matrix); the
    # column-major view lets LAPACK work on it without a transposed copy, and since K is
    # symmetric the view holds the same matrix.
    chol = kernel(x_train, x_train).mT
    chol.diagonal().add_(space.jitter)
    train_kernel = cross = None
    if space.fit is not None:  # conditioning.py needs K + jI and K(T, X): the solves overwrite
        train_kernel, cross = chol.clone(), kernel(x_test, x_train)
    status = torch.empty((), dtype=torch.int32, device=chol.device)
    torch.linalg.cholesky_ex(chol, out=(chol, status))
    if int(status) != 0:
        raise IbdbError(
            f"space {space.name!r}: the training {space.kernel.kind} kernel matrix "
            f"(n_train={len(x_train)}{_bandwidth_note(bandwidth)}) is not positive definite "
            f"with jitter {space.jitter:g}. Raise jitter (e.g. 1e-6) or check for duplicate "
            "points.")
    # With K = L L^T the posterior needs one triangular solve, V = L^-1 K(X, T):
    # mu = V^T (L^-1 Y) and S = K(T, T) - V^T V. K(T, X) is made row-major so that its
    # transpose, K(X, T), is column-major and the solve overwrites it in place.
    solved = kernel(x_test, x_train).mT  # (n, m): V once solved
    torch.linalg.solve_triangular(chol, solved, upper=False, out=solved)
    half = torch.linalg.solve_triangular(chol, y_train, upper=False)  # L^-1 Y
    mean = solved.T @ half  # (m, k)
    cov = kernel(x_test, x_test).addmm_(solved.T, solved, alpha=-1.0)
    alpha = torch.linalg.solve_triangular(chol.T, half, upper=True)  # K^-1 Y
    terms = cholesky_terms(chol, y_train, half)  # the evidence's (q, D); see evidence.py
    del chol, solved
    cov = 0.5 * (cov + cov.T)  # V^T V by GEMM is symmetric only up to rounding
    return _Posterior(mean, cov, alpha, terms, train_kernel, cross)


def _spectrum(space: GPSpace, posterior: _Posterior, amplitude: float, n_train: int,
              bandwidth: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvalues and eigenvectors of the posterior covariance at ``amplitude`` (which
    scales the covariance, in place, and not the mean)."""
    cov = posterior.cov
    if not bool(torch.isfinite(cov).all()):  # (eigh would fail with a LinAlgError)
        raise IbdbError(
            f"space {space.name!r}: the posterior covariance of the test points holds NaN "
            f"or infinite values (n_train={n_train}{_bandwidth_note(bandwidth)}): the "
            "task's features are too large for float64 distances, or the kernel overflows. "
            "Rescale the features (the task's preprocess scale: standardize or minmax) or "
            "check the data for huge values.")
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    if amplitude != 1.0:
        # the prior a k with jitter a j: the same mean, a times the covariance (evidence.py)
        cov.mul_(amplitude)
        eigenvalues.mul_(amplitude)
    return eigenvalues, eigenvectors


def _misclassified(preds: torch.Tensor, label_rows: list[tuple[int, slice]]) -> torch.Tensor:
    """Per hypothesis, the number of test points whose argmax score is not their label.

    ``preds`` is (m, B, k) with the test points sorted by label; ``label_rows`` gives each
    label's block of rows. argmax takes the first of equal maxima, so a class before the label
    beats it on a tie and a class after it must score strictly higher: two maxima over
    contiguous slices, about three times cheaper than argmax itself, and the same answer.
    """
    m, batch, k = preds.shape
    wrong = torch.zeros(batch, dtype=torch.int64, device=preds.device)
    for label, rows in label_rows:
        block = preds[rows]
        own = block[:, :, label]
        beaten = torch.zeros(own.shape, dtype=torch.bool, device=preds.device)
        if label > 0:
            beaten |= block[:, :, :label].amax(dim=2) >= own
        if label < k - 1:
            beaten |= block[:, :, label + 1:].amax(dim=2) > own
        wrong += beaten.sum(dim=0)
    return wrong


def _standard_normals(seeds: np.ndarray, shape: tuple[int, int],
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Hypothesis i's normals from its own CPU generator, laid out (m, B, k) for one GEMM.

    Drawing on the CPU keeps the values identical between CPU and GPU runs; float32 draws are
    about five times faster than float64 ones here and are promoted before any arithmetic.
    ``out``, a float32 (m, B, k) CPU tensor, receives them when given.
    """
    rows, cols = shape
    if out is None:
        out = torch.empty((rows, len(seeds), cols), dtype=torch.float32)
    draw = torch.empty(shape, dtype=torch.float32)
    generator = torch.Generator()
    for column, seed in enumerate(seeds.tolist()):
        generator.manual_seed(int(seed))
        torch.randn(shape, generator=generator, out=draw)
        out[:, column, :] = draw
    return out


def _train_then_test_normals(seeds: np.ndarray, n: int, m: int,
                             k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A conditioned space's normals from each seed's generator: first (n + 1, k), the training
    normals and (row n, column 0) the coin's, then (m, k) for the test points. Laid out
    (n + 1, B, k) and (m, B, k), float32."""
    train = torch.empty((n + 1, len(seeds), k), dtype=torch.float32)
    test = torch.empty((m, len(seeds), k), dtype=torch.float32)
    generator = torch.Generator()
    for column, seed in enumerate(seeds.tolist()):
        generator.manual_seed(int(seed))
        train[:, column, :] = torch.randn((n + 1, k), generator=generator)
        test[:, column, :] = torch.randn((m, k), generator=generator)
    return train, test


def _bandwidth_note(bandwidth: float | None) -> str:
    return "" if bandwidth is None else f", bandwidth={bandwidth:.4g}"


def _median_distance(x: torch.Tensor) -> float:
    """The median of the n (n - 1) / 2 distances between training points (the usual median:
    the mean of the two middle values when their number is even).

    The distances are made one block of rows at a time and kept once each, in one float64 array
    on the host that is partitioned in place: half the memory of the n x n kernel to come,
    instead of the several n x n tensors a full distance matrix and its sort would take.
    """
    n = len(x)
    upper = np.empty(n * (n - 1) // 2)
    filled = 0
    for rows in row_blocks(n, n, x.device):
        # rows i of the block against points j >= the block's first row; keep j > i
        block = torch.cdist(x[rows], x[rows.start:]).cpu().numpy()
        values = block[np.triu_indices(block.shape[0], 1, block.shape[1])]
        upper[filled:filled + len(values)] = values
        filled += len(values)
    if len(upper) == 0:
        median = 0.0
    else:
        low, high = (len(upper) - 1) // 2, len(upper) // 2
        upper.partition([low, high])  # both are then the order statistics a sort would give
        median = float(0.5 * (upper[low] + upper[high]))
    if not median > 0:
        raise IbdbError("bandwidth 'median' (or 'marginal_likelihood', which searches around "
                        "it): the median distance between training points is 0; give a numeric "
                        "bandwidth instead.")
    return median


RUNNER = GPRunner
