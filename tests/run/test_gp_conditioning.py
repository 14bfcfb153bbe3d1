"""A gp space conditioned on train MSE <= tau (runners/conditioning.py): the accepted hypotheses
against brute-force rejection from the prior (an independent NumPy oracle), the law not
depending on the proposal, the interpolating limit, reproducibility from the noise, refusals,
and a run whose rejected proposals are stored as not fitted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from ibdb.core.errors import IbdbError
from ibdb.data.task import load_task
from ibdb.run.plan import hypothesis_seeds
from ibdb.runners.gp import GPRunner
from ibdb.spec.sources import Task
from ibdb.spec.spaces import GPSpace

from conftest import make_npz, spec_dict, write_spec

CPU = torch.device("cpu")
BANDWIDTH, JITTER, AMPLITUDE = 1.5, 1e-6, 0.7


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conditioning")
    make_npz(folder / "d.npz", n_train=6, n_test=5, n_classes=2, n_features=2)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": "d.npz"},
                                "n_train": 6, "n_test": 5, "eps": [0.1]})
    return load_task(task, spec_dir=folder)


def _space(**fit):
    return GPSpace(name="g", bandwidth=BANDWIDTH, jitter=JITTER, amplitude=AMPLITUDE,
                   fit=fit or None)


def _oracle(data, tau, draws, seed=0):
    """Brute force in NumPy: f on train and test points jointly from the prior a [[K_XX + jI,
    K_XT], [K_TX, K_TT]] (each output independent), kept when its train MSE <= tau. Returns
    the kept hypotheses' test MSEs and the fraction kept."""
    x = np.vstack([data.x_train, data.x_test])
    n = len(data.x_train)
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    gram = np.exp(-sq / (2 * BANDWIDTH**2))
    gram[:n, :n] += JITTER * np.eye(n)
    values, vectors = np.linalg.eigh(AMPLITUDE * gram)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    rng = np.random.default_rng(seed)
    k = data.y_train.shape[1]
    f = np.einsum("ij,bjc->bic", root, rng.standard_normal((draws, len(x), k)))
    train = ((f[:, :n] - data.y_train) ** 2).mean(axis=(1, 2))
    test = ((f[:, n:] - data.y_test) ** 2).mean(axis=(1, 2))
    kept = train <= tau
    return test[kept], kept.mean(), train


def _kept_test_mse(runner, count, seed=1):
    ids = np.arange(count)
    out = runner.sample(ids, hypothesis_seeds(seed, ids))
    fitted = out["fitted"]
    assert np.isnan(out["test_mse"][~fitted]).all() and np.isfinite(out["test_mse"][fitted]).all()
    assert (out["train_mse"][fitted] <= runner.info["train_mse_max"]).all()
    return out["test_mse"][fitted], out


def test_accepted_hypotheses_have_the_prior_law_given_the_event(data):
    """Against brute-force rejection from the prior: two-sample KS, and the means within 4
    standard errors. tau is the prior's 10 % train-MSE quantile, so the oracle keeps ~10 %."""
    _, _, prior_train = _oracle(data, np.inf, 20000, seed=7)
    tau = float(np.quantile(prior_train, 0.10))
    oracle, kept_fraction, _ = _oracle(data, tau, 100_000)
    assert 0.08 < kept_fraction < 0.12
    runner = GPRunner(_space(train_mse_max=tau), data, device=CPU)
    ours, _ = _kept_test_mse(runner, 40_000)
    assert len(ours) > 3000 and len(oracle) > 8000
    assert stats.ks_2samp(ours, oracle).pvalue > 1e-3
    se = np.sqrt(ours.var() / len(ours) + oracle.var() / len(oracle))
    assert abs(ours.mean() - oracle.mean()) < 4 * se
    # the conditioning is not a no-op: the unconditioned prior's test MSE differs
    prior_test, _, _ = _oracle(data, np.inf, 20000, seed=9)
    assert stats.ks_2samp(prior_test, oracle).pvalue < 1e-6


def test_the_law_does_not_depend_on_the_proposal_noise(data):
    """Two fixed proposal noises, half and four times the one auto picks: different acceptance
    rates, the same law of the accepted hypotheses (KS)."""
    auto = GPRunner(_space(train_mse_max=0.3), data, device=CPU)
    chosen = auto.info["proposal_noise"]
    assert auto.info["proposal_noise_rule"] == "auto" and 0 < auto.info["pilot_acceptance"] <= 1
    low = GPRunner(_space(train_mse_max=0.3, proposal_noise=chosen / 2), data, device=CPU)
    high = GPRunner(_space(train_mse_max=0.3, proposal_noise=chosen * 4), data, device=CPU)
    a, out_low = _kept_test_mse(low, 30_000)
    b, out_high = _kept_test_mse(high, 30_000, seed=2)
    assert abs(out_low["fitted"].mean() - out_high["fitted"].mean()) > 0.01
    assert stats.ks_2samp(a, b).pvalue > 1e-3
    # auto's pilot estimate is the best of the three rates (within sampling error)
    rates = [auto.info["pilot_acceptance"], low.info["pilot_acceptance"],
             high.info["pilot_acceptance"]]
    assert rates[0] >= max(rates) - 0.02


