"""The Gaussian-process runner against independent oracles: a NumPy solve, explicit
predictions, and the closed-form moments of the generalized chi-squared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibdb.core.errors import IbdbError
from ibdb.data.task import load_task
from ibdb.run.plan import hypothesis_seeds
from ibdb.runners.gp import GPRunner, _misclassified, _standard_normals
from ibdb.spec.sources import Task
from ibdb.spec.spaces import GPSpace

from conftest import make_npz

CPU = torch.device("cpu")


@pytest.fixture
def data(tmp_path):
    make_npz(tmp_path / "d.npz", n_train=40, n_test=25, n_classes=3, n_features=4)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": "d.npz"},
                                "n_train": 40, "n_test": 25, "eps": [0.1]})
    return load_task(task, spec_dir=tmp_path)


def _numpy_posterior(data, bandwidth, jitter):
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * bandwidth**2))

    kxx = k(data.x_train, data.x_train) + jitter * np.eye(len(data.x_train))
    kxt = k(data.x_train, data.x_test)
    mean = kxt.T @ np.linalg.solve(kxx, data.y_train)
    cov = k(data.x_test, data.x_test) - kxt.T @ np.linalg.solve(kxx, kxt)
    return mean, cov


def test_posterior_matches_numpy_solve(data):
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3, jitter=1e-8), data, device=CPU)
    mean, cov = _numpy_posterior(data, 1.3, 1e-8)
    np.testing.assert_allclose(runner.mean.numpy(), mean, atol=1e-8, rtol=0)
    np.testing.assert_allclose(runner.cov.numpy(), cov, atol=1e-8, rtol=0)
    # the jitter's cost: how far the posterior mean at the training points misses the targets
    d2 = ((data.x_train[:, None] - data.x_train[None]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * 1.3**2))
    fitted = k @ np.linalg.solve(k + 1e-8 * np.eye(len(k)), data.y_train)
    assert runner.info["train_interp_max_abs_error"] == pytest.approx(
        np.abs(fitted - data.y_train).max(), rel=1e-3)


def test_loss_decomposition_is_the_mean_of_the_sampled_test_mse(data):
    """info's test_mse_of_mean is the numpy posterior mean's test MSE, and adding the spread
    gives E[test MSE]: against the mean of 20000 sampled losses (tolerance 5 standard errors);
    an amplitude scales the spread alone."""
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3), data, device=CPU)
    mean, cov = _numpy_posterior(data, 1.3, 1e-8)
    of_mean = runner.info["test_mse_of_mean"]
    assert of_mean == pytest.approx(((mean - data.y_test) ** 2).mean(), rel=1e-9)
    assert runner.info["test_mse_spread"] == pytest.approx(np.trace(cov) / len(cov), rel=1e-6)
    ids = np.arange(20000)
    losses = runner.sample(ids, hypothesis_seeds(2, ids))["test_mse"]
    expected = of_mean + runner.info["test_mse_spread"]
    assert abs(losses.mean() - expected) < 5 * losses.std() / np.sqrt(ids.size)
    scaled = GPRunner(GPSpace(name="g", bandwidth=1.3, amplitude=0.1), data, device=CPU).info
    assert scaled["test_mse_of_mean"] == pytest.approx(of_mean, rel=1e-12)
    assert scaled["test_mse_spread"] == pytest.approx(0.1 * runner.info["test_mse_spread"],
                                                      rel=1e-9)


def test_median_bandwidth_is_the_median_pairwise_distance(data):
    runner = GPRunner(GPSpace(name="g", bandwidth="median"), data, device=CPU)
    x = data.x_train
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[np.triu_indices(len(x), 1)]
    assert runner.info["bandwidth"] == pytest.approx(np.median(d), rel=1e-12)


def test_losses_equal_explicit_predictions(data):
    """MSE and 0-1 error recomputed from h = mu + S^(1/2) Z with the same Z, in NumPy."""
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3), data, device=CPU)
    ids = np.arange(7)
    seeds = hypothesis_seeds(11, ids)
    got = runner.sample(ids, seeds)
    z = _standard_normals(seeds, data.y_test.shape).double().numpy().transpose(1, 0, 2)
    mean, cov = _numpy_posterior(data, 1.3, 1e-8)
    # Any factor F with F F^T = S gives valid hypotheses; check the runner's factor is one,
    # then build the predictions explicitly with it.
    q = runner.eigenvectors.numpy()
    lam = runner.spectrum()["eigenvalue"]
    np.testing.assert_allclose((q * lam) @ q.T, cov, atol=1e-8)
    preds = mean[None] + np.einsum("ij,bjk->bik", q * np.sqrt(lam), z)
    mse = ((preds - data.y_test[None]) ** 2).mean(axis=(1, 2))
    err = (preds.argmax(2) != data.labels_test[None]).mean(1)
    np.testing.assert_allclose(got["test_mse"], mse, rtol=1e-9)
    np.testing.assert_array_equal(got["test_error"], err)


def test_sampled_losses_match_generalized_chi2_moments(data):
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3), data, device=CPU)
    spec = runner.spectrum()
    lam, r = spec["eigenvalue"], spec["residuals"]
    m, k = r.shape
    mean = (k * lam.sum() + (r**2).sum()) / (m * k)
    var = (2 * lam**2 * k + 4 * lam * (r**2).sum(1)).sum() / (m * k) ** 2
    n = 20000
    losses = runner.sample(np.arange(n), hypothesis_seeds(5, np.arange(n)))["test_mse"]
    # The sample mean has standard error sqrt(var / n); allow 5 of them. The sample variance
    # of these near-Gaussian losses has relative standard error ~ sqrt(2 / n) = 1%; allow 5%.
    assert abs(losses.mean() - mean) < 5 * np.sqrt(var / n)
    assert losses.var(ddof=1) == pytest.approx(var, rel=0.05)


def test_not_positive_definite_is_a_clear_error(data):
    doubled = type(data)(**{**data.__dict__,
                            "x_train": np.vstack([data.x_train[:1]] * 40)})
    with pytest.raises(IbdbError, match="not positive definite with jitter 0. Raise jitter"):
        GPRunner(GPSpace(name="g", jitter=0.0), doubled, device=CPU)


def _numpy_kernel(kernel, a, b, bandwidth):
    from scipy.spatial.distance import cdist

    r = cdist(a, b) / bandwidth
    if kernel == "laplace":
        return np.exp(-r)
    s = np.sqrt(5) * r  # matern 5/2
    return (1 + s + s**2 / 3) * np.exp(-s)


@pytest.mark.parametrize(("space", "kernel"), [
    ({"kernel": "laplace"}, "laplace"), ({"kernel": "matern", "nu": 2.5}, "matern52"),
])
def test_other_kernels_posterior_matches_numpy(data, space, kernel):
    runner = GPRunner(GPSpace(name="g", bandwidth=2.0, **space), data, device=CPU)

    def k(a, b):
        return _numpy_kernel(kernel, a, b, 2.0)

    kxx = k(data.x_train, data.x_train) + 1e-8 * np.eye(len(data.x_train))
    kxt = k(data.x_train, data.x_test)
    mean = kxt.T @ np.linalg.solve(kxx, data.y_train)
    cov = k(data.x_test, data.x_test) - kxt.T @ np.linalg.solve(kxx, kxt)
    np.testing.assert_allclose(runner.mean.numpy(), mean, atol=1e-7, rtol=0)
    np.testing.assert_allclose(runner.cov.numpy(), cov, atol=1e-7, rtol=0)
    assert runner.info["kernel"] == space["kernel"]


def test_arccos_runner_records_its_parameters(data):
    runner = GPRunner(GPSpace(name="g", kernel="arccos", bandwidth="median",
                              bias_variance=0.5), data, device=CPU)
    assert runner.info["bias_variance"] == 0.5 and runner.info["kernel"] == "arccos"
    losses = runner.sample(np.arange(4), hypothesis_seeds(1, np.arange(4)))
    assert np.isfinite(losses["test_mse"]).all()


def test_misclassified_counts_what_argmax_counts_ties_included():
    """Small integer scores tie often; the count must follow argmax's first-maximum rule."""
    rng = np.random.default_rng(4)
    m, batch, k = 60, 9, 4
    labels = np.sort(rng.integers(0, k, size=m))
    labels[labels == 2] = 1  # one label absent from the test set
    preds = torch.as_tensor(rng.integers(0, 3, size=(m, batch, k)), dtype=torch.float32)
    bounds = np.searchsorted(labels, np.arange(k + 1))
    label_rows = [(c, slice(int(bounds[c]), int(bounds[c + 1]))) for c in range(k)
                  if bounds[c + 1] > bounds[c]]
    expected = (preds.argmax(dim=2) != torch.as_tensor(labels)[:, None]).sum(dim=0)
    assert torch.equal(_misclassified(preds, label_rows), expected)


