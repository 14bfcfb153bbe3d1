"""The cnn kernels (gp ``kernel: nngp`` / ``ntk`` with ``architecture: cnn``) against Monte Carlo
of wide random CNNs with ibdb's architecture and init, and against an independent
implementation of the same recursion over every pair of positions.

The Monte Carlo oracle draws B networks with the parameter shapes and fan-ins of
runners/cnn.py's ``BatchedCNN`` (every weight and bias of variance init_scale^2 / (3 fan_in):
uniform on +-init_scale / sqrt(fan_in), as ibdb draws them, or Gaussian) and runs them as grouped
convolutions; test_the_oracle_is_ibdbs_cnn checks its outputs against ``BatchedCNN.forward`` and
its tangent kernel against explicit per-parameter gradients. Per network:

- nngp: the output covariance averaged exactly over the readout's weights and bias,
  ``s2 / (C h w) (h.h' + 1)`` with ``h`` the flattened last maps (``s2 = init_scale^2 / 3``): an
  unbiased, lower-variance estimate of the same covariance.
- ntk: ``sum_p sd_p^2 df(x)/dtheta_p df(x')/dtheta_p`` over every parameter (the tangent kernel
  in the NTK parametrisation): the readout's term is the nngp estimate's expression; a
  convolution's weights and bias give ``sd^2 sum_{q, q'} (patch(q).patch'(q') + 1)
  (delta(q).delta'(q'))`` with ``delta = df/dz`` at its pre-activations ``z`` (one backward pass
  serves every image: each output depends on its own image only).

Tolerance: the networks are independent, so an entry's Monte Carlo standard error is the spread
of the per-network values over sqrt(n_networks); an entry passes within Z = 4.5 standard errors,
plus, beyond one layer, ``FINITE_CHANNELS / channels`` of its value for the O(1/channels)
corrections that the kernel's ``channels`` (which keeps the biases' variances) does not hold.
Measured with Gaussian weights at two layers: 1.3-1.5 % at 4 channels (0.06 / channels), within
the Monte Carlo error (0.1-0.5 %) at 16, 64 and 256. One layer with Gaussian weights is exact at
any channel count (its pre-activations are Gaussian and its channels independent), so there the
tolerance is the standard errors alone. ibdb's uniform weights make the first layer's
pre-activations sums of C_0 k^2 + 1 uniform terms, not Gaussian: on 4-channel images (37 terms)
and on digits the difference is within the Monte Carlo error; on one-channel random normal
images (10 terms) the kernel is off by 1.4 % at one layer (cnn_kernels.py's caveat), so the
tests of ibdb's init use 4-channel images.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from sklearn.datasets import load_digits

from ibdb.cli import main
from ibdb.core.errors import SpecError
from ibdb.data.task import load_task
from ibdb.runners import blocks, cnn_kernels
from ibdb.runners.cnn import BatchedCNN
from ibdb.runners.compatibility import check_gp
from ibdb.runners.gp import GPRunner
from ibdb.runners.kernels import kernel_matrix
from ibdb.spec.file import load_experiment
from ibdb.spec.sources import Task
from ibdb.spec.spaces import GPSpace

from conftest import make_npz, spec_dict, write_spec

CPU = torch.device("cpu")
FINITE_CHANNELS = 0.5  # allowance, times |kernel| / channels, beyond one layer
Z = 4.5  # standard errors


def _kernel(x: np.ndarray, kernel: str = "nngp", b: np.ndarray | None = None,
            **params) -> np.ndarray:
    """The kernel between images x (n, C, H, W) (and b, else x itself)."""
    ta = torch.as_tensor(x.reshape(len(x), -1), dtype=torch.float64)
    tb = ta if b is None else torch.as_tensor(b.reshape(len(b), -1), dtype=torch.float64)
    return kernel_matrix(ta, tb, kernel=kernel, architecture="cnn", image_shape=x.shape[1:],
                         **params).numpy()


# -- the Monte Carlo oracle ---------------------------------------------------------------------

def _parameters(net: BatchedCNN, m: int, gen: torch.Generator, law: str, init_scale: float,
                dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """m networks' parameters in BatchedCNN's layout: uniform on +-init_scale/sqrt(fan_in), as
    ibdb's initial_parameters, or Gaussian of the same variance."""
    params = []
    for shape in net.parameter_shapes():
        bound = init_scale / math.sqrt(shape.fan_in)
        t = torch.empty((m, *shape.shape), dtype=dtype)
        if law == "uniform":
            t.uniform_(-bound, bound, generator=gen)
        else:
            t.normal_(0.0, bound / math.sqrt(3.0), generator=gen)
        params.append(t)
    return params


