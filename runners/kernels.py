"""Kernel functions of the gp space, in float64 torch.

Conventions (``l`` the bandwidth, ``r = |x - x'|`` the Euclidean distance):

- ``rbf``:     ``exp(-r^2 / (2 l^2))``
- ``laplace``: ``exp(-r / l)`` (the exponential kernel; Matérn with nu = 1/2)
- ``matern``:  Rasmussen & Williams (2006, eq. 4.14) with ``s = sqrt(2 nu) r / l``:
  nu = 1/2: ``exp(-s)``; nu = 3/2: ``(1 + s) exp(-s)``; nu = 5/2: ``(1 + s + s^2 / 3) exp(-s)``.
- ``arccos``:  the infinite-width one-hidden-layer ReLU network kernel (Cho & Saul 2009, order 1),
  with a bias. Hidden unit ``relu(w.x + b)`` with ``w ~ N(0, I / l^2)`` and
  ``b ~ N(0, bias_variance)``; ``k(x, x') = 2 E[relu(w.x + b) relu(w.x' + b)]``. With
  ``K0(x, x') = bias_variance + x.x' / l^2`` and ``cos t = K0(x, x') / sqrt(K0(x, x) K0(x', x'))``,
  ``k = sqrt(K0(x, x) K0(x', x')) (sin t + (pi - t) cos t) / pi``. The factor 2 (He scaling)
  makes ``k(x, x) = K0(x, x)``; at bias_variance 0 and l = 1 this is Cho & Saul's ``k_1`` exactly.

Every kernel here is positive semi-definite for any bandwidth. The module never imports the
store; it holds pure functions of its arguments.
"""

from __future__ import annotations

import math

import torch

KERNELS = ("rbf", "laplace", "matern", "arccos")
MATERN_NUS = (0.5, 1.5, 2.5)


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, *, kernel: str, bandwidth: float,
                  nu: float | None = None, bias_variance: float = 0.0) -> torch.Tensor:
    """The (len(a), len(b)) kernel matrix between the rows of ``a`` and ``b``."""
    if kernel == "rbf":
        return _rbf(a, b, bandwidth)
    if kernel == "laplace":
        return torch.exp(-_distance(a, b) / bandwidth)
    if kernel == "matern":
        if nu not in MATERN_NUS:
            raise ValueError(f"matern nu must be one of {MATERN_NUS}; got {nu!r}")
        return _matern(_distance(a, b) / bandwidth, nu)
    if kernel == "arccos":
        return _arccos(a / bandwidth, b / bandwidth, bias_variance)
    raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")


def _rbf(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> torch.Tensor:
    # The expansion |a|^2 + |b|^2 - 2 a.b is what the gp runner has always used; keeping its
    # exact arithmetic keeps the losses (and so the stored runs) of rbf spaces bit for bit.
    sq = (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * (a @ b.T)).clamp_min(0)
    return torch.exp(-sq / (2.0 * bandwidth**2))


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Not the |a|^2 + |b|^2 - 2 a.b expansion: its rounding leaves r ~ 1e-8 between identical
    # points, and kernels of r itself (not r^2) would turn that into a visible error.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _matern(scaled: torch.Tensor, nu: float) -> torch.Tensor:
    s = math.sqrt(2.0 * nu) * scaled
    if nu == 0.5:
        poly = torch.ones_like(s)
    elif nu == 1.5:
        poly = 1.0 + s
    else:
        poly = 1.0 + s + s.square() / 3.0
    return poly * torch.exp(-s)


def _arccos(a: torch.Tensor, b: torch.Tensor, bias_variance: float) -> torch.Tensor:
    k0 = a @ b.T + bias_variance
    norm_a = (a.square().sum(1) + bias_variance).sqrt()
    norm_b = (b.square().sum(1) + bias_variance).sqrt()
    scale = norm_a[:, None] * norm_b[None, :]
    # A zero input (with no bias) has a zero feature vector; any angle gives k = 0 there.
    cos = torch.where(scale > 0, k0 / scale.clamp_min(torch.finfo(scale.dtype).tiny),
                      torch.zeros_like(k0)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    return scale * (torch.sin(theta) + (math.pi - theta) * cos) / math.pi