def test_a_tiny_tau_approaches_the_interpolating_space(data):
    interpolating = GPRunner(_space(), data, device=CPU)
    ids = np.arange(20_000)
    exact = interpolating.sample(ids, hypothesis_seeds(3, ids))["test_mse"]
    conditioned = GPRunner(_space(train_mse_max=1e-9), data, device=CPU)
    ours, _ = _kept_test_mse(conditioned, 40_000)
    assert len(ours) > 2000
    assert stats.ks_2samp(ours, exact).pvalue > 1e-3
    assert interpolating.info["interpolates"] is True
    assert conditioned.info["interpolates"] is None  # its own criterion, checked per hypothesis
    assert conditioned.spectrum() is None and interpolating.spectrum() is not None


def test_sample_equals_evaluate_of_its_noise_bit_for_bit(data):
    runner = GPRunner(_space(train_mse_max=0.3), data, device=CPU)
    ids = np.arange(200)
    seeds = hypothesis_seeds(4, ids)
    sampled = runner.sample(ids, seeds)
    noise = runner.noise(seeds)
    n, k = data.y_train.shape
    assert noise.shape == (200, len(data.x_test) * k + n * k + 1) == (200, runner.noise_dim)
    evaluated = runner.evaluate(noise)
    assert 0 < sampled["fitted"].sum() < 200
    for name, values in sampled.items():
        np.testing.assert_array_equal(values, evaluated[name], err_msg=name)
    # the coin decides: a proposal inside the ball with a coin normal of -inf is always kept
    noise[:, -1] = -np.inf
    forced = runner.evaluate(noise)
    assert (forced["fitted"] == (forced["train_mse"] <= 0.3)).all()


def test_spec_and_refusals(data):
    with pytest.raises(ValidationError, match="train_mse_max"):
        GPSpace(name="g", fit={})
    with pytest.raises(ValidationError, match="greater than 0"):
        GPSpace(name="g", fit={"train_mse_max": 0})
    # an unconditioned space's identity (and run id) has no fit key
    assert "fit" not in GPSpace(name="g").identity()
    assert GPSpace(name="g", fit={"train_mse_max": 0.1}).identity()["fit"] == {
        "criterion": "train_mse", "train_mse_max": 0.1, "proposal_noise": "auto"}
    # a proposal far too wide for the ball accepts nothing: refused, saying what to change
    with pytest.raises(IbdbError, match=r"accepts about .*fit\.train_mse_max"):
        GPRunner(_space(train_mse_max=1e-6, proposal_noise=1e4), data, device=CPU)


def test_run_stores_rejected_proposals_as_not_fitted(tmp_path):
    from click.testing import CliRunner

    from ibdb.cli import main

    make_npz(tmp_path / "toy.npz", n_train=30, n_test=20, n_classes=3, n_features=4)
    spec = spec_dict(n_train=30, n_test=20)
    spec["spaces"] = [{"name": "conditioned", "kind": "gp", "bandwidth": 1.0,
                       "fit": {"train_mse_max": 0.05}}]
    spec["budgets"][0].update({"n_hypotheses": 3000, "chunk_size": 1000})
    path = write_spec(tmp_path, spec)
    db = str(tmp_path / "s.duckdb")
    result = CliRunner().invoke(main, ["--db", db, "run", str(path)])
    assert result.exit_code == 0, result.output
    assert "did not fit the training data and are excluded" in result.output
    import duckdb

    con = duckdb.connect(db, read_only=True)
    n_fit, n_all, nan_rejected, worst = con.execute(
        "SELECT count(*) FILTER (fitted), count(*), bool_and(test_mse IS NULL) FILTER (NOT fitted),"
        " max(train_mse) FILTER (fitted) FROM losses").fetchone()
    assert n_all == 3000 and 0 < n_fit < n_all and nan_rejected and worst <= 0.05
    info = json.loads(con.execute("SELECT runner_info FROM runs").fetchone()[0])
    assert info["fit_criterion"] == "train_mse" and info["proposal_noise"] > 0
    # estimates read the fitted hypotheses only; no exact row (no closed form)
    rows = con.execute("SELECT DISTINCT method, n FROM estimates").fetchall()
    methods = {m for m, _ in rows}
    assert "exact" not in methods and "empirical" in methods
    assert {n for m, n in rows if m == "empirical"} == {n_fit}


def test_splitting_on_a_conditioned_space_matches_brute_force(data):
    """Subset simulation over a conditioned space's noise (rejected proposals never enter a
    level) against brute-force rejection from the prior at ~7 bits. The oracle keeps ~10 % of
    600 000 prior draws, so ~470 reach eps (its own SE ~0.07 bits); the mean of 4 splitting
    repeats must lie within 0.5 bits of it."""
    from ibdb.run.splitting import SplittingSettings, run_levels
    from ibdb.stats.subset_simulation import splitting_estimate

    _, _, prior_train = _oracle(data, np.inf, 20000, seed=7)
    tau = float(np.quantile(prior_train, 0.10))
    kept = np.concatenate([_oracle(data, tau, 200_000, seed=s)[0] for s in (11, 12, 13)])
    eps = float(np.quantile(kept, 2.0**-7))
    oracle_bits = -np.log2(np.mean(kept <= eps))
    runner = GPRunner(_space(train_mse_max=tau), data, device=CPU)

    def evaluate(z):
        out = runner.evaluate(z)
        return out["test_mse"], out["fitted"]

    bits = []
    for seed in range(4):
        settings = SplittingSettings(n_particles=2000, p0=0.1, target_eps=eps, seed=seed)
        run = run_levels(evaluate, runner.noise_dim, settings).require_target()
        (est,) = splitting_estimate(run.records, [eps]).estimates
        bits.append(est.bits)
    assert abs(np.mean(bits) - oracle_bits) < 0.5, (bits, oracle_bits)