def _oracle(net: BatchedCNN, params: list[torch.Tensor], x: torch.Tensor, init_scale: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The m networks' outputs (m, n), and per network the nngp and ntk estimates (m, n, n)
    of the module docstring, for images x (n, C, H, W)."""
    m, n, k = params[0].shape[0], len(x), net.kernel_size
    variances = [init_scale**2 / (3.0 * s.fan_in) for s in net.parameter_shapes()]
    h = x.repeat(1, m, 1, 1)  # (n, m C, H, W): network b's channels are block b
    inputs, pre_activations = [], []
    for layer in range(net.layers):
        weight, bias = params[2 * layer], params[2 * layer + 1]
        c_in = weight.shape[1] // k**2
        filters = weight.transpose(1, 2).reshape(m * net.channels, c_in, k, k)
        z = F.conv2d(h, filters, bias.reshape(-1), padding=k // 2, groups=m)
        if layer == 0:
            z.requires_grad_()
        inputs.append(h.detach())
        pre_activations.append(z)
        h = torch.relu(z)
        if net.pool is not None:
            h = net.pool(h, 2)
    features = h.reshape(n, m, -1).transpose(0, 1)  # (m, n, C h w), BatchedCNN's flattening
    out = torch.baddbmm(params[-1], features, params[-2])[:, :, 0]
    flat = features.detach().double()
    nngp = variances[-2] * (flat @ flat.mT + 1.0)  # readout weights and bias alike
    deltas = torch.autograd.grad(out.sum(), pre_activations)
    ntk = nngp.clone()
    for layer, (h_in, delta) in enumerate(zip(inputs, deltas, strict=True)):
        c_in, positions = h_in.shape[1] // m, h_in.shape[2] * h_in.shape[3]
        patches = F.unfold(h_in, k, padding=k // 2).view(n, m, c_in * k * k, positions)
        patches = patches.permute(1, 0, 3, 2).reshape(m, n * positions, -1).double()
        d = delta.view(n, m, net.channels, positions).permute(1, 0, 3, 2)
        d = d.reshape(m, n * positions, net.channels).double()
        terms = (patches @ patches.mT + 1.0) * (d @ d.mT)
        ntk += variances[2 * layer] * terms.view(m, n, positions, n, positions).sum((2, 4))
    return out.detach(), nngp, ntk


def _random_cnns(x: np.ndarray, *, layers: int, channels: int, pooling: str,
                 init_scale: float = 1.0, kernel_size: int = 3, n_networks: int,
                 law: str = "uniform", seed: int = 0, batch: int = 50
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-network (n_networks, n, n) nngp and ntk estimates for the images x (n, C, H, W)."""
    net = BatchedCNN(x.shape[1:], channels, layers, kernel_size, pooling, 1, "relu")
    gen = torch.Generator().manual_seed(seed)
    images = torch.as_tensor(x, dtype=torch.float32)
    nngp, ntk = [], []
    with blocks.one_thread():  # small tensors: a second thread mostly spins
        for start in range(0, n_networks, batch):
            params = _parameters(net, min(batch, n_networks - start), gen, law, init_scale)
            _, a, b = _oracle(net, params, images, init_scale)
            nngp.append(a)
            ntk.append(b)
    return torch.cat(nngp).numpy(), torch.cat(ntk).numpy()


def _assert_agrees(estimates: np.ndarray, expected: np.ndarray, allowance: float) -> None:
    mean = estimates.mean(0)
    stderr = estimates.std(0, ddof=1) / math.sqrt(len(estimates))
    allowed = Z * stderr + allowance * np.abs(expected)
    worst = np.max(np.abs(mean - expected) / allowed)
    assert worst <= 1.0, (f"Monte Carlo disagrees: |mean - kernel| / allowed = {worst:.2f};\n"
                          f"mean {mean}\nkernel {expected}\nstderr {stderr}")
    # the estimate must be precise enough for the test to mean something (about 1 %)
    assert np.all(stderr < 0.01 * np.abs(expected))


def test_the_oracle_is_ibdbs_cnn():
    """The oracle's outputs are BatchedCNN.forward's for the same parameters, and its tangent
    kernel is the explicit sum over parameters of sd_p^2 (df/dtheta_p)(df'/dtheta_p), for two
    tiny float64 networks (3 channels, 2 layers, avg pooling, 2x5x4 images)."""
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(3, 2, 5, 4)))
    net = BatchedCNN((2, 5, 4), 3, 2, 3, "avg", 1, "relu")
    params = _parameters(net, 2, torch.Generator().manual_seed(2), "uniform", 1.3,
                         torch.float64)
    out, _, ntk = _oracle(net, params, x, 1.3)
    leaves = [p.clone().requires_grad_() for p in params]
    reference = net.forward(leaves, x.expand(2, *x.shape))[:, :, 0]
    np.testing.assert_allclose(out.numpy(), reference.detach().numpy(), rtol=1e-12)
    variances = [1.3**2 / (3.0 * s.fan_in) for s in net.parameter_shapes()]
    for b in range(2):
        grads = [torch.cat([(g[b] * math.sqrt(v)).flatten() for g, v in zip(torch.autograd.grad(
            reference[b, i], leaves, retain_graph=True), variances, strict=True)])
            for i in range(3)]
        explicit = torch.stack(grads) @ torch.stack(grads).T
        np.testing.assert_allclose(ntk[b].numpy(), explicit.numpy(), rtol=1e-10)


