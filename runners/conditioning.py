"""A gp space conditioned on a training MSE at most tau, sampled exactly by rejection.

The networks' ``train_mse`` fit criterion keeps a trained network when its training MSE (over
points and outputs, against the one-hot targets Y) is at most tau. The gp side of the same event
is the prior conditioned on it, pi(f) ~ N(f; 0, a (K + j I)) 1[|f(X) - Y|^2 <= R^2] with
R^2 = n k tau (the gp's own fit criterion, interpolation, is the limit tau -> 0). That law is not
Gaussian, so it is sampled by rejection from a Gaussian proposal: the posterior of the same
prior given noisy observations Y of variance s^2 (``proposal_noise``),

    q(f_X) ~ N(f_X; 0, a (K + j I)) exp(-|f_X - Y|^2 / (2 s^2)).

On the ball pi / q is proportional to exp(|f_X - Y|^2 / (2 s^2)), largest on its surface, so a
proposal with d^2 = |f_X - Y|^2 is accepted with probability 1[d^2 <= R^2] exp(-(R^2 - d^2) /
(2 s^2)): the accepted f_X have exactly the law pi(f_X) whatever s is; s only sets how many are
accepted. The test values then follow from the prior's conditional given f_X,
f_T | f_X ~ N(K_TX (K + jI)^-1 f_X, S) with S the interpolating posterior's covariance.

Coordinates. With a (K + jI) = U diag(kappa) U^T and Yhat = U^T Y, a proposal's training values
are, per eigen-direction i and output c (z the standard normals of its noise),

    U^T f_X = kappa / (kappa + s^2) Yhat + sqrt(kappa s^2 / (kappa + s^2)) z,
    U^T (f_X - Y) = -s^2 / (kappa + s^2) Yhat + sqrt(kappa s^2 / (kappa + s^2)) z,

so d^2 costs O(n k). Its test mean is a K_TX U diag(1/kappa) U^T f_X = mu_s + B z with
mu_s = a K_TX U diag(1 / (kappa + s^2)) Yhat (the noisy posterior mean, well conditioned) and
B = a K_TX U diag(sqrt(s^2 / (kappa (kappa + s^2)))): a direction with kappa near 0 carries no
prior variance, and B's column there is dropped instead of dividing rounding by it.

Choosing s (``proposal_noise: auto``). The acceptance rate is E_q[1[d^2 <= R^2] exp(-(R^2 - d^2)
/ (2 s^2))]; ``PILOT_DRAWS`` fixed proposals (one seeded stream, so every runner of a run picks
the same s) estimate it on a grid of s^2 from tau 1e-4 to tau 1e4 (``GRID_POINTS`` spaced
evenly in log), and the best is kept. d^2 is a sum of about n k independent terms, so the
acceptance is at best about 1 / sqrt(pi n k) (1 % at n k = 3000): a budget of N proposals
yields about that fraction of hypotheses, and the rejected proposals are stored as not fitted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ibdb.core.errors import IbdbError

log = logging.getLogger(__name__)

PILOT_DRAWS = 4096
PILOT_SEED = 20240815  # fixed: the choice of s must not depend on which runner makes it
GRID_POINTS = 161  # s^2 from tau 1e-4 to tau 1e4, twenty per decade
LOW_ACCEPTANCE = 1e-4  # below this the run is refused: budgets would be spent on rejections
# eigenvalues of a (K + jI) below this fraction of the largest carry no prior variance
_NULL_EIGENVALUE = 1e-14


@dataclass(frozen=True)
class ProposalChoice:
    noise: float  # s^2
    acceptance: float  # the pilot's estimate of the acceptance rate at s^2
    rule: str  # "auto" or "fixed"


class TrainMseConditioning:
    """The rejection sampler's pieces for one space: acceptance from the training noise, and the
    test mean and its shift that the accepted proposals' training values induce."""

    def __init__(self, train_kernel: torch.Tensor, cross: torch.Tensor, y_train: torch.Tensor,
                 *, amplitude: float, train_mse_max: float, proposal_noise: float | None,
                 label: str) -> None:
        """``train_kernel`` is K + jI (n, n; not modified), ``cross`` K_TX (m, n), both of unit
        amplitude; ``proposal_noise`` None chooses s^2 by the pilot (see the module docstring)."""
        n, k = y_train.shape
        self.n, self.k = n, k
        self.radius2 = n * k * train_mse_max
        self.train_mse_max = train_mse_max
        eigenvalues, vectors = torch.linalg.eigh(train_kernel)
        kappa = amplitude * eigenvalues.clamp_min(0.0)
        self._kappa = kappa
        self._live = kappa > _NULL_EIGENVALUE * float(kappa.max())
        self._yhat = vectors.T @ y_train  # (n, k)
        self._cross_u = amplitude * (cross @ vectors)  # a K_TX U, (m, n)
        if proposal_noise is None:
            self.choice = _choose_noise(self, label)
        else:
            acceptance = _pilot_acceptance(self, torch.tensor([proposal_noise],
                                                              dtype=torch.float64))
            self.choice = ProposalChoice(proposal_noise, float(acceptance[0]), "fixed")
        if self.choice.acceptance < LOW_ACCEPTANCE:
            raise IbdbError(
                f"space {label!r}: conditioning on train MSE <= {train_mse_max:g} accepts about "
                f"{self.choice.acceptance:.2g} of proposals (proposal_noise "
                f"{self.choice.noise:.3g}), so nearly every sampled hypothesis would be "
                "rejected. Raise fit.train_mse_max, or leave proposal_noise at auto.")
        s2 = self.choice.noise
        self._shrink = -s2 / (kappa + s2)  # residual mean per eigen-direction, times Yhat
        self._sd = torch.sqrt(kappa * s2 / (kappa + s2))
        scale = torch.where(self._live, torch.sqrt(s2 / (kappa.clamp_min(1e-300) * (kappa + s2))),
                            torch.zeros_like(kappa))
        self.test_mean = self._cross_u @ (self._yhat / (kappa + s2)[:, None])  # mu_s, (m, k)
        self.shift_map = self._cross_u * scale  # B, (m, n): test values per training normal

    def train_mse(self, z_train: torch.Tensor) -> torch.Tensor:
        """Training MSE of proposals whose training normals are ``z_train`` (n, B, k) float64."""
        residual = self._shrink[:, None, None] * self._yhat[:, None, :] \
            + self._sd[:, None, None] * z_train
        return residual.square().sum(dim=(0, 2)) / (self.n * self.k)

    def accepted(self, train_mse: torch.Tensor, z_accept: torch.Tensor) -> torch.Tensor:
        """Whether each proposal is kept: d^2 <= R^2 and Phi(z) <= exp(-(R^2 - d^2) / (2 s^2))."""
        gap = self.radius2 - train_mse * (self.n * self.k)
        log_ratio = -gap / (2.0 * self.choice.noise)
        return (gap >= 0) & (torch.special.log_ndtr(z_accept) <= log_ratio)