def test_error_with_a_class_missing_from_the_test_set(data):
    """Test labels lacking a class (and unsorted): the 0-1 error still equals explicit argmax."""
    labels = data.labels_test.copy()
    labels[labels == 2] = 0
    partial = type(data)(**{**data.__dict__, "labels_test": labels,
                            "y_test": np.eye(3)[labels]})
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3), partial, device=CPU)
    ids = np.arange(5)
    seeds = hypothesis_seeds(2, ids)
    got = runner.sample(ids, seeds)
    z = _standard_normals(seeds, partial.y_test.shape).double().numpy().transpose(1, 0, 2)
    q, lam = runner.eigenvectors.numpy(), runner.spectrum()["eigenvalue"]
    preds = runner.mean.numpy()[None] + np.einsum("ij,bjk->bik", q * np.sqrt(lam), z)
    np.testing.assert_array_equal(got["test_error"], (preds.argmax(2) != labels).mean(1))


def test_reused_chunk_memory_gives_the_same_losses(data):
    """sample keeps its chunk buffers between calls; chunks of other sizes, before or after,
    must not change a hypothesis's losses."""
    space = GPSpace(name="g", bandwidth=1.3)
    runner = GPRunner(space, data, device=CPU)
    ids = np.arange(40)
    seeds = hypothesis_seeds(9, ids)
    for part in (slice(0, 12), slice(12, 15), slice(15, 40), slice(0, 12)):
        fresh = GPRunner(space, data, device=CPU).sample(ids[part], seeds[part])
        again = runner.sample(ids[part], seeds[part])
        for name in fresh:
            np.testing.assert_array_equal(again[name], fresh[name])