@pytest.mark.parametrize(("pooling", "shape"), [("none", (1, 6, 6)), ("avg", (2, 4, 4))])
def test_one_layer_is_exact_for_gaussian_weights(pooling, shape):
    """One layer of 8 channels with Gaussian weights: the kernels (with ``channels``) are the
    networks' expected output covariance and tangent kernel exactly; 8000 networks."""
    x = np.random.default_rng(3).normal(size=(4, *shape))
    params = {"layers": 1, "pooling": pooling, "init_scale": 1.2}
    nngp, ntk = _random_cnns(x, channels=8, n_networks=8000, law="gaussian", batch=500,
                             **params)
    _assert_agrees(nngp, _kernel(x, channels=8, **params), 0.0)
    _assert_agrees(ntk, _kernel(x, "ntk", channels=8, **params), 0.0)


@pytest.mark.parametrize("pooling", ["none", "avg"])
def test_two_layers_match_wide_networks_with_ibdbs_init(pooling):
    """Two layers of 64 channels, ibdb's uniform init at init_scale 1.5, 4x4x4 images: 2000
    networks give standard errors of ~0.5 % of each entry."""
    x = np.random.default_rng(4).normal(size=(4, 4, 4, 4))
    params = {"layers": 2, "pooling": pooling, "init_scale": 1.5}
    nngp, ntk = _random_cnns(x, channels=64, n_networks=2000, seed=5, **params)
    _assert_agrees(nngp, _kernel(x, channels=64, **params), FINITE_CHANNELS / 64)
    _assert_agrees(ntk, _kernel(x, "ntk", channels=64, **params), FINITE_CHANNELS / 64)


@pytest.mark.slow
@pytest.mark.parametrize(("pooling", "law"), [("avg", "uniform"), ("none", "uniform"),
                                              ("avg", "gaussian")])
def test_kernels_are_the_limit_of_256_channel_networks_on_digits(pooling, law):
    """Two layers of 256 channels on four 8x8 digits, 600 networks (standard errors ~0.5 %)."""
    images = load_digits().data / 16.0
    x = images[np.random.default_rng(6).choice(len(images), 4, replace=False)]
    x = x.reshape(4, 1, 8, 8)
    params = {"layers": 2, "pooling": pooling, "init_scale": 1.0}
    nngp, ntk = _random_cnns(x, channels=256, n_networks=600, law=law, batch=10, **params)
    _assert_agrees(nngp, _kernel(x, channels=256, **params), FINITE_CHANNELS / 256)
    _assert_agrees(ntk, _kernel(x, "ntk", channels=256, **params), FINITE_CHANNELS / 256)


