"""A PyTorch model's own kernels (``empirical_nngp``, ``empirical_ntk``) against ibdb's closed
forms, on the one network where the two must agree in expectation: ibdb's depth-1 relu mlp
(``ibdb.runners.zoo:mlp``) with every weight and bias Gaussian of ibdb's variance,
``init_scale^2 / (3 fan_in)``, and the closed form told the ``width`` (so that the output
layer's bias variance is kept).

Why the expectation is exact there, at any width: the first layer's pre-activations are then
exactly Gaussian, of covariance ``S_1``; the output ``f = sum_i W2_i relu(z_i) + b2`` has
``E[f f'] = width var(W2) E[relu(z) relu(z')] + var(b2) = S_2``, the closed-form nngp; and the
NTK-parametrised tangent kernel is ``sum_i var(W2) relu(z_i) relu(z_i') + var(b2)`` (the output
layer: ``S_2`` in expectation) plus ``S_1 sum_i W2_i^2 relu'(z_i) relu'(z_i')`` (the first
layer), whose expectation is ``S_1 s2 E[relu'(z) relu'(z')] = S_1 D_2`` because ``W2`` is
independent of ``z``: the closed-form ``T_2 = S_1 D_2 + S_2``. Checked numerically too: at
8000 initialisations (relative standard error 0.2 %) the empirical ntk's 36 distinct entries
on 8 digits lie within 2.1 standard errors of the closed form (nngp, 50000: within 1.1).

Tolerance for the entrywise tests: each of the N = 36 distinct entries (8 points) is a z-score
in Monte Carlo standard errors (the per-initialisation spread over sqrt(samples)). The 3-SE
rule per entry, with a multiple-testing allowance: at most one entry past 3 SE (under exact
agreement and independent entries, P(two or more of 36 past 3 SE) ~ 0.5 %) and none past 4 SE
(P ~ 0.2 %, Bonferroni). The seeds are fixed, so a run either passes or fails for good; the
measured worst |z| are in the comments. Each test also checks that the standard error is small
(so that agreement is not vacuous).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from sklearn.datasets import load_digits

from ibdb.api import Ibdb
from ibdb.core.errors import SpecError
from ibdb.data.task import load_task
from ibdb.runners.empirical_kernels import gp_facts, kernel_with_error
from ibdb.runners.gp import GPRunner
from ibdb.runners.kernels import kernel_matrix
from ibdb.spec.file import load_experiment
from ibdb.spec.kernels import EmpiricalNNGPKernel, EmpiricalNTKKernel
from ibdb.spec.sources import Task
from ibdb.spec.spaces import GPSpace
from ibdb.stats.estimators import exact_estimates

from conftest import make_npz, write_spec

CPU = torch.device("cpu")
MLP = "ibdb.runners.zoo:mlp"


def _gaussian_init(d: int, width: int, init_scale: float = 1.0) -> dict:
    """Every Linear weight and bias of the depth-1 mlp (modules 1 and 3 of its Sequential)
    normal with ibdb's variance init_scale^2 / (3 fan_in)."""
    return {"1.*": {"law": "normal", "std": init_scale / math.sqrt(3 * d)},
            "3.*": {"law": "normal", "std": init_scale / math.sqrt(3 * width)}}


def _digits(n: int, seed: int = 0) -> torch.Tensor:
    images = load_digits().data / 16.0
    rows = np.random.default_rng(seed).choice(len(images), n, replace=False)
    return torch.as_tensor(images[rows])


def _kernel(kind: str, *, width: int, d: int, n_outputs: int = 3, **fields):
    model = EmpiricalNNGPKernel if kind == "empirical_nngp" else EmpiricalNTKKernel
    return model(kind=kind, model=MLP, init=_gaussian_init(d, width),
                 model_args={"width": width, "depth": 1, "n_outputs": n_outputs}, **fields)


def _z_scores(mean: torch.Tensor, error: torch.Tensor, expected: torch.Tensor) -> np.ndarray:
    rows, cols = torch.triu_indices(len(mean), len(mean))
    return ((mean - expected) / error)[rows, cols].numpy()


def _assert_within_monte_carlo(z: np.ndarray) -> None:
    worst = float(np.abs(z).max())
    assert worst <= 4.0 and int((np.abs(z) > 3.0).sum()) <= 1, (
        f"{int((np.abs(z) > 3).sum())} of {z.size} entries past 3 SE; worst {worst:.2f}")