# -- explicit noise (what rare-event samplers move) ----------------------------------------------


def test_evaluate_of_the_sampled_noise_is_sample_bit_for_bit(data):
    """noise(seeds) is the noise sample draws (float32 normals promoted exactly), so evaluate on
    it is the same computation: equal bit for bit, in one batch and in batches of other sizes."""
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3), data, device=CPU)
    m, k = runner.mean.shape
    assert runner.noise_dim == m * k
    ids = np.arange(37)
    seeds = hypothesis_seeds(4, ids)
    noise = runner.noise(seeds)
    assert noise.shape == (37, m * k) and noise.dtype == np.float64
    # row i is hypothesis i's (m, k) normals, row-major
    z = _standard_normals(seeds, (m, k)).numpy()
    np.testing.assert_array_equal(noise.reshape(37, m, k), z.transpose(1, 0, 2))
    sampled = runner.sample(ids, seeds)
    got = runner.evaluate(noise)
    assert set(got) == set(sampled)
    for name in sampled:
        assert got[name].dtype == sampled[name].dtype
        np.testing.assert_array_equal(got[name], sampled[name], err_msg=name)
    for part in (slice(0, 1), slice(1, 9), slice(9, 37)):
        alone = runner.evaluate(noise[part])
        for name in sampled:
            np.testing.assert_array_equal(alone[name], runner.sample(ids[part], seeds[part])[name])
    np.testing.assert_array_equal(noise, runner.noise(seeds))  # evaluate left its input alone