# -- the recursion itself -----------------------------------------------------------------------

def _every_pair(x: torch.Tensor, *, layers: int, kernel_size: int, pooling: str,
                init_scale: float, channels: int | None, tangent: bool) -> torch.Tensor:
    """The module docstring's recursion over every pair of positions, (n, n, H, W, H, W)
    tensors for the n images x: independent of cnn_kernels' bookkeeping of the pairs needed."""
    n, c0 = x.shape[:2]
    s2, k, half = init_scale**2 / 3.0, kernel_size, kernel_size // 2

    def conv(v: torch.Tensor) -> torch.Tensor:  # the same offset at both positions
        h, w = v.shape[2:4]
        padded = F.pad(v, (half,) * 8)
        return sum(padded[:, :, i:i + h, j:j + w, i:i + h, j:j + w]
                   for i in range(k) for j in range(k)) * (s2 / k**2)

    def pool(v: torch.Tensor) -> torch.Tensor:
        h, w = v.shape[2] // 2, v.shape[3] // 2
        v = v[:, :, :2 * h, :2 * w, :2 * h, :2 * w]
        return v.reshape(n, n, h, 2, w, 2, h, 2, w, 2).mean((3, 5, 7, 9))

    beta = 0.0 if channels is None else s2 / (channels * k**2)
    sigma = conv(torch.einsum("acyx,bczw->abyxzw", x, x) / c0) + s2 / (c0 * k**2)
    theta = sigma.clone()
    for layer in range(layers):
        h, w = sigma.shape[2:4]
        variance = torch.stack([sigma[i, i].reshape(h * w, h * w).diagonal() for i in range(n)])
        variance = variance.reshape(n, h, w)
        scale = (variance[:, None, :, :, None, None] * variance[None, :, None, None]).sqrt()
        cos = (sigma / scale).clamp(-1.0, 1.0)
        angle = torch.arccos(cos)
        value = scale * (torch.sin(angle) + (math.pi - angle) * cos) / (2 * math.pi)
        derivative = theta * (math.pi - angle) / (2 * math.pi)
        if pooling == "avg":
            value, derivative = pool(value), pool(derivative)
        if layer + 1 < layers:
            sigma = conv(value) + beta
            theta = conv(derivative) + sigma
    h, w = value.shape[2:4]
    beta_out = 0.0 if channels is None else s2 / (channels * h * w)

    def readout(v: torch.Tensor) -> torch.Tensor:
        return s2 * v.reshape(n, n, h * w, h * w).diagonal(dim1=2, dim2=3).mean(-1)

    out = readout(value) + beta_out
    return out + readout(derivative) if tangent else out


@pytest.mark.parametrize(("shape", "params"), [
    ((1, 6, 6), {"layers": 1, "kernel_size": 3, "pooling": "none"}),
    ((2, 5, 7), {"layers": 2, "kernel_size": 3, "pooling": "avg", "channels": 7}),
    ((1, 8, 8), {"layers": 3, "kernel_size": 3, "pooling": "avg"}),
    ((1, 6, 5), {"layers": 2, "kernel_size": 5, "pooling": "none", "channels": 16}),
    ((3, 4, 4), {"layers": 2, "kernel_size": 1, "pooling": "avg"}),
    ((1, 9, 9), {"layers": 2, "kernel_size": 3, "pooling": "avg", "init_scale": 0.7}),
])
@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_only_the_pairs_needed_give_the_recursion_over_every_pair(shape, params, kernel):
    """Odd sizes (pooling drops the last row), 1x1, 3x3 and 5x5 filters, up to 3 layers."""
    x = np.random.default_rng(7).normal(size=(5, *shape))
    full = _every_pair(torch.as_tensor(x), init_scale=params.get("init_scale", 1.3),
                       channels=params.get("channels"), layers=params["layers"],
                       kernel_size=params["kernel_size"], pooling=params["pooling"],
                       tangent=kernel == "ntk").numpy()
    params = {"init_scale": 1.3, **params}
    # ntk: the angle of a position with itself is arccos(1 - rounding) ~ 1e-8, so its relu'
    # term is good to ~1e-9 relative in either implementation
    rtol = 1e-12 if kernel == "nngp" else 1e-8
    np.testing.assert_allclose(_kernel(x, kernel, **params), full, rtol=rtol)
    np.testing.assert_allclose(_kernel(x[:2], kernel, b=x, **params), full[:2], rtol=rtol)


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
@pytest.mark.parametrize("depth", [1, 3])
def test_one_pixel_images_with_1x1_filters_are_the_mlp(kernel, depth):
    """On (d, 1, 1) images a cnn of 1x1 filters without pooling is an mlp of width channels."""
    x = np.random.default_rng(8).normal(size=(6, 5))
    t = torch.as_tensor(x)
    mlp = kernel_matrix(t, t, kernel=kernel, depth=depth, width=12, init_scale=1.4)
    cnn = _kernel(x.reshape(6, 5, 1, 1), kernel, layers=depth, kernel_size=1, pooling="none",
                  channels=12, init_scale=1.4)
    # (ntk: an image's angle with itself, arccos(1 - rounding), is good to ~1e-9 relative)
    np.testing.assert_allclose(cnn, mlp.numpy(), rtol=1e-12 if kernel == "nngp" else 1e-8)


