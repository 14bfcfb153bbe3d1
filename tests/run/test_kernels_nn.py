"""The nngp and ntk kernels against Monte Carlo of wide random relu MLPs with ibdb's init.

The oracle builds random networks exactly as the mlp space initialises them (every weight and
bias uniform on +-init_scale/sqrt(fan_in), or Gaussian of the same variance), and never uses the
arc-cosine recursion:

- nngp: the covariance of the output over random networks. Each network contributes its
  covariance averaged exactly over its output layer's weights and bias, ``s2 / width (h.h' + 1)``
  with ``h`` the last hidden layer (``s2 = init_scale^2 / 3``): the mean of ``f(x) f(x')`` over
  the output layer, so an unbiased, lower-variance estimate of the same covariance.
- ntk: each network's tangent kernel in the NTK parametrisation, ``sum_p df(x)/dw_p df(x')/dw_p``
  with every parameter written ``sd_p w_p`` (``sd_p^2`` its initial variance) and the gradients
  taken by autograd with respect to the ``w_p``; averaged over networks.

Tolerance: the networks are independent, so each entry's Monte Carlo standard error is the
spread of the per-network values over sqrt(n_networks); an entry passes within 4.5 standard
errors plus ``FINITE_WIDTH / width`` of its value, the allowance for the O(1/width) finite-width
corrections beyond the biases (which the kernel's ``width`` keeps; measured at width 256 and
depth 2 with Gaussian weights, about 2/width).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ibdb.core.references import resolve
from ibdb.data.task import load_task
from ibdb.runners import blocks
from ibdb.runners.gp import GPRunner
from ibdb.runners.kernels import kernel_matrix
from ibdb.spec.file import load_experiment
from ibdb.spec.kernels import KERNELS
from ibdb.spec.sources import Task
from ibdb.spec.spaces import GPSpace

from conftest import make_npz, spec_dict, write_spec

CPU = torch.device("cpu")
FINITE_WIDTH = 3.0  # allowance, times |kernel| / width, for finite-width corrections
Z = 4.5  # standard errors


def _digits(n: int, seed: int) -> np.ndarray:
    """n 8x8 digits images (d = 64) scaled to [0, 1], as the digits task sees them."""
    images = load_digits().data / 16.0
    return images[np.random.default_rng(seed).choice(len(images), n, replace=False)]


def _draw(shape: tuple[int, ...], gen: torch.Generator, law: str, sd: float = 1.0
          ) -> torch.Tensor:
    """float32 draws of standard deviation sd: uniform on +-sqrt(3) sd (PyTorch's init law at
    sd = init_scale / sqrt(3 fan_in)) or normal."""
    if law == "uniform":
        return torch.empty(shape).uniform_(-math.sqrt(3.0) * sd, math.sqrt(3.0) * sd,
                                           generator=gen)
    return torch.empty(shape).normal_(0.0, sd, generator=gen)


def _random_networks(x: np.ndarray, *, depth: int, width: int, init_scale: float,
                     n_networks: int, law: str = "uniform", seed: int = 0,
                     batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per-network (n_networks, P, P) nngp and ntk estimates for the P inputs ``x``; one output
    unit, ``depth`` hidden relu layers of ``width`` units.

    A dense layer ``z = h (sd W) + sd' b`` has ``df/dW_ij = sd h_i delta_j`` and ``df/db_j = sd'
    delta_j`` with ``delta = df/dz`` (one backward pass), so its tangent-kernel term is
    ``sd^2 (h.h') (delta.delta') + sd'^2 delta.delta'`` (checked against explicit per-parameter
    gradients by test_the_oracles_tangent_kernel_is_the_gradient_inner_product)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.as_tensor(x, dtype=torch.float32)
    n_points, n_inputs = inputs.shape
    s2 = init_scale**2 / 3.0
    sizes = [n_inputs] + [width] * depth + [1]
    nngp, ntk = [], []
    with blocks.one_thread():  # small tensors: a second thread mostly spins
        for start in range(0, n_networks, batch):
            m = min(batch, n_networks - start)
            h = inputs.expand(m, n_points, n_inputs)
            layer_inputs, pre_activations, variances = [], [], []
            for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                variances.append(s2 / fan_in)  # of every weight and bias of the layer
                sd = math.sqrt(variances[-1])
                weight = _draw((m, fan_in, fan_out), gen, law, sd)
                bias = _draw((m, 1, fan_out), gen, law, sd)
                layer_inputs.append(h.detach().double())
                z = torch.baddbmm(bias, h, weight)
                if layer == 0:
                    z.requires_grad_()
                pre_activations.append(z)
                h = torch.relu(z) if layer < depth else z
            last = layer_inputs[-1]
            nngp.append(s2 / width * (last @ last.mT + 1.0))  # mean over the output layer
            # output p of network i depends on row p of network i's z only, so the gradient of
            # the sum of all outputs holds every df(x_p)/dz(x_p)
            deltas = torch.autograd.grad(h.sum(), pre_activations)
            kernel = torch.zeros((m, n_points, n_points), dtype=torch.float64)
            for h_in, delta, variance in zip(layer_inputs, deltas, variances, strict=True):
                delta = delta.double()
                kernel += variance * (h_in @ h_in.mT + 1.0) * (delta @ delta.mT)
            ntk.append(kernel)
    return torch.cat(nngp).numpy(), torch.cat(ntk).numpy()


def _kernel(x: np.ndarray, kernel: str, **params) -> np.ndarray:
    t = torch.as_tensor(x, dtype=torch.float64)
    return kernel_matrix(t, t, kernel=kernel, **params).numpy()


def _assert_agrees(estimates: np.ndarray, expected: np.ndarray, width: int) -> None:
    mean = estimates.mean(0)
    stderr = estimates.std(0, ddof=1) / math.sqrt(len(estimates))
    allowed = Z * stderr + FINITE_WIDTH / width * np.abs(expected)
    worst = np.max(np.abs(mean - expected) / allowed)
    assert worst <= 1.0, (f"Monte Carlo disagrees: |mean - kernel| / allowed = {worst:.2f};\n"
                          f"mean {mean}\nkernel {expected}\nstderr {stderr}")
    # the estimate must be precise enough for the test to mean something (about 1 %)
    assert np.all(stderr < 0.01 * np.abs(expected))


def test_nngp_and_ntk_match_random_networks_with_ibdbs_init():
    """depth 2, width 512, ibdb's uniform init at init_scale 1.5, on digits images: 2048
    networks give standard errors of ~0.25 % of each entry."""
    x = _digits(4, 0)
    depth, width, scale = 2, 512, 1.5
    nngp, ntk = _random_networks(x, depth=depth, width=width, init_scale=scale,
                                 n_networks=2048, batch=32)
    params = {"depth": depth, "init_scale": scale, "width": width}
    _assert_agrees(nngp, _kernel(x, "nngp", **params), width)
    _assert_agrees(ntk, _kernel(x, "ntk", **params), width)


def test_depth_one_is_exact_at_any_width_for_gaussian_weights():
    """With Gaussian weights a depth-1 network's output covariance and expected tangent kernel
    are the kernels with ``width`` exactly, at width 8 (no finite-width allowance needed)."""
    x = np.random.default_rng(3).normal(size=(4, 5))
    nngp, ntk = _random_networks(x, depth=1, width=8, init_scale=0.8, n_networks=40_000,
                                 law="gaussian", batch=4000)
    for estimates, kernel in ((nngp, "nngp"), (ntk, "ntk")):
        expected = _kernel(x, kernel, depth=1, init_scale=0.8, width=8)
        stderr = estimates.std(0, ddof=1) / math.sqrt(len(estimates))
        assert np.all(np.abs(estimates.mean(0) - expected) <= Z * stderr), kernel


@pytest.mark.slow
@pytest.mark.parametrize(("depth", "law"), [(2, "uniform"), (2, "gaussian"), (3, "uniform")])
def test_kernels_are_the_limit_of_width_4096_networks(depth, law):
    """Width 4096 (the biases' variance s2/4096 kept by ``width``), 128 networks: standard
    errors ~0.4 %, finite-width allowance 0.07 %."""
    x = _digits(4, 1)
    nngp, ntk = _random_networks(x, depth=depth, width=4096, init_scale=1.0, n_networks=128,
                                 law=law, batch=2, seed=depth)
    _assert_agrees(nngp, _kernel(x, "nngp", depth=depth, width=4096), 4096)
    _assert_agrees(ntk, _kernel(x, "ntk", depth=depth, width=4096), 4096)


def test_the_oracles_tangent_kernel_is_the_gradient_inner_product():
    """The oracle's stacked autograd gradients against one network's explicit torch.nn
    parameters, for a tiny network (width 3, depth 2)."""
    x = np.random.default_rng(4).normal(size=(3, 2))
    _, ntk = _random_networks(x, depth=2, width=3, init_scale=1.0, n_networks=1, seed=5)
    gen = torch.Generator().manual_seed(5)  # the same draws, in the same order
    sizes, s2 = [2, 3, 3, 1], 1.0 / 3.0
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        for shape in ((1, fan_in, fan_out), (1, 1, fan_out)):
            params.append((_draw(shape, gen, "uniform")[0].double().requires_grad_(),
                           math.sqrt(s2 / fan_in)))

    def f(point: torch.Tensor) -> torch.Tensor:
        h = point
        for layer in range(3):
            (w, sw), (b, sb) = params[2 * layer], params[2 * layer + 1]
            h = h @ (sw * w) + sb * b[0]
            h = torch.relu(h) if layer < 2 else h
        return h[0]

    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(
        f(torch.as_tensor(p)), [w for w, _ in params])]) for p in x]
    explicit = torch.stack(grads) @ torch.stack(grads).T
    np.testing.assert_allclose(ntk[0], explicit.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_depth_one_nngp_is_the_arccos_kernel_rescaled():
    """S_2 = s2 E[relu(u) relu(u')] with u of covariance s2 (x.x' + 1) / d: the arccos kernel
    (2 E[...], w ~ N(0, I / l^2), b ~ N(0, bias_variance)) at l^2 = 3 d / c^2, bias_variance
    c^2 / (3 d), times c^2 / 6; ``width`` adds the output bias's variance c^2 / (3 width)."""
    x = np.random.default_rng(5).normal(size=(7, 6))
    c, d = 1.7, 6
    arccos = _kernel(x, "arccos", bandwidth=math.sqrt(3 * d) / c, bias_variance=c**2 / (3 * d))
    nngp = _kernel(x, "nngp", depth=1, init_scale=c)
    np.testing.assert_allclose(nngp, c**2 / 6 * arccos, rtol=1e-12)
    finite = _kernel(x, "nngp", depth=1, init_scale=c, width=50)
    np.testing.assert_allclose(finite, nngp + c**2 / 150, rtol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_diagonals_follow_the_variance_recursion(depth):
    """k(x, x): S_1 = s2 (|x|^2 + 1) / d, S_{l+1} = s2 S_l / 2 + beta (E[relu(u)^2] = S / 2), and
    T_{l+1} = T_l s2 / 2 + S_{l+1} (relu'(u)^2 has mean 1/2)."""
    x = np.random.default_rng(6).normal(size=(5, 3))
    c, width = 1.2, 10
    s2, beta = c**2 / 3, c**2 / 3 / width
    sigma = s2 * ((x**2).sum(1) + 1) / 3
    theta = sigma.copy()
    for _ in range(depth):
        sigma = s2 * sigma / 2 + beta
        theta = theta * s2 / 2 + sigma
    params = {"depth": depth, "init_scale": c, "width": width}
    np.testing.assert_allclose(np.diag(_kernel(x, "nngp", **params)), sigma, rtol=1e-12)
    # the angle of a point with itself is arccos(1 - rounding) ~ 1e-8: ntk's diagonal is good
    # to ~1e-9 (nngp's is flat in the angle there)
    np.testing.assert_allclose(np.diag(_kernel(x, "ntk", **params)), theta, rtol=1e-8)


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
@pytest.mark.parametrize("params", [{"depth": 1}, {"depth": 3, "init_scale": 2.0},
                                    {"depth": 2, "width": 16}])
def test_kernel_matrices_are_symmetric_and_positive_semidefinite(kernel, params):
    a, b = _digits(80, 7), _digits(9, 8)
    k = _kernel(a, kernel, **params)
    np.testing.assert_allclose(k, k.T, rtol=1e-13, atol=0)
    assert np.linalg.eigvalsh(k).min() > -1e-12 * np.abs(k).max()
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    cross = kernel_matrix(ta, tb, kernel=kernel, **params)
    np.testing.assert_allclose(cross.numpy(), kernel_matrix(tb, ta, kernel=kernel, **params)
                               .numpy().T, rtol=1e-13)


def test_the_infinite_width_is_the_limit_of_width():
    x = _digits(5, 9)
    for kernel in ("nngp", "ntk"):
        limit = _kernel(x, kernel, depth=3)
        wide = _kernel(x, kernel, depth=3, width=10**15)  # beta / k ~ 1e-12 here
        # (beta moves the computed angle of a point with itself, arccos(1 - ~1e-16) ~ 1e-8, and
        # with it the ntk's relu' term (pi - t) / (2 pi) by ~1e-9 relative)
        np.testing.assert_allclose(wide, limit, rtol=1e-8)
        assert np.all(_kernel(x, kernel, depth=3, width=64) > limit)


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_the_same_in_any_number_of_blocks(kernel, monkeypatch):
    a, b = _digits(23, 10), _digits(17, 11)
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    whole = kernel_matrix(ta, tb, kernel=kernel, depth=3, width=32)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 7)
    assert torch.equal(whole, kernel_matrix(ta, tb, kernel=kernel, depth=3, width=32))


def test_every_registered_kernel_has_its_function_and_a_valid_default():
    for entry in KERNELS:
        function = resolve(entry.matrix)
        assert callable(function) and entry.model.model_fields["kind"]
        assert entry.network == (entry.kind in ("nngp", "ntk"))


def test_kernel_matrix_arguments():
    x = torch.zeros((2, 3), dtype=torch.float64)
    with pytest.raises(ValueError, match="'nngp' takes no bandwidth"):
        kernel_matrix(x, x, kernel="nngp", bandwidth=1.0, depth=1)
    with pytest.raises(ValueError, match="'ntk' needs depth"):
        kernel_matrix(x, x, kernel="ntk")
    with pytest.raises(ValueError, match="'rbf' needs a bandwidth"):
        kernel_matrix(x, x, kernel="rbf")
    # a zero input still has the first layer's bias: a finite, positive kernel
    assert torch.all(kernel_matrix(x, x, kernel="ntk", depth=2) > 0)


@pytest.mark.parametrize(("fields", "message"), [
    ({"kernel": "nngp"}, "kernel 'nngp' needs depth"),
    ({"kernel": "ntk", "depth": 0}, "greater than 0"),
    ({"kernel": "nngp", "depth": 2, "bandwidth": 1.0},
     "bandwidth = 1.0 applies to kernels 'rbf', 'laplace', 'matern' and 'arccos', not to "
     "'nngp'"),
    ({"kernel": "ntk", "depth": 2, "bandwidth": "median"}, "not to 'ntk'"),
    ({"kernel": {"kind": "ntk", "depth": 2, "bandwidth": 1.0}}, "Extra inputs"),
    ({"kernel": "nngp", "depth": 2, "activation": "tanh"}, "relu only"),
    ({"kernel": "nngp", "depth": 2, "nu": 1.5}, "nu = 1.5 applies to kernel 'matern', not"),
    ({"kernel": "ntk", "depth": 2, "bias_variance": 1.0}, "applies to kernel 'arccos', not"),
    ({"kernel": "rbf", "depth": 2}, "depth = 2 applies to kernels 'nngp' and 'ntk', not to "
     "'rbf'"),
    ({"kernel": "arccos", "width": 64}, "width = 64 applies to kernels 'nngp'"),
    ({"init_scale": 1.0}, "init_scale = 1.0 applies to kernels 'nngp' and 'ntk'"),
    ({"kernel": "matern", "nu": 0.5, "activation": "relu"}, "activation = 'relu' applies to"),
    ({"kernel": "nngp", "depth": 2, "width": 0}, "greater than 0"),
    ({"kernel": "nngp", "depth": 2, "init_scale": -1.0}, "greater than 0"),
])
def test_space_parameters_are_checked_against_the_kernel(fields, message):
    with pytest.raises(ValueError, match=message):
        GPSpace(name="g", **fields)


def test_space_identity_carries_the_network_and_no_bandwidth():
    identity = GPSpace(name="g", kernel="ntk", depth=2).identity()
    assert identity == {"kind": "gp", "kernel": "ntk", "jitter": 1e-8, "depth": 2,
                        "init_scale": 1.0, "activation": "relu"}
    # writing the defaults out is the same space (and run id)
    explicit = GPSpace(name="g", kernel="ntk", depth=2, init_scale=1.0, activation="relu")
    assert explicit.identity() == identity
    wide = GPSpace(name="g", kernel="nngp", depth=1, width=512, init_scale=0.5)
    assert GPSpace.model_validate(wide.model_dump()) == wide  # the dump reads back
    assert wide.identity()["width"] == 512 and "bandwidth" not in wide.identity()
    # old kernels as before
    assert GPSpace(name="g", kernel="arccos").identity() == {
        "kind": "gp", "kernel": "arccos", "bandwidth": 1.0, "jitter": 1e-8}


def test_spec_file_errors_name_the_space(tmp_path):
    spec = spec_dict()
    spec["spaces"][0].update(kernel="nngp", depth=2)  # spec_dict's space has bandwidth 1.5
    path = write_spec(tmp_path, spec)
    with pytest.raises(Exception, match=r"spaces\.0: Value error, bandwidth = 1\.5 applies to "
                                        "kernels 'rbf'"):
        load_experiment(path)
    del spec["spaces"][0]["bandwidth"]
    (run,) = load_experiment(write_spec(tmp_path, spec)).runs()
    kernel = run.space.kernel
    assert (kernel.kind, kernel.depth, kernel.init_scale) == ("nngp", 2, 1.0)


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_gp_runner_with_network_kernels(tmp_path, kernel):
    make_npz(tmp_path / "d.npz", n_train=40, n_test=25, n_classes=3, n_features=4)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": "d.npz"},
                                "n_train": 40, "n_test": 25, "eps": [0.1]})
    data = load_task(task, spec_dir=tmp_path)
    space = GPSpace(name="g", kernel=kernel, depth=2, width=128)
    runner = GPRunner(space, data, device=CPU)
    info = runner.info
    assert (info["kernel"], info["depth"], info["init_scale"], info["width"]) == (
        kernel, 2, 1.0, 128)
    assert info["input_dim"] == 4 and "bandwidth" not in info
    k_train = _kernel(data.x_train, kernel, depth=2, width=128)
    # the posterior mean interpolates: at the training points it returns the targets
    alpha = np.linalg.solve(k_train + 1e-8 * np.eye(40), data.y_train)
    t_test, t_train = torch.as_tensor(data.x_test), torch.as_tensor(data.x_train)
    mean = kernel_matrix(t_test, t_train, kernel=kernel, depth=2, width=128).numpy() @ alpha
    np.testing.assert_allclose(runner.mean.numpy(), mean, atol=1e-6, rtol=0)
    losses = runner.sample(np.arange(4), np.arange(4) + 11)
    assert np.isfinite(losses["test_mse"]).all()