def test_evaluate_of_any_noise_equals_explicit_predictions(data):
    """For noise that is not float32-representable (a pCN move), the MSE is the float64 loss of
    mu + Q diag(sqrt(lam)) Z; the 0-1 error is that of Z rounded to float32."""
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3), data, device=CPU)
    m, k = runner.mean.shape
    rng = np.random.default_rng(0)
    rho = 0.8
    noise = rho * runner.noise(hypothesis_seeds(1, np.arange(6)))
    noise += np.sqrt(1 - rho**2) * rng.standard_normal(noise.shape)
    got = runner.evaluate(noise)
    q, lam = runner.eigenvectors.numpy(), runner._eigenvalues.numpy()
    z = noise.reshape(6, m, k)
    preds = runner.mean.numpy()[None] + np.einsum("ij,bjk->bik", q * np.sqrt(lam), z)
    mse = ((preds - data.y_test[None]) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(got["test_mse"], mse, rtol=1e-10)
    z32 = z.astype(np.float32).astype(np.float64)
    preds32 = runner.mean.numpy()[None] + np.einsum("ij,bjk->bik", q * np.sqrt(lam), z32)
    errors = (preds32.argmax(2) != data.labels_test[None]).mean(1)
    np.testing.assert_array_equal(got["test_error"], errors)


def test_evaluate_rejects_noise_of_the_wrong_length(data):
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3), data, device=CPU)
    with pytest.raises(IbdbError, match="noise_dim"):
        runner.evaluate(np.zeros((2, runner.noise_dim + 1)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_evaluate_matches_gpu_sample_and_cpu(data):
    space = GPSpace(name="g", bandwidth=1.3)
    seeds = hypothesis_seeds(4, np.arange(50))
    gpu = GPRunner(space, data, device=torch.device("cuda"))
    noise = gpu.noise(seeds)
    got = gpu.evaluate(noise)
    sampled = gpu.sample(np.arange(50), seeds)
    for name in sampled:
        np.testing.assert_array_equal(got[name], sampled[name], err_msg=name)
    cpu = GPRunner(space, data, device=CPU).evaluate(noise)
    np.testing.assert_allclose(got["test_mse"], cpu["test_mse"], rtol=1e-9)


def test_the_runner_steps_alone(data):
    """GPRunner's steps, each against its oracle: the bandwidth rule, the unit-amplitude
    posterior (NumPy's solve, K^-1 Y and the evidence's terms), and the spectrum at an
    amplitude (a times the covariance's eigenvalues, the same eigenvectors)."""
    from ibdb.runners.gp import _bandwidth, _median_distance, _posterior, _spectrum
    from ibdb.runners.kernels import kernel_matrix

    x_train, x_test, y_train = (torch.as_tensor(a) for a in (data.x_train, data.x_test,
                                                            data.y_train))
    median = GPSpace(name="g", kernel={"kind": "rbf", "bandwidth": "median"})
    bandwidth, search = _bandwidth(median, x_train, y_train, None, None)
    d = np.sqrt(((data.x_train[:, None] - data.x_train[None]) ** 2).sum(-1))
    assert search is None and bandwidth == pytest.approx(np.median(d[np.triu_indices(40, 1)]))
    assert bandwidth == _median_distance(x_train)
    assert _bandwidth(GPSpace(name="g", kernel="ntk", depth=1), x_train, y_train, None,
                      None) == (None, None)

    space = GPSpace(name="g", kernel={"kind": "rbf", "bandwidth": 1.3}, jitter=1e-6)
    bandwidth, _ = _bandwidth(space, x_train, y_train, None, None)
    posterior = _posterior(space, lambda a, b: kernel_matrix(a, b, kernel=space.kernel,
                                                             bandwidth=1.3),
                           x_train, x_test, y_train, bandwidth)
    mean, cov = _numpy_posterior(data, 1.3, 1e-6)
    np.testing.assert_allclose(posterior.mean.numpy(), mean, atol=1e-9)
    np.testing.assert_allclose(posterior.cov.numpy(), cov, atol=1e-9)
    gram = _numpy_gram(data.x_train, 1.3) + 1e-6 * np.eye(40)
    np.testing.assert_allclose(posterior.alpha.numpy(), np.linalg.solve(gram, data.y_train),
                               rtol=1e-6)
    quad, logdet = posterior.terms
    assert quad == pytest.approx(float(np.sum(data.y_train * np.linalg.solve(gram,
                                                                             data.y_train))))
    assert logdet == pytest.approx(np.linalg.slogdet(gram)[1])
    unit = np.linalg.eigvalsh(cov)
    eigenvalues, eigenvectors = _spectrum(space, posterior, 2.5, 40, bandwidth)
    np.testing.assert_allclose(eigenvalues.numpy(), 2.5 * unit, atol=1e-9)
    np.testing.assert_allclose(posterior.cov.numpy(), 2.5 * cov, atol=1e-9)  # scaled in place
    q = eigenvectors.numpy()
    np.testing.assert_allclose(q.T @ q, np.eye(25), atol=1e-9)


def _numpy_gram(x, bandwidth):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * bandwidth**2))
