"""gp kernels against independent formulas (scipy's Bessel function, Monte Carlo ReLU features)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import gamma, kv

from ibdb.core.errors import SpecError
from ibdb.runners import blocks
from ibdb.runners.kernels import kernel_matrix
from ibdb.spec.spaces import GPSpace


def _points(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, d)), dtype=torch.float64)


def _matern_bessel(r: np.ndarray, length: float, nu: float) -> np.ndarray:
    """The general Matérn form 2^(1-nu)/Gamma(nu) s^nu K_nu(s), s = sqrt(2 nu) r / l."""
    s = np.sqrt(2 * nu) * r / length
    with np.errstate(invalid="ignore"):
        out = 2 ** (1 - nu) / gamma(nu) * s**nu * kv(nu, s)
    return np.where(s == 0, 1.0, out)


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_matern_equals_the_bessel_formula(nu):
    a, b = _points(20, 4, 0), _points(15, 4, 1)
    got = kernel_matrix(a, b, kernel="matern", bandwidth=1.7, nu=nu).numpy()
    np.testing.assert_allclose(got, _matern_bessel(cdist(a, b), 1.7, nu), rtol=1e-10, atol=1e-14)
    # on the diagonal r = 0 and every Matérn kernel is 1
    same = kernel_matrix(a, a, kernel="matern", bandwidth=1.7, nu=nu).numpy()
    np.testing.assert_allclose(np.diag(same), 1.0, rtol=0, atol=1e-12)


def test_laplace_is_exponential_and_matern_one_half():
    a, b = _points(12, 3, 2), _points(9, 3, 3)
    laplace = kernel_matrix(a, b, kernel="laplace", bandwidth=0.8).numpy()
    np.testing.assert_allclose(laplace, np.exp(-cdist(a, b) / 0.8), rtol=1e-12)
    matern = kernel_matrix(a, b, kernel="matern", bandwidth=0.8, nu=0.5).numpy()
    np.testing.assert_allclose(matern, laplace, rtol=1e-14)


def test_rbf_formula():
    a, b = _points(10, 5, 4), _points(7, 5, 5)
    got = kernel_matrix(a, b, kernel="rbf", bandwidth=2.0).numpy()
    np.testing.assert_allclose(got, np.exp(-cdist(a, b, "sqeuclidean") / 8.0), rtol=1e-10)


def test_arccos_without_bias_is_cho_and_sauls_order_one_kernel():
    a, b = _points(8, 6, 6).numpy(), _points(5, 6, 7).numpy()
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    theta = np.arccos(np.clip(a @ b.T / np.outer(na, nb), -1, 1))
    expected = np.outer(na, nb) / np.pi * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    got = kernel_matrix(torch.as_tensor(a), torch.as_tensor(b), kernel="arccos", bandwidth=1.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_arccos_equals_a_monte_carlo_average_of_relu_features():
    """2 E[relu(w.x + b) relu(w.x' + b)], w ~ N(0, I / l^2), b ~ N(0, s2), by 2 10^5 draws."""
    x = _points(6, 3, 8)
    length, bias_variance, draws = 1.5, 0.7, 200_000
    rng = np.random.default_rng(9)
    w = rng.normal(size=(draws, 3)) / length
    bias = rng.normal(size=draws) * math.sqrt(bias_variance)
    features = np.maximum(x.numpy() @ w.T + bias, 0.0)  # (6, draws)
    products = 2 * features[:, None, :] * features[None, :, :]
    estimate = products.mean(-1)
    stderr = products.std(-1) / math.sqrt(draws)
    got = kernel_matrix(x, x, kernel="arccos", bandwidth=length, bias_variance=bias_variance)
    # 5 standard errors of the Monte Carlo mean (each under 1% of the value here)
    assert np.all(np.abs(got.numpy() - estimate) < 5 * stderr)
    # He scaling: k(x, x) = bias_variance + |x|^2 / l^2
    expected_diag = bias_variance + (x.numpy() ** 2).sum(1) / length**2
    np.testing.assert_allclose(np.diag(got.numpy()), expected_diag, rtol=1e-12)


@pytest.mark.parametrize(("kernel", "params"), [
    ("rbf", {}), ("laplace", {}), ("matern", {"nu": 0.5}), ("matern", {"nu": 1.5}),
    ("matern", {"nu": 2.5}), ("arccos", {}), ("arccos", {"bias_variance": 2.0}),
])
def test_kernel_matrices_are_positive_semidefinite(kernel, params):
    x = _points(60, 4, 10) * 0.5
    k = kernel_matrix(x, x, kernel=kernel, bandwidth=0.9, **params).numpy()
    np.testing.assert_allclose(k, k.T, atol=1e-12)
    assert np.linalg.eigvalsh(k).min() > -1e-10 * np.abs(k).max()


def test_unknown_kernel_and_bad_nu():
    x = _points(3, 2, 0)
    with pytest.raises(SpecError, match="no kernel of kind 'poly'; the known kinds are rbf"):
        kernel_matrix(x, x, kernel="poly", bandwidth=1.0)
    with pytest.raises(ValueError, match="Input should be 0.5, 1.5 or 2.5"):
        kernel_matrix(x, x, kernel="matern", bandwidth=1.0, nu=1.0)
    with pytest.raises(ValueError, match="kernel 'rbf' needs a bandwidth"):
        kernel_matrix(x, x, kernel="rbf")


def test_kernel_parameters_are_checked_against_the_kernel():
    # the kernel's own fields, in either spelling; a field of another kernel is named
    for spelling in ({"kernel": "matern"}, {"kernel": {"kind": "matern"}}):
        with pytest.raises(ValueError, match=r"kernel\.nu\n  Field required"):
            GPSpace(name="g", **spelling)
    with pytest.raises(ValueError, match="nu = 1.5 applies to kernel 'matern', not to 'rbf'"):
        GPSpace(name="g", kernel="rbf", nu=1.5)
    with pytest.raises(ValueError, match="bias_variance = 1.0 applies to kernel 'arccos', not "
                                         "to 'laplace'"):
        GPSpace(name="g", kernel="laplace", bias_variance=1.0)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        GPSpace(name="g", kernel={"kind": "rbf", "nu": 1.5})
    with pytest.raises(ValueError, match="nu"):
        GPSpace(name="g", kernel="matern", nu=1.0)


def test_rbf_space_identity_is_unchanged_by_the_new_fields():
    # run ids hash this; an rbf space must read as it did before other kernels existed
    space = GPSpace(name="g", bandwidth="median")
    assert space.identity() == {"kind": "gp", "kernel": "rbf", "bandwidth": "median",
                                "jitter": 1e-8}
    matern = GPSpace(name="g", kernel="matern", nu=2.5).identity()
    assert matern["nu"] == 2.5 and "bias_variance" not in matern


@pytest.mark.parametrize(("kernel", "params"), [
    ("rbf", {}), ("laplace", {}), ("matern", {"nu": 0.5}), ("matern", {"nu": 1.5}),
    ("matern", {"nu": 2.5}), ("arccos", {"bias_variance": 0.3}),
])
def test_kernels_are_the_same_in_any_number_of_blocks(kernel, params, monkeypatch):
    """The in-place transforms run one block of rows at a time; 7-element blocks (one row per
    block here) must give the very same matrix as one block."""
    a, b = _points(23, 3, 11), _points(17, 3, 12)
    whole = kernel_matrix(a, b, kernel=kernel, bandwidth=1.1, **params)
    monkeypatch.setattr(blocks, "CPU_BLOCK_ELEMENTS", 7)
    assert len(list(blocks.row_blocks(23, 17, a.device))) == 23
    blocked = kernel_matrix(a, b, kernel=kernel, bandwidth=1.1, **params)
    assert torch.equal(whole, blocked)


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with blocks.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), blocks.one_thread():
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
