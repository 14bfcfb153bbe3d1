"""A network space whose answer is known (issue 22's fixture, first part): a model linear in its
parameters (``ibdb.runners.zoo:random_features``: fixed random relu features, a trained readout
from a Gaussian initialisation) trained by full-batch gradient descent through the torch space's
runner. After t steps of size c on the MSE, theta_t - theta_mn = (I - c Phi^T Phi)^t (theta_0 -
theta_mn) with theta_mn the minimum-norm interpolant, so the test predictions are Gaussian with
mean Phi_t (I - A) theta_mn and covariance s^2 Phi_t A A^T Phi_t^T, A = (I - c Phi^T Phi)^t, and
the test MSE is a generalised chi-squared whose ``exact`` law ibdb computes. The trained networks
must follow it: the oracle is that closed form, not another sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibdb.data.task import load_task
from ibdb.runners import zoo
from ibdb.runners.torch_space import TorchRunner
from ibdb.spec.sources import Task
from ibdb.spec.spaces import parse_space
from ibdb.stats.estimators import exact_estimates

N_FEATURES, STD, EPOCHS = 300, 0.1, 300


@pytest.fixture(scope="module")
def fixture():
    task = Task.model_validate({"name": "d", "source": {"kind": "digits"}, "n_train": 20,
                                "n_test": 100, "eps": [0.5]})
    data = load_task(task, spec_dir=".")
    model = zoo.random_features(64, N_FEATURES, 10, 0)
    with torch.no_grad():
        phi = model.features(torch.as_tensor(data.x_train, dtype=torch.float32)).double()
        phi_t = model.features(torch.as_tensor(data.x_test, dtype=torch.float32)).double()
    n, k = data.y_train.shape
    gram = phi.T @ phi
    lr = 0.9 * n * k / (2 * float(torch.linalg.eigvalsh(gram).max()))
    c = 2 * lr / (n * k)  # the MSE's mean over n k points and outputs: step c Phi^T residual
    space = parse_space({
        "name": "linear", "kind": "torch", "model": "ibdb.runners.zoo:random_features",
        "model_args": {"n_inputs": 64, "n_features": N_FEATURES, "n_outputs": 10, "seed": 0},
        "init": {"readout.weight": {"law": "normal", "std": STD}},
        "optimizer": {"kind": "sgd", "lr": lr, "batch_size": "full", "epochs": EPOCHS},
        # loose enough that every network fits: the law is the unconditioned one
        "fit": {"criterion": "train_mse", "train_mse_max": 1.0, "stop_when_fit": False}})
    evals, vecs = torch.linalg.eigh(gram)
    a = vecs @ torch.diag((1 - c * evals.clamp_min(0)) ** EPOCHS) @ vecs.T
    theta_mn = torch.linalg.pinv(phi) @ torch.as_tensor(data.y_train)
    mean = phi_t @ (torch.eye(N_FEATURES, dtype=torch.float64) - a) @ theta_mn
    cov = STD**2 * phi_t @ a @ a.T @ phi_t.T
    lam, q = torch.linalg.eigh(cov)
    residuals = q.T @ (mean - torch.as_tensor(data.y_test))
    law = {"eigenvalues": lam.clamp_min(0).numpy(), "residual_sq": (residuals**2).sum(1).numpy(),
           "n_test": len(data.y_test), "n_outputs": k}
    return TorchRunner(space, data, device=torch.device("cpu")), law


def test_trained_linear_networks_follow_the_exact_law(fixture):
    """400 networks: the fraction below each of five sample quantiles (1 to 5.6 bits) against
    ``exact``, within 4 binomial standard errors; and the mean test MSE within 4 of its standard
    errors of the law's mean."""
    runner, law = fixture
    out = runner.sample(np.arange(400), np.arange(400))
    assert out["fitted"].all()
    losses = np.sort(out["test_mse"])
    mean = law["residual_sq"].sum() / (law["n_test"] * law["n_outputs"]) + \
        law["eigenvalues"].sum() / law["n_test"]
    assert abs(losses.mean() - mean) < 4 * losses.std() / np.sqrt(len(losses))
    for q in (0.5, 0.25, 0.1, 0.05, 0.02):
        eps = float(np.quantile(losses, q))
        (row,) = exact_estimates(law, [eps])
        p = 2.0 ** -row.bits
        assert abs(np.mean(losses <= eps) - p) < 4 * np.sqrt(p * (1 - p) / len(losses)) + 1e-3, \
            (q, eps, row.bits)


@pytest.mark.slow
def test_splitting_on_the_linear_network_space_matches_exact_at_20_bits(fixture):
    """Subset simulation over the runner's noise (the readout's normals; full-batch training
    has no data order), 3 repeats of 200 particles to the eps ``exact`` puts at 20 bits: their
    mean within 1 bit, and at least 2 of 3 intervals cover it (about 80 s on 2 cores).
    Measured 2026-12-08: 19.23, 18.76, 19.86 bits, each interval covering 20."""
    from ibdb.run.splitting import SplittingSettings, run_levels
    from ibdb.stats.subset_simulation import splitting_estimate

    runner, law = fixture

    def evaluate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = runner.evaluate(z)
        return out["test_mse"], out["fitted"]

    low, high = 0.0, 1.0  # bisect the eps at which exact reads 20 bits
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if exact_estimates(law, [mid])[0].bits > 20 else (low, mid)
    eps = high
    estimates = []
    for seed in range(3):
        settings = SplittingSettings(n_particles=200, p0=0.1, target_eps=eps, seed=seed)
        run = run_levels(evaluate, runner.noise_dim, settings,
                         step_scale=runner.step_scale).require_target()
        (est,) = splitting_estimate(run.records, [eps]).estimates
        estimates.append(est)
    bits = [e.bits for e in estimates]
    assert abs(np.mean(bits) - 20.0) < 1.0, bits
    assert sum(e.lo_bits <= 20.0 <= e.hi_bits for e in estimates) >= 2, bits
