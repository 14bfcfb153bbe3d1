"""Kernel functions of the gp space, in float64 torch: the functions
:data:`ibdb.spec.kernels.KERNELS` names, each ``f(kernel, a, b, bandwidth=..., image_shape=...)``.

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
- ``nngp`` and ``ntk`` (no bandwidth): the infinite-width kernels of ibdb's own ``mlp`` space
  with ``activation: relu``. The network: input ``x`` in R^d, ``depth``
  hidden layers ``h_l = relu(h_{l-1} W_l + b_l)`` (``h_0 = x``) of ``width`` units, a linear
  output ``f = h_depth W + b``; every weight and bias starts with mean 0 and variance
  ``init_scale^2 / (3 fan_in)`` (PyTorch's uniform on +-init_scale / sqrt(fan_in)). With
  ``s2 = init_scale^2 / 3``: ``S_1 = s2 (x.x' + 1) / d`` (the first layer's bias keeps its
  variance ``s2 / d``), and for l = 1 .. depth, with ``cos t = S_l(x, x') / sqrt(S_l(x, x)
  S_l(x', x'))``,
  ``S_{l+1} = s2 sqrt(S_l(x, x) S_l(x', x')) (sin t + (pi - t) cos t) / (2 pi) + beta`` and
  ``D_{l+1} = s2 (pi - t) / (2 pi)`` (``s2`` times the arc-cosine expectations ``E[relu(u)
  relu(u')]`` and ``E[relu'(u) relu'(u')]`` for ``(u, u') ~ N(0, S_l)``). ``nngp`` is
  ``S_{depth+1}``, the covariance of the output over random initialisations as width -> inf
  (Lee et al. 2018); ``ntk`` is ``T_{depth+1}`` with ``T_1 = S_1`` and ``T_{l+1} = T_l D_{l+1} +
  S_{l+1}`` (Jacot et al. 2018): ``sum_p df(x)/dw_p df(x')/dw_p`` over every parameter ``p = sd_p
  w_p``, ``sd_p^2`` its initial variance, i.e. the tangent kernel in the NTK parametrisation,
  finite as width -> inf. ``beta``, the variance of the hidden and output layers' biases,
  ``s2 / width``, vanishes in the limit: 0 unless ``width`` is given (which keeps it and nothing
  else of the finite width). It matters at practical widths: each layer scales the signal by
  ``s2 / 2`` (1/6 at init_scale 1) but adds ``beta``, so on digits the width-256 networks'
  output covariance is the limit's x1.8 at depth 2 and x5.6 at depth 3; with ``width`` the two
  agree to Monte Carlo error (tests/run/test_kernels_nn.py). Two caveats. ibdb trains in the
  standard parametrisation (gradients with respect to ``p`` itself), whose tangent kernel grows
  like width: times ``s2 / width`` it tends to ``ntk`` less the first layer's term ``S_1 D_2 ...
  D_{depth+1}``, slowly (that term's share falls like d / width; the biases' terms vanish too).
  And the recursion takes the first layer's pre-activations to be Gaussian, exact for Gaussian
  weights; ibdb's uniform weights make them sums of d uniform terms, close to Gaussian when the
  inputs spread over many coordinates (digits: within 0.4 %; a few nonzero coordinates: tens of
  per cent), while later layers are Gaussian in the limit whatever the weights' law. The
  diagonal is exact either way.
- ``nngp`` and ``ntk`` with ``architecture="cnn"``: the same limits (infinitely many channels)
  of ibdb's ``cnn`` space, on images; their recursion and conventions are in ``cnn_kernels.py``.
- ``empirical_nngp`` and ``empirical_ntk``: a user's PyTorch model's own kernels at
  initialisation, by Monte Carlo; in ``empirical_kernels.py``.

Every kernel here is positive semi-definite for any bandwidth. The module never imports the
store; it holds pure functions of its arguments.

Memory and threads: see ``blocks.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ibdb.core.references import resolve
from ibdb.runners.blocks import in_blocks, one_thread, row_blocks
from ibdb.runners.cnn_kernels import cnn_kernel_matrix
from ibdb.spec.kernels import (
    KERNELS,
    ArcCosKernel,
    KernelSpec,
    LaplaceKernel,
    MaternKernel,
    NetworkKernel,
    RBFKernel,
    has_bandwidth,
)


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, *, kernel: str | KernelSpec,
                  bandwidth: float | None = None, image_shape: tuple[int, ...] | None = None,
                  input_shape: tuple[int, ...] | None = None, **fields: Any) -> torch.Tensor:
    """The (len(a), len(b)) kernel matrix between the rows of ``a`` and ``b``, by the
    registered kernel's function (:data:`ibdb.spec.kernels.KERNELS`).

    ``kernel`` is a validated kernel model, or a kernel's kind with its fields as keywords
    (``kernel_matrix(a, b, kernel="matern", nu=1.5, bandwidth=0.8)``). ``bandwidth`` is the
    length scale as a number, required by the kernels that have one (the runner resolves
    ``median`` and ``marginal_likelihood`` first); ``image_shape`` (channels, height, width;
    row i of ``a`` reshaped to it is image i) by the cnn's limits; ``input_shape`` (one
    example's natural shape, ``TaskData.input_shape``) by the kernels whose entry says
    ``input_shape=True`` (a model's own kernels; the others never see it)."""
    spec = kernel if isinstance(kernel, KernelSpec) else \
        KERNELS.get(kernel).model.model_validate({"kind": kernel, **fields})
    if has_bandwidth(spec) and bandwidth is None:
        raise ValueError(f"kernel {spec.kind!r} needs a bandwidth")
    if not has_bandwidth(spec) and bandwidth is not None:
        raise ValueError(f"kernel {spec.kind!r} takes no bandwidth (its scales are the "
                         "network's: init_scale and the input dimension)")
    entry = KERNELS.of(spec)
    extra = {"input_shape": input_shape} if entry.input_shape else {}
    return resolve(entry.matrix)(spec, a, b, bandwidth=bandwidth, image_shape=image_shape,
                                 **extra)


def rbf(kernel: RBFKernel, a: torch.Tensor, b: torch.Tensor, *, bandwidth: float,
        image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    return _rbf(a, b, bandwidth)


def laplace(kernel: LaplaceKernel, a: torch.Tensor, b: torch.Tensor, *, bandwidth: float,
            image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    return in_blocks(_distance(a, b), lambda r: r.neg_().div_(bandwidth).exp_())


def matern(kernel: MaternKernel, a: torch.Tensor, b: torch.Tensor, *, bandwidth: float,
           image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    return in_blocks(_distance(a, b), lambda r: _matern(r, bandwidth, kernel.nu))


def arccos(kernel: ArcCosKernel, a: torch.Tensor, b: torch.Tensor, *, bandwidth: float,
           image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    return _arccos(a / bandwidth, b / bandwidth, kernel.bias_variance or 0.0)


def network(kernel: NetworkKernel, a: torch.Tensor, b: torch.Tensor, *,
            bandwidth: float | None = None, image_shape: tuple[int, ...] | None = None
            ) -> torch.Tensor:
    """nngp or ntk: the mlp space's limit here, the cnn space's in ``cnn_kernels.py``."""
    tangent = kernel.kind == "ntk"
    if kernel.architecture == "cnn":
        if image_shape is None:
            raise ValueError(f"kernel {kernel.kind!r} with architecture cnn needs images: an "
                             "image_shape (channels, height, width)")
        return cnn_kernel_matrix(a, b, image_shape=image_shape, layers=kernel.layers,
                                 kernel_size=kernel.kernel_size, pooling=kernel.pooling,
                                 init_scale=kernel.init_scale, channels=kernel.channels,
                                 tangent=tangent)
    return _relu_network(a, b, depth=kernel.depth, init_scale=kernel.init_scale,
                         width=kernel.width, tangent=tangent)


def _rbf(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> torch.Tensor:
    # The expansion |a|^2 + |b|^2 - 2 a.b is what the gp runner has always used; the blocks
    # evaluate it in the same order, ((|a|^2 + |b|^2) - 2 (a.b)), clamped at 0, then
    # exp(-sq / (2 l^2)), so only the GEMM's summation order can move a last bit.
    sq_a, sq_b = a.square().sum(1), b.square().sum(1)
    denominator = 2.0 * bandwidth**2
    out = a @ b.T
    with one_thread():
        for rows in row_blocks(*out.shape, out.device):
            block = out[rows]
            norms = sq_a[rows, None] + sq_b[None, :]
            torch.sub(norms, block.mul_(2.0), out=block)  # doubling is exact
            block.clamp_min_(0.0).neg_().div_(denominator).exp_()
    return out


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Not the |a|^2 + |b|^2 - 2 a.b expansion: its rounding leaves r ~ 1e-8 between identical
    # points, and kernels of r itself (not r^2) would turn that into a visible error.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _matern(r: torch.Tensor, bandwidth: float, nu: float) -> None:
    """r (a block of distances) becomes the Matern kernel, in place."""
    s = r.div_(bandwidth).mul_(math.sqrt(2.0 * nu))  # s = sqrt(2 nu) (r / l)
    decay = torch.neg(s).exp_()
    if nu == 0.5:
        s.copy_(decay)
        return
    if nu == 1.5:
        s.add_(1.0).mul_(decay)  # (1 + s) exp(-s)
        return
    square = s.square().div_(3.0)
    s.add_(1.0).add_(square).mul_(decay)  # ((1 + s) + s^2 / 3) exp(-s)


def _arccos(a: torch.Tensor, b: torch.Tensor, bias_variance: float) -> torch.Tensor:
    # a and b are the inputs over the bandwidth
    norm_a = (a.square().sum(1) + bias_variance).sqrt()
    norm_b = (b.square().sum(1) + bias_variance).sqrt()
    tiny = torch.finfo(a.dtype).tiny
    out = a @ b.T
    with one_thread():
        for rows in row_blocks(*out.shape, out.device):
            k0 = out[rows].add_(bias_variance)
            scale = norm_a[rows, None] * norm_b[None, :]
            # A zero input (with no bias) has a zero feature vector; any angle gives k = 0 there.
            cos = torch.where(scale > 0, k0 / scale.clamp_min(tiny),
                              torch.zeros_like(k0)).clamp_(-1.0, 1.0)
            theta = torch.arccos(cos)
            # scale (sin t + (pi - t) cos t) / pi
            value = torch.sin(theta).add_(theta.neg_().add_(math.pi).mul_(cos))
            torch.mul(scale, value, out=k0).div_(math.pi)
    return out


def _relu_network(a: torch.Tensor, b: torch.Tensor, *, depth: int, init_scale: float,
                  width: int | None, tangent: bool) -> torch.Tensor:
    """The nngp (or, with ``tangent``, the ntk) matrix of the module docstring."""
    s2 = init_scale**2 / 3.0  # weight variance times fan_in
    n_inputs = a.shape[1]
    beta = 0.0 if width is None else s2 / width  # hidden and output layers' bias variance

    def variances(x: torch.Tensor) -> list[torch.Tensor]:
        # S_l(x, x) for l = 1 .. depth; E[relu(u)^2] = S / 2 for any symmetric u
        var = x.square().sum(1).add_(1.0).mul_(s2 / n_inputs)
        out = [var]
        for _ in range(depth - 1):
            var = var * (s2 / 2.0) + beta
            out.append(var)
        return out

    var_a, var_b = variances(a), variances(b)
    out = a @ b.T
    with one_thread():
        for rows in row_blocks(*out.shape, out.device):
            block = out[rows].add_(1.0).mul_(s2 / n_inputs)  # S_1
            # the ntk accumulates T in the output, its S in a block-sized temporary
            sigma = block.clone() if tangent else block
            for layer in range(depth):
                scale = torch.mul(var_a[layer][rows, None], var_b[layer][None, :]).sqrt_()
                cos = torch.div(sigma, scale).clamp_(-1.0, 1.0)
                # pi - t; for a point and itself cos = 1 - rounding and t ~ 1e-8, so ntk's
                # relu' term (pi - t) / (2 pi) is good to ~1e-9 relative there
                remaining = torch.arccos(cos).neg_().add_(math.pi)
                if tangent:
                    block.mul_(remaining).mul_(s2 / (2.0 * math.pi))  # T_l D_{l+1}
                # S_{l+1} = s2 scale (sin t + (pi - t) cos t) / (2 pi) + beta; sin t = sin(pi - t)
                value = torch.sin(remaining).add_(remaining.mul_(cos))
                torch.mul(scale, value, out=sigma).mul_(s2 / (2.0 * math.pi)).add_(beta)
                if tangent:
                    block.add_(sigma)
    return out