def _digits(n: int, seed: int) -> np.ndarray:
    images = load_digits().data / 16.0
    return images[np.random.default_rng(seed).choice(len(images), n, replace=False)]


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
@pytest.mark.parametrize("params", [{"layers": 2, "pooling": "avg"},
                                    {"layers": 3, "pooling": "none", "init_scale": 2.0},
                                    {"layers": 1, "pooling": "avg", "channels": 16}])
def test_kernel_matrices_are_symmetric_and_positive_semidefinite(kernel, params):
    a, b = _digits(60, 9).reshape(60, 1, 8, 8), _digits(7, 10).reshape(7, 1, 8, 8)
    k = _kernel(a, kernel, **params, kernel_size=3)
    np.testing.assert_array_equal(k, k.T)
    assert np.linalg.eigvalsh(k).min() > -1e-12 * np.abs(k).max()
    cross = _kernel(a, kernel, b=b, kernel_size=3, **params)
    np.testing.assert_allclose(cross, _kernel(b, kernel, b=a, kernel_size=3, **params).T,
                               rtol=1e-13)
    np.testing.assert_allclose(cross[:7], _kernel(a[:7], kernel, b=b, kernel_size=3, **params),
                               rtol=1e-13)


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_the_same_in_any_number_of_blocks(kernel, monkeypatch):
    a, b = _digits(23, 11).reshape(23, 1, 8, 8), _digits(17, 12).reshape(17, 1, 8, 8)
    params = {"layers": 2, "kernel_size": 3, "pooling": "avg", "channels": 32}
    whole, square = _kernel(a, kernel, b=b, **params), _kernel(a, kernel, **params)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 7)
    np.testing.assert_allclose(_kernel(a, kernel, b=b, **params), whole, rtol=1e-14)
    np.testing.assert_allclose(_kernel(a, kernel, **params), square, rtol=1e-14)


def test_infinitely_many_channels_is_the_limit_of_channels():
    x = _digits(5, 13).reshape(5, 1, 8, 8)
    for kernel in ("nngp", "ntk"):
        params = {"layers": 3, "kernel_size": 3, "pooling": "avg"}
        limit = _kernel(x, kernel, **params)
        np.testing.assert_allclose(_kernel(x, kernel, channels=10**15, **params), limit,
                                   rtol=1e-8)
        assert np.all(_kernel(x, kernel, channels=64, **params) > limit)


