"""The infinite-channel NNGP and NTK of ibdb's ``cnn`` space (gp ``kernel: nngp`` or ``ntk``
with ``architecture: cnn``), in float64 torch.

The network (runners/cnn.py) on an image ``x`` of ``C_0`` channels and ``H x W`` pixels:
``layers`` convolutions of ``channels`` filters of ``k x k`` (k = ``kernel_size``, odd; zero
padding ``k // 2`` keeps the size), each followed by relu and, with ``pooling: avg``, a 2x2
average pooling of stride 2 (``floor`` sizes, as ``F.avg_pool2d``); then a linear readout from
the flattened maps (``channels x H_L x W_L``) to the output. Every weight and bias starts with
mean 0 and variance ``init_scale^2 / (3 fan_in)`` (PyTorch's uniform on +-init_scale /
sqrt(fan_in)); a convolution's fan_in, for its filters and its bias alike, is ``in_channels k^2``
(PyTorch's for Conv2d, ibdb's ``ParamShape``), the readout's is ``channels H_L W_L``.

Notation: ``s2 = init_scale^2 / 3``; ``p, p'`` pixel positions; ``o`` runs over the ``k^2``
offsets of the filter, and a position outside the image contributes 0 (the zero padding).
For a pair of images ``(x, x')`` and every pair of positions the recursion tracks

- ``K_l(p, p')``: the covariance of layer l's pre-activations ``z_c(x, p), z_c(x', p')`` (any
  one channel c; channels are independent and alike in the limit),
- ``V_l(p, p')``: that of the activations after relu and pooling,
- (ntk) ``T_l(p, p')`` and ``A_l(p, p')``: the tangent kernels of the same quantities.

``K_1(p, p') = (s2 / k^2) sum_o S(p + o, p' + o) + s2 / (C_0 k^2)`` with
``S(p, p') = x(p).x'(p') / C_0`` (the channel-mean product; the first layer's bias has
variance ``s2 / (C_0 k^2)``, which stays in the limit). ``T_1 = K_1``.

relu, with ``cos t = K_l(p, p') / sqrt(K_l^x(p, p) K_l^{x'}(p', p'))`` (the variances are each
image's own, ``x`` with itself and ``x'`` with itself), the arc-cosine expectations for
``(u, u') ~ N(0, K)``:
``E[relu(u) relu(u')] = sqrt(K^x(p, p) K^{x'}(p', p')) (sin t + (pi - t) cos t) / (2 pi)`` and
``E[relu'(u) relu'(u')] = (pi - t) / (2 pi)``, elementwise in ``(p, p')``; the tangent kernel of
relu(z) is ``T_l(p, p') (pi - t) / (2 pi)``. Average pooling (linear) then averages both
positions over their 2x2 windows: ``V_l(q, q') = (1/16) sum_{a, a'} E[...](2q + a, 2q' + a')``,
and ``A_l`` the same of ``T_l (pi - t) / (2 pi)``. Without pooling ``V_l = E[...]``.

A convolution of ``channels`` inputs: ``K_{l+1}(p, p') = (s2 / k^2) sum_o V_l(p + o, p' + o)
+ beta`` (the same offset at both positions: different offsets, like different input channels,
have independent weights) and ``T_{l+1}(p, p') = (s2 / k^2) sum_o A_l(p + o, p' + o) +
K_{l+1}(p, p')`` (the earlier layers' parameters through the weights, plus this layer's own).

The readout, with independent weights for every flattened (channel, position): only
same-position terms survive, ``nngp = s2 mean_p V_L(p, p) + beta_out`` over the ``H_L W_L``
positions, and ``ntk = s2 mean_p A_L(p, p) + nngp``. ``beta = s2 / (channels k^2)`` and
``beta_out = s2 / (channels H_L W_L)`` are the hidden convolutions' and the readout's bias
variances; they vanish in the limit and are 0 unless ``channels`` is given (which keeps them and
nothing else of the finite width, as ``width`` does for the mlp kernels). The ntk is, as there,
the tangent kernel in the NTK parametrisation (every parameter ``sd_p w_p``, gradients with
respect to ``w_p``): Arora et al. 2019's CNTK with ibdb's init. The nngp is Novak et al. 2019's
and Garriga-Alonso et al. 2019's CNN-GP with the flatten readout.

Two caveats, as for the mlp kernels. The recursion takes the first layer's pre-activations to be
Gaussian, exact for Gaussian weights; ibdb's uniform weights make them sums of only
``C_0 k^2 + 1`` uniform terms (10 for a one-channel 3x3 filter), so the first relu's
off-diagonal expectations are those of a Gaussian approximation (the diagonal is exact for any
symmetric law); later layers are Gaussian in the limit whatever the weights' law. Measured at
one layer against 20000 random networks: on digits and on 4-channel random images within the
Monte Carlo error (0.2-0.4 %), on one-channel random normal 6x6 images 1.4 % off
(tests/run/test_kernels_cnn.py). And ibdb trains in the standard parametrisation, whose tangent
kernel does not converge to this one without rescaling (see kernels.py on the mlp's).

Max pooling has no closed form (the covariance of maxima of correlated Gaussians over windows is
not a function of a few covariances in closed form): it is refused.

Only the position pairs the readout needs are computed. The readout needs ``(p, p)`` only; a
convolution maps ``(p, p')`` to ``(p + o, p' + o)``, which keeps the displacement ``p' - p``,
and a pooling maps ``(q, q')`` to the pairs of their windows; so without pooling every layer
needs only the ``H W`` diagonal pairs (a pair of images costs what a locally connected network
does), and each pooling below the readout roughly doubles the displacements needed (8x8 digits,
two avg layers: 1600 of the 4096 pairs at the first relu, 64 of 256 at the second; three: all
4096 at the first). Those sets, and every map between them, factor into rows and columns: a
stage holds, for each image pair, an ``(n_rows, n_cols)`` array over the needed row pairs
``(y, y')`` and column pairs ``(x, x')``, and a pooling followed by the next convolution is one
small matrix on each side, ``M_r V M_c^T``. Each image's own variances come first, from the
same recursion on the image with itself. Then blocks of image pairs of about 2^18 elements
(2 MiB) go through the relu and the small matrix products on one thread
(``blocks.one_thread``): on a shared 2-core machine a second thread made these small
operations 10-20 times slower. When ``a`` and ``b`` are the same matrix only the blocks on and
above the diagonal are computed and the result is exactly symmetric. Cost on one core, 8x8
digits: 1100 x 1100 takes 15 s (nngp) and 20 s (ntk) with two avg layers, 1.5 s without
pooling, 45-50 s with three avg layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ibdb.runners import blocks

POOLINGS = ("none", "avg")  # max pooling has no closed form

Pair = tuple[int, int]


@dataclass(frozen=True)
class _Axis:
    """The rows (or the columns) of the recursion: for each layer l the position pairs
    ``(y, y')`` its relu needs, and the linear maps between the stages along this axis."""

    input_first: torch.Tensor  # (n_0,) y of the input's needed pairs
    input_second: torch.Tensor  # (n_0,) y'
    first_conv: torch.Tensor  # (n_1, n_0): sum over the offsets (0/1 entries)
    first: list[torch.Tensor]  # per layer, (n_l,) index of the pair (y, y) in the layer's list
    second: list[torch.Tensor]  # per layer, (n_l,) index of the pair (y', y')
    maps: list[torch.Tensor]  # per layer but the last: pooling, then the next convolution
    readout: torch.Tensor  # (n_L,): the weights of mean_q V(q, q) after the last pooling
    sizes: list[int]  # the grid of each layer's convolution, then the readout's


def _axis(size: int, layers: int, kernel_size: int, pooling: str) -> _Axis:
    half = kernel_size // 2
    pool = pooling == "avg"
    sizes = [size]
    for _ in range(layers):
        sizes.append(sizes[-1] // 2 if pool else sizes[-1])
    if sizes[-1] < 1:
        raise ValueError(f"{layers} layers of 2x2 pooling halve a size of {size} below one pixel")

    def pool_preimage(pairs: list[Pair]) -> list[Pair]:
        return sorted({(2 * q + a, 2 * r + b) for q, r in pairs for a in (0, 1) for b in (0, 1)})

    def conv_preimage(pairs: list[Pair], grid: int) -> list[Pair]:
        return sorted({(y + o, z + o) for y, z in pairs for o in range(-half, half + 1)
                       if 0 <= y + o < grid and 0 <= z + o < grid})

    # backwards from the readout: after[l] the pairs needed after layer l's pooling (the next
    # convolution's input; after[L] the readout's), relu[l] those before it (layer l's relu)
    after: list[list[Pair]] = [[] for _ in range(layers + 1)]
    relu: list[list[Pair]] = [[] for _ in range(layers)]
    after[layers] = [(q, q) for q in range(sizes[layers])]
    for layer in reversed(range(layers)):
        relu[layer] = pool_preimage(after[layer + 1]) if pool else after[layer + 1]
        after[layer] = conv_preimage(relu[layer], sizes[layer])

    def conv(rows: list[Pair], cols: list[Pair], grid: int) -> torch.Tensor:
        index = {pair: i for i, pair in enumerate(cols)}
        out = torch.zeros((len(rows), len(cols)), dtype=torch.float64)
        for i, (y, z) in enumerate(rows):
            for o in range(-half, half + 1):
                if 0 <= y + o < grid and 0 <= z + o < grid:
                    out[i, index[(y + o, z + o)]] += 1.0
        return out

    def pooling_map(rows: list[Pair], cols: list[Pair]) -> torch.Tensor:
        if not pool:
            return torch.eye(len(cols), dtype=torch.float64)  # rows == cols
        index = {pair: i for i, pair in enumerate(cols)}
        out = torch.zeros((len(rows), len(cols)), dtype=torch.float64)
        for i, (q, r) in enumerate(rows):
            for a in (0, 1):
                for b in (0, 1):
                    out[i, index[(2 * q + a, 2 * r + b)]] = 0.25
        return out

    def diagonal_of(pairs: list[Pair], which: int) -> torch.Tensor:
        index = {pair: i for i, pair in enumerate(pairs)}
        return torch.tensor([index[(pair[which], pair[which])] for pair in pairs])

    maps = [conv(relu[layer + 1], after[layer + 1], sizes[layer + 1])
            @ pooling_map(after[layer + 1], relu[layer]) for layer in range(layers - 1)]
    readout = pooling_map(after[layers], relu[layers - 1]).sum(0) / sizes[layers]
    return _Axis(
        input_first=torch.tensor([y for y, _ in after[0]]),
        input_second=torch.tensor([z for _, z in after[0]]),
        first_conv=conv(relu[0], after[0], sizes[0]),
        first=[diagonal_of(pairs, 0) for pairs in relu],
        second=[diagonal_of(pairs, 1) for pairs in relu],
        maps=maps, readout=readout, sizes=sizes)


@dataclass(frozen=True)
class _Network:
    rows: _Axis
    cols: _Axis
    in_channels: int
    layers: int
    s2: float  # init_scale^2 / 3
    conv_scale: float  # s2 / k^2
    first_bias: float  # s2 / (C_0 k^2)
    beta: float  # hidden convolutions' bias variance (0 in the limit)
    beta_out: float  # the readout's bias variance (0 in the limit)

    def to(self, device: torch.device) -> _Network:
        def move(axis: _Axis) -> _Axis:
            return _Axis(
                axis.input_first.to(device), axis.input_second.to(device),
                axis.first_conv.to(device), [t.to(device) for t in axis.first],
                [t.to(device) for t in axis.second], [t.to(device) for t in axis.maps],
                axis.readout.to(device), axis.sizes)
        return _Network(move(self.rows), move(self.cols), self.in_channels, self.layers,
                        self.s2, self.conv_scale, self.first_bias, self.beta, self.beta_out)

    @property
    def widest(self) -> int:
        """Elements per image pair at the widest stage."""
        return max(len(r) * len(c) for r, c in zip(
            [self.rows.input_first, *self.rows.first], [self.cols.input_first, *self.cols.first],
            strict=True))


def _network(image_shape: tuple[int, ...], *, layers: int, kernel_size: int, pooling: str,
             init_scale: float, channels: int | None) -> _Network:
    c0, height, width = image_shape
    rows = _axis(height, layers, kernel_size, pooling)
    cols = _axis(width, layers, kernel_size, pooling)
    s2 = init_scale**2 / 3.0
    k2 = kernel_size**2
    finite = channels is not None
    return _Network(
        rows=rows, cols=cols, in_channels=c0, layers=layers, s2=s2, conv_scale=s2 / k2,
        first_bias=s2 / (c0 * k2), beta=s2 / (channels * k2) if finite else 0.0,
        beta_out=s2 / (channels * rows.sizes[-1] * cols.sizes[-1]) if finite else 0.0)


def _sides(matrix_rows: torch.Tensor, v: torch.Tensor, matrix_cols: torch.Tensor
           ) -> torch.Tensor:
    """``M_r v M_c^T`` for every leading index of v (..., n_rows, n_cols)."""
    return torch.matmul(torch.matmul(matrix_rows, v), matrix_cols.T)


def _relu(k: torch.Tensor, scale: torch.Tensor, tangent: torch.Tensor | None
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """E[relu(u) relu(u')] of k (overwritten), and the tangent term ``tangent (pi - t) /
    (2 pi)`` (tangent overwritten), elementwise; ``scale`` = sqrt of the two variances."""
    cos = k.div_(scale).clamp_(-1.0, 1.0)
    remaining = torch.arccos(-cos)  # pi - t
    if tangent is not None:
        tangent.mul_(remaining).mul_(1.0 / (2.0 * math.pi))
    # sin t = sqrt((1 - cos)(1 + cos)), then (sin t + (pi - t) cos t) scale / (2 pi)
    sine = torch.sub(1.0, cos).mul_(cos + 1.0).clamp_min_(0.0).sqrt_()
    value = remaining.mul_(cos).add_(sine).mul_(scale).mul_(1.0 / (2.0 * math.pi))
    return value, tangent


def _first_layer(net: _Network, xa: torch.Tensor, xb: torch.Tensor | None) -> torch.Tensor:
    """K_1 for every pair (a, b) of rows of xa, xb (images gathered at the input's pairs, (n,
    C_0, n_rows, n_cols) at the first and at the second position); with ``xb`` None, for every
    image with itself (xa then holds both gathers: (2, n, C_0, ...))."""
    if xb is None:
        products = (xa[0] * xa[1]).sum(1)  # (n, rows, cols)
    else:
        products = torch.einsum("acyx,bcyx->abyx", xa, xb)
    products.mul_(1.0 / net.in_channels)
    k = _sides(net.rows.first_conv, products, net.cols.first_conv)
    return k.mul_(net.conv_scale).add_(net.first_bias)


def _gathered(net: _Network, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, C, H, W) at the first and at the second position of the input's pairs."""
    first = x[:, :, net.rows.input_first[:, None], net.cols.input_first[None, :]]
    second = x[:, :, net.rows.input_second[:, None], net.cols.input_second[None, :]]
    return first, second


def _deviations(net: _Network, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, each image's pre-activation standard deviations sqrt(K_l(p, p)) at the first
    and at the second position of every pair the layer needs: (n, n_rows, n_cols) each."""
    k = _first_layer(net, torch.stack(_gathered(net, x)), None)
    rows, cols = net.rows, net.cols
    out = []
    for layer in range(net.layers):
        first = k[:, rows.first[layer][:, None], cols.first[layer][None, :]].sqrt_()
        second = k[:, rows.second[layer][:, None], cols.second[layer][None, :]].sqrt_()
        out.append((first, second))
        if layer + 1 < net.layers:
            value, _ = _relu(k, first * second, None)
            k = _sides(rows.maps[layer], value, cols.maps[layer])
            k.mul_(net.conv_scale).add_(net.beta)
    return out


def _pair_block(net: _Network, xa: torch.Tensor, xb: torch.Tensor,
                sd_a: list[torch.Tensor], sd_b: list[torch.Tensor], tangent: bool
                ) -> torch.Tensor:
    """The (len(xa), len(xb)) block of the kernel: xa, xb gathered images, sd_a (sd_b) their
    deviations at the first (second) positions, per layer."""
    k = _first_layer(net, xa, xb)
    t = k.clone() if tangent else None
    for layer in range(net.layers):
        scale = sd_a[layer][:, None] * sd_b[layer][None, :]
        value, t = _relu(k, scale, t)
        del scale
        if layer + 1 < net.layers:
            maps = net.rows.maps[layer], net.cols.maps[layer]
            k = _sides(maps[0], value, maps[1]).mul_(net.conv_scale).add_(net.beta)
            if tangent:
                t = _sides(maps[0], t, maps[1]).mul_(net.conv_scale).add_(k)
    read_rows, read_cols = net.rows.readout, net.cols.readout
    out = torch.matmul(torch.matmul(value, read_cols), read_rows).mul_(net.s2).add_(
        net.beta_out)
    if tangent:
        out.add_(torch.matmul(torch.matmul(t, read_cols), read_rows).mul_(net.s2))
    return out


def _tiles(n_a: int, n_b: int, pairs: int) -> Iterator[tuple[slice, slice]]:
    """Blocks of about ``pairs`` image pairs covering an (n_a, n_b) matrix."""
    side_b = max(1, min(n_b, math.isqrt(pairs)))
    side_a = max(1, pairs // side_b)
    for start_a in range(0, n_a, side_a):
        for start_b in range(0, n_b, side_b):
            yield (slice(start_a, min(start_a + side_a, n_a)),
                   slice(start_b, min(start_b + side_b, n_b)))


def cnn_kernel_matrix(a: torch.Tensor, b: torch.Tensor, *, image_shape: tuple[int, ...],
                      layers: int, kernel_size: int, pooling: str, init_scale: float = 1.0,
                      channels: int | None = None, tangent: bool = False) -> torch.Tensor:
    """The (len(a), len(b)) nngp (or, with ``tangent``, ntk) matrix of the module docstring
    between the rows of ``a`` and ``b``, flat images: row i reshaped to ``image_shape``
    (channels, height, width) is image i (``TaskData``'s convention)."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"the cnn kernels need an image shape (channels, height, width); got "
                         f"{image_shape!r}")
    if a.shape[1] != math.prod(image_shape) or b.shape[1] != math.prod(image_shape):
        raise ValueError(f"inputs of {a.shape[1]} and {b.shape[1]} features are not images "
                         f"of shape {tuple(image_shape)}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r}: the cnn kernels take {' or '.join(POOLINGS)}; "
                         "max pooling has no closed-form infinite-width kernel")
    if layers is None or kernel_size is None or layers < 1 or kernel_size % 2 == 0:
        raise ValueError(f"the cnn kernels need layers >= 1 and an odd kernel_size; got "
                         f"{layers!r} and {kernel_size!r}")
    if not init_scale > 0 or (channels is not None and channels < 1):
        raise ValueError(f"the cnn kernels need init_scale > 0 and channels >= 1; got "
                         f"{init_scale!r} and {channels!r}")
    net = _network(tuple(image_shape), layers=layers, kernel_size=kernel_size, pooling=pooling,
                   init_scale=init_scale, channels=channels).to(a.device)
    images_a = a.reshape(-1, *image_shape)
    symmetric = a is b or (a.shape == b.shape and bool(torch.equal(a, b)))
    out = torch.empty((len(a), len(b)), dtype=torch.float64, device=a.device)
    per_block = (blocks.CPU_BLOCK_ELEMENTS if a.device.type == "cpu"
                 else blocks.DEVICE_BLOCK_ELEMENTS)
    with blocks.one_thread():
        first_a, second_b = _gathered(net, images_a)
        dev_a = dev_b = _deviations(net, images_a)
        if not symmetric:
            images_b = b.reshape(-1, *image_shape)
            second_b = _gathered(net, images_b)[1]
            dev_b = _deviations(net, images_b)
        sd_a = [first for first, _ in dev_a]
        sd_b = [second for _, second in dev_b]
        for rows, cols in _tiles(len(a), len(b), max(1, per_block // net.widest)):
            if symmetric and cols.stop <= rows.start:
                continue  # below the diagonal: the transpose of a block above it
            out[rows, cols] = _pair_block(net, first_a[rows], second_b[cols],
                                          [s[rows] for s in sd_a], [s[cols] for s in sd_b],
                                          tangent)
    if symmetric:
        # every entry on and above the diagonal was computed; the lower triangle becomes their
        # mirror (also where a block straddling the diagonal computed it), so that the matrix
        # is exactly symmetric
        for rows in blocks.row_blocks(len(a), len(a), a.device):
            block = out[rows, :rows.stop]
            i = torch.arange(rows.start, rows.stop, device=a.device)[:, None]
            below = torch.arange(rows.stop, device=a.device)[None, :] < i
            block.copy_(torch.where(below, out[:rows.stop, rows].T, block))
    return out