@pytest.mark.parametrize(("kind", "closed", "samples", "largest_error"), [
    ("empirical_nngp", "nngp", 2000, 0.03),  # measured: worst |z| 1.95, relative SE <= 2.3 %
    ("empirical_ntk", "ntk", 300, 0.015),  # measured: worst |z| 1.20, relative SE <= 1.1 %
])
def test_the_depth_1_mlp_kernels_are_the_closed_forms_within_monte_carlo_error(
        kind, closed, samples, largest_error):
    x = _digits(8)
    width = 64
    kernel = _kernel(kind, width=width, d=64, samples=samples)
    mean, error = kernel_with_error(kernel, x, x, input_shape=(64,))
    expected = kernel_matrix(x, x, kernel=closed, depth=1, width=width)
    assert float((error / expected.abs()).max()) < largest_error
    _assert_within_monte_carlo(_z_scores(mean, error, expected))
    # the kernel function gives the same matrix as the one with errors (another summation)
    alone = kernel_matrix(x, x, kernel=kernel, input_shape=(64,))
    torch.testing.assert_close(alone, mean, rtol=1e-12, atol=1e-15)


def test_one_set_of_initialisations_serves_every_block():
    """K(a, b) computed alone is the (a, b) block of K on a and b together (the same
    initialisations: common random numbers), so the gp runner's K(X, X), K(T, X), K(T, T)
    make one positive semi-definite matrix; the seed changes the draws."""
    a, b = _digits(5, 1), _digits(4, 2)
    both = torch.cat([a, b])
    for kind, samples in (("empirical_nngp", 64), ("empirical_ntk", 8)):
        kernel = _kernel(kind, width=16, d=64, samples=samples)
        whole = kernel_matrix(both, both, kernel=kernel, input_shape=(1, 8, 8))
        block = kernel_matrix(a, b, kernel=kernel, input_shape=(1, 8, 8))
        torch.testing.assert_close(block, whole[:5, 5:], rtol=1e-12, atol=1e-15)
        assert float(torch.linalg.eigvalsh(whole).min()) > -1e-12 * float(whole.max())
        other = kernel.model_copy(update={"seed": 1})
        assert not torch.allclose(kernel_matrix(a, b, kernel=other, input_shape=(64,)), block)


def test_the_standard_parametrisation_weights_every_parameter_by_one():
    """With every parameter normal of std 0.1, the NTK parametrisation's weights are all
    0.01: the standard parametrisation's kernel (same initialisations) is 100 times it."""
    x = _digits(4, 3)
    init = {"*": {"law": "normal", "std": 0.1}}
    fields = {"kind": "empirical_ntk", "model": MLP, "init": init, "samples": 4,
              "model_args": {"width": 8, "depth": 2, "n_outputs": 2}}
    ntk = kernel_matrix(x, x, kernel=EmpiricalNTKKernel(**fields), input_shape=(64,))
    standard = kernel_matrix(x, x, input_shape=(64,), kernel=EmpiricalNTKKernel(
        **fields, parametrisation="standard"))
    torch.testing.assert_close(standard, 100.0 * ntk, rtol=1e-10, atol=0.0)


def _random_task(tmp_path: Path) -> Task:
    """Random Gaussian points in 16 dimensions with random labels, 3 classes."""
    rng = np.random.default_rng(0)
    n, m, d = 6, 6, 16
    x = rng.normal(size=(n + m, d))
    labels = np.concatenate([np.arange(3), rng.integers(0, 3, n - 3), np.arange(3),
                             rng.integers(0, 3, m - 3)])
    np.savez(tmp_path / "random.npz", X_train=x[:n], y_train=labels[:n], X_test=x[n:],
             y_test=labels[n:])
    return Task.model_validate({"name": "random", "source": {"kind": "npz",
                                                             "path": "random.npz"},
                                "n_train": n, "n_test": m, "eps": [0.1]})


def _bits(runner: GPRunner, eps: float) -> float:
    spectrum = runner.spectrum()
    m, k = spectrum["residuals"].shape
    (row,) = exact_estimates({"eigenvalues": spectrum["eigenvalue"], "n_test": m,
                              "residual_sq": (spectrum["residuals"] ** 2).sum(1),
                              "n_outputs": k}, [eps])
    return row.bits