def test_kernel_matrix_arguments():
    x = torch.zeros((2, 16), dtype=torch.float64)
    cnn = {"kernel": "nngp", "architecture": "cnn", "layers": 1, "kernel_size": 3}
    with pytest.raises(ValueError, match="pooling max has no closed-form"):
        kernel_matrix(x, x, **cnn, image_shape=(1, 4, 4), pooling="max")
    with pytest.raises(ValueError, match="needs images: an image_shape"):
        kernel_matrix(x, x, **cnn, pooling="avg")
    with pytest.raises(ValueError, match="are not images of shape"):
        kernel_matrix(x, x, **cnn, image_shape=(1, 3, 3), pooling="avg")
    with pytest.raises(ValueError, match="takes layers .* not depth = 2"):
        kernel_matrix(x, x, **cnn, image_shape=(1, 4, 4), pooling="avg", depth=2)
    with pytest.raises(ValueError, match="takes no bandwidth"):
        kernel_matrix(x, x, **cnn, image_shape=(1, 4, 4), pooling="avg", bandwidth=1.0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        kernel_matrix(x, x, **{**cnn, "kernel_size": 2}, image_shape=(1, 4, 4), pooling="avg")
    with pytest.raises(ValueError, match="below one pixel"):
        kernel_matrix(x, x, **{**cnn, "layers": 3}, image_shape=(1, 4, 4), pooling="avg")
    # a zero image still has the first layer's bias: a finite, positive kernel
    assert torch.all(kernel_matrix(x, x, **cnn, image_shape=(1, 4, 4), pooling="avg") > 0)
    assert cnn_kernels.POOLINGS == ("none", "avg")


# -- the spec and the gp runner -----------------------------------------------------------------

CNN = {"kernel": "nngp", "architecture": "cnn", "layers": 2, "pooling": "avg"}


@pytest.mark.parametrize(("fields", "message"), [
    ({**CNN, "pooling": "max"}, "pooling max has no closed-form infinite-width kernel"),
    ({"kernel": "ntk", "architecture": "cnn", "layers": 2}, "needs pooling: none or avg"),
    ({"kernel": "nngp", "architecture": "cnn", "pooling": "none"}, "needs layers"),
    ({**CNN, "depth": 2}, "takes layers .* not depth = 2"),
    ({**CNN, "width": 64}, "takes channels .* not width = 64"),
    ({**CNN, "kernel_size": 4}, "kernel_size must be odd"),
    ({**CNN, "bandwidth": 1.0}, "bandwidth = 1.0 applies to kernels 'rbf', 'laplace'"),
    ({**CNN, "activation": "tanh"}, "relu only"),
    ({**CNN, "channels": 0}, "greater than 0"),
    ({**CNN, "architecture": "transformer"}, "'mlp' or 'cnn'"),
    ({"kernel": "nngp", "depth": 2, "layers": 2}, "layers = 2 applies only to architecture cnn"),
    ({"kernel": "ntk", "depth": 2, "channels": 8}, "channels = 8 applies only to architecture"),
    ({"kernel": "rbf", "architecture": "cnn"}, "architecture = 'cnn' applies to kernels "
                                               "'nngp' and 'ntk', not to 'rbf'"),
    ({"kernel": "rbf", "pooling": "avg"}, "pooling = 'avg' applies to kernels 'nngp' and "
                                          "'ntk', not to 'rbf'"),
    ({"kernel": "nngp", "architecture": "mlp"}, "kernel 'nngp' needs depth"),
])
def test_space_parameters_are_checked_against_the_architecture(fields, message):
    with pytest.raises(ValueError, match=message):
        GPSpace(name="g", **fields)


def test_space_identities():
    identity = GPSpace(name="g", **CNN).identity()
    assert identity == {"kind": "gp", "kernel": "nngp", "jitter": 1e-8, "init_scale": 1.0,
                        "activation": "relu", "architecture": "cnn", "layers": 2,
                        "kernel_size": 3, "pooling": "avg"}
    # writing the defaults out is the same space (and run id)
    explicit = GPSpace(name="g", **CNN, kernel_size=3, init_scale=1.0, activation="relu")
    assert explicit.identity() == identity
    wide = GPSpace(name="g", **CNN, channels=128)
    assert GPSpace.model_validate(wide.model_dump()) == wide
    assert wide.identity()["channels"] == 128
    # the mlp kernels' and the other kernels' identities are what they were before
    # architecture
    mlp = {"kind": "gp", "kernel": "ntk", "jitter": 1e-8, "depth": 2, "init_scale": 1.0,
           "activation": "relu"}
    for space in (GPSpace(name="g", kernel="ntk", depth=2),
                  GPSpace(name="g", kernel="ntk", depth=2, architecture="mlp")):
        assert space.identity() == mlp
        assert space.kernel.architecture == "mlp"
    assert GPSpace(name="g").identity() == {
        "kind": "gp", "kernel": "rbf", "bandwidth": 1.0, "jitter": 1e-8}


def _image_task(folder, *, flat: bool = False, n_train: int = 20, n_test: int = 15):
    """tests/run/test_runners_contract.py's tiny task: two-channel 4x4 images (or flat)."""
    make_npz(folder / "flat.npz", n_train=n_train, n_test=n_test, n_classes=3, n_features=32)
    with np.load(folder / "flat.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    if not flat:
        for name in ("X_train", "X_test"):
            arrays[name] = arrays[name].reshape(-1, 2, 4, 4)
    np.savez(folder / "d.npz", **arrays)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": "d.npz"},
                                "n_train": n_train, "n_test": n_test, "eps": [0.1]})
    return load_task(task, spec_dir=folder)


