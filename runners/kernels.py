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

Memory and threads: a kernel matrix is the largest object of a gp run (n_train^2 float64). Each
kernel makes it with one multithreaded call (a GEMM, or ``cdist``) and then transforms it in
place one block of rows at a time, every temporary the size of a block (2 MiB on a CPU, so that
the kernel's several elementwise passes run in cache). Those passes run on one thread: they are
cheap next to the GEMM, and on a CPU shared with other work every parallel region ends in a
barrier whose waiting thread spins, so splitting them across threads mostly buys spinning.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch

KERNELS = ("rbf", "laplace", "matern", "arccos")
MATERN_NUS = (0.5, 1.5, 2.5)

# Elements per block of rows: 2^18 float64 = 2 MiB, one core's L2 cache on the machines we
# measure; a GPU wants far larger launches, so it gets blocks of 2^24 elements (128 MiB).
CPU_BLOCK_ELEMENTS = 1 << 18
DEVICE_BLOCK_ELEMENTS = 1 << 24


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU operations inside on one thread (and restore the count after).

    For memory-bound elementwise passes: their second thread saves little wall time, and every
    parallel region costs a barrier at which a thread spins, which on a shared machine (whose
    other thread may be descheduled) inflates CPU time several fold. GEMMs stay parallel.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def row_blocks(n_rows: int, n_cols: int, device: torch.device) -> Iterator[slice]:
    """Slices of consecutive rows of an (n_rows, n_cols) matrix, about one block each."""
    per_block = CPU_BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    rows = max(1, per_block // max(1, n_cols))
    for start in range(0, n_rows, rows):
        yield slice(start, min(start + rows, n_rows))


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, *, kernel: str, bandwidth: float,
                  nu: float | None = None, bias_variance: float = 0.0) -> torch.Tensor:
    """The (len(a), len(b)) kernel matrix between the rows of ``a`` and ``b``."""
    if kernel == "rbf":
        return _rbf(a, b, bandwidth)
    if kernel == "laplace":
        return _in_blocks(_distance(a, b), lambda r: r.neg_().div_(bandwidth).exp_())
    if kernel == "matern":
        if nu not in MATERN_NUS:
            raise ValueError(f"matern nu must be one of {MATERN_NUS}; got {nu!r}")
        return _in_blocks(_distance(a, b), lambda r: _matern(r, bandwidth, nu))
    if kernel == "arccos":
        return _arccos(a / bandwidth, b / bandwidth, bias_variance)
    raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")


def _in_blocks(matrix: torch.Tensor, transform: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """Apply ``transform`` in place to each block of rows of ``matrix``, on one thread."""
    with one_thread():
        for rows in row_blocks(*matrix.shape, matrix.device):
            transform(matrix[rows])  # a row slice of a contiguous matrix is contiguous
    return matrix


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