def _pilot_acceptance(cond: TrainMseConditioning, noises: torch.Tensor) -> torch.Tensor:
    """The acceptance rate at each s^2 in ``noises``, averaged over the pilot's fixed proposals.

    d^2 = sum_i shrink_i^2 |Yhat_i|^2 + 2 shrink_i sd_i (Yhat_i . z_i) + sd_i^2 |z_i|^2, so the
    pilot keeps only the two (draws, n) matrices of per-direction sums and every s^2 costs two
    matrix-vector products.
    """
    generator = torch.Generator().manual_seed(PILOT_SEED)
    dot = torch.empty((PILOT_DRAWS, cond.n), dtype=torch.float64)
    square = torch.empty_like(dot)
    rows = max(1, (1 << 22) // (cond.n * cond.k))
    for start in range(0, PILOT_DRAWS, rows):
        block = slice(start, min(start + rows, PILOT_DRAWS))
        z = torch.randn((block.stop - block.start, cond.n, cond.k), generator=generator,
                        dtype=torch.float64)
        dot[block] = (z * cond._yhat).sum(dim=2)
        square[block] = z.square().sum(dim=2)
    kappa = cond._kappa.to(torch.float64)
    norm2 = cond._yhat.square().sum(dim=1)
    rates = torch.empty(len(noises), dtype=torch.float64)
    for index, s2 in enumerate(noises.tolist()):
        shrink = -s2 / (kappa + s2)
        sd = torch.sqrt(kappa * s2 / (kappa + s2))
        d2 = float((shrink.square() * norm2).sum()) + dot @ (2 * shrink * sd) + square @ sd.square()
        gap = cond.radius2 - d2
        weight = torch.where(gap >= 0, torch.exp(-gap.clamp_min(0) / (2 * s2)),
                             torch.zeros_like(gap))
        rates[index] = weight.mean()
    return rates


def _choose_noise(cond: TrainMseConditioning, label: str) -> ProposalChoice:
    tau = cond.train_mse_max
    grid = torch.logspace(math.log10(tau) - 4, math.log10(tau) + 4, GRID_POINTS,
                          dtype=torch.float64)
    rates = _pilot_acceptance(cond, grid)
    best = int(torch.argmax(rates))
    if not float(rates[best]) > 0:
        raise IbdbError(
            f"space {label!r}: no proposal of the {PILOT_DRAWS}-draw pilot reached train MSE <= "
            f"{tau:g} at any proposal_noise from {float(grid[0]):.3g} to {float(grid[-1]):.3g}. "
            "Raise fit.train_mse_max.")
    if best in (0, GRID_POINTS - 1):
        log.warning("space %r: the proposal noise chosen for train MSE <= %g is at the end of "
                    "its search range (%.3g); the acceptance rate may be improvable", label, tau,
                    float(grid[best]))
    # rounded like the evidence's choices, so that the value recorded is the value used
    noise = float(f"{float(grid[best]):.6g}")
    return ProposalChoice(noise, float(rates[best]), "auto")