def test_a_flat_task_is_refused(tmp_path):
    data = _image_task(tmp_path, flat=True)
    space = GPSpace(name="g", **CNN)
    with pytest.raises(SpecError, match=r"space 'g' \(kind gp, kernel nngp with architecture "
                                        r"cnn\): a CNN needs image data"):
        check_gp(space, data)
    with pytest.raises(SpecError, match="a CNN needs image data"):
        GPRunner(space, data, device=CPU)
    deep = GPSpace(name="g", **{**CNN, "layers": 3})
    with pytest.raises(SpecError, match="below one pixel"):
        GPRunner(deep, _image_task(tmp_path), device=CPU)
    check_gp(GPSpace(name="g", kernel="nngp", depth=2), data)  # the mlp's limit takes flat data


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_gp_runner_with_cnn_kernels(tmp_path, kernel):
    data = _image_task(tmp_path)
    space = GPSpace(name="g", **{**CNN, "kernel": kernel}, channels=32, jitter=1e-10)
    runner = GPRunner(space, data, device=CPU)
    info = runner.info
    assert (info["kernel"], info["architecture"], info["layers"], info["pooling"],
            info["kernel_size"], info["channels"], info["image_shape"]) == (
        kernel, "cnn", 2, "avg", 3, 32, [2, 4, 4])
    assert info["interpolates"] and "bandwidth" not in info and "depth" not in info
    x_train = data.x_train.reshape(-1, 2, 4, 4)
    params = {"layers": 2, "kernel_size": 3, "pooling": "avg", "channels": 32}
    k_train = _kernel(x_train, kernel, **params)
    alpha = np.linalg.solve(k_train + 1e-10 * np.eye(len(x_train)), data.y_train)
    cross = _kernel(data.x_test.reshape(-1, 2, 4, 4), kernel, b=x_train, **params)
    np.testing.assert_allclose(runner.mean.numpy(), cross @ alpha, atol=1e-6, rtol=0)
    losses = runner.sample(np.arange(4), np.arange(4) + 11)
    assert np.isfinite(losses["test_mse"]).all()


def test_end_to_end_run_on_an_image_task(tmp_path):
    """ibdb run of a spec with both cnn kernels on a tiny image task."""
    _image_task(tmp_path, n_train=30, n_test=20)
    spec = spec_dict(source={"kind": "npz", "path": "d.npz"}, n_hypotheses=64, chunk_size=32)
    spec["spaces"] = [{"name": f"cnn-{kernel}", "kind": "gp", "kernel": kernel,
                       "architecture": "cnn", "layers": 2, "pooling": "avg", "channels": 16,
                       "jitter": 1e-10} for kernel in ("nngp", "ntk")]
    path = write_spec(tmp_path, spec)
    (first, _) = load_experiment(path).runs()
    assert first.space.kernel.architecture == "cnn"
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "x.duckdb"), "--shards",
                                       str(tmp_path / "shards"), "--device", "cpu", "run",
                                       str(path)])
    assert result.exit_code == 0, result.output
    assert "2 sampled" in result.output
    assert result.output.count("expected test MSE") == 2
    assert "does not interpolate" not in result.output