def test_exact_on_the_empirical_nngp_is_exact_on_the_closed_form_at_20_bits(tmp_path):
    """``exact`` of a gp space on the empirical nngp is within 0.5 bits of ``exact`` on the
    closed form where the latter gives 20 bits (measured: -0.07; seeds 1-5 of the
    initialisations gave -0.19 to +0.09).

    Why this task and amplitude: deep in the tail, bits amplify the kernel's Monte Carlo error.
    A gp's posterior variances are differences of nearly equal kernel entries, and on a task a
    gp fits well (digits) the residuals are small differences too; 20 bits is then mostly
    ``r^2 / (2 lam ln 2)`` terms, which move by about 20 times the relative error of lam. On
    digits (40 training, 30 test points, amplitude 1) 1024 initialisations (relative standard
    error 1.4 %) put the empirical kernel's 20 bits 0.4 to 7 bits from the closed form's,
    depending on the seed. Random points (unrelated labels) and amplitude 10 keep the 20 bits
    in the posterior's spread (the central chi-squared's small ball, bits ~ (m k / 2) log2 of
    lam / eps), whose sensitivity to lam's relative error is about m k / (2 ln 2); a wide
    hidden layer and many outputs make each initialisation's matrix less noisy (relative
    standard error 0.65 % at 1024)."""
    data = load_task(_random_task(tmp_path), spec_dir=tmp_path)
    width, d = 256, 16

    def runner(kernel: dict) -> GPRunner:
        return GPRunner(GPSpace(name="g", kernel=kernel, amplitude=10.0), data, device=CPU)

    closed = runner({"kind": "nngp", "depth": 1, "width": width})
    eps = brentq(lambda e: _bits(closed, e) - 20.0, 1e-3, 1.0, xtol=1e-12)
    empirical = runner({"kind": "empirical_nngp", "model": MLP, "samples": 1024,
                        "init": _gaussian_init(d, width),
                        "model_args": {"width": width, "depth": 1, "n_outputs": 32}})
    assert abs(_bits(empirical, eps) - 20.0) < 0.5
    info = empirical.info
    assert info["kernel"] == "empirical_nngp" and info["samples"] == 1024
    assert info["model_outputs"] == 32 and info["input_shape"] == [16]
    assert 0 < info["kernel_standard_error"]["median"] <= info["kernel_standard_error"]["max"]
    assert info["kernel_standard_error"]["max"] < 0.02 and "bandwidth" not in info


def _spec(tmp_path: Path, kernel: dict) -> Path:
    make_npz(tmp_path / "toy.npz", n_train=20, n_test=10, n_features=4)
    return write_spec(tmp_path, {
        "name": "empirical",
        "tasks": [{"name": "toy", "source": {"kind": "npz", "path": "toy.npz"},
                   "n_train": 20, "n_test": 10, "eps": [0.3]}],
        "spaces": [{"name": "model-nngp", "kind": "gp", "kernel": kernel, "jitter": 1e-6},
                   {"name": "rbf", "kind": "gp", "kernel": {"kind": "rbf"}}],
        "budgets": [{"name": "b", "n_hypotheses": 100, "chunk_size": 100}]})


def test_a_gp_space_on_a_models_kernel_validates_runs_and_names_its_model(tmp_path):
    kernel = {"kind": "empirical_nngp", "model": MLP, "samples": 32,
              "model_args": {"width": 16, "depth": 2, "n_outputs": 3}}
    spec = _spec(tmp_path, kernel)
    space = load_experiment(spec).spaces[0]
    assert isinstance(space.kernel, EmpiricalNNGPKernel) and space.kernel.seed == 0
    api = Ibdb(tmp_path / "s.duckdb", shards=tmp_path / "shards", device="cpu")
    planned = api.plan(spec)
    # the built module's fingerprint joins the run id; any other kernel adds nothing
    assert planned[0].identity["space"]["module"]["parameters"][0][0] == "1.weight"
    assert "module" not in planned[1].identity["space"]
    assert gp_facts(planned[1].spec.space, planned[1].data) == {}
    report = api.run(spec)
    assert set(report.executed) == {p.run_id for p in planned}
    _, rows = api.sql(f"SELECT count(*) FROM estimates WHERE run_id = '{planned[0].run_id}' "
                      "AND method = 'exact'")
    assert rows[0][0] == 1
    # another model (its arguments) is another run
    wider = _spec(tmp_path, {**kernel, "model_args": {"width": 17, "depth": 2, "n_outputs": 3}})
    assert api.plan(wider)[0].run_id != planned[0].run_id
    assert api.plan(wider)[1].run_id == planned[1].run_id


@pytest.mark.parametrize(("kernel", "message"), [
    ({"model": "ibdb.runners.torch_model:no_such_factory"}, "has no attribute"),
    ({"model": "no_such_package.nets:mlp"}, "no module 'no_such_package'"),
    ({"model_args": {"width": 4}}, "the factory raised TypeError"),
])
def test_a_bad_model_is_a_spec_error_before_anything_runs(tmp_path, kernel, message):
    fields = {"kind": "empirical_ntk", "model": MLP,
              "model_args": {"width": 4, "depth": 1, "n_outputs": 2}, **kernel}
    spec = _spec(tmp_path, fields)
    with pytest.raises(SpecError, match=message):
        Ibdb(tmp_path / "s.duckdb", device="cpu").plan(spec)
    assert not (tmp_path / "s.duckdb").exists()


def test_a_model_reference_that_is_not_a_name_is_refused_by_the_spec(tmp_path):
    spec = _spec(tmp_path, {"kind": "empirical_nngp", "model": "os.system('x')"})
    with pytest.raises(SpecError, match="is not 'package.module:factory'"):
        load_experiment(spec)
