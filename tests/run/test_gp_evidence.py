"""The gp space's amplitude and its hyperparameters chosen by the evidence (runners/evidence.py):
the evidence against scipy's Gaussian log density, the choices against brute-force grids, the
amplitude's exact effect on the posterior, the spec's checks, and a run that stores the choice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ibdb.core.errors import IbdbError, SpecError
from ibdb.data.task import load_task
from ibdb.run.plan import hypothesis_seeds, load_runs
from ibdb.runners.evidence import (
    RANGE_FACTOR,
    best_amplitude,
    evidence_terms,
    log_evidence,
    search_bandwidth,
)
from ibdb.runners.gp import GPRunner
from ibdb.spec.file import load_experiment
from ibdb.spec.sources import Task
from ibdb.spec.spaces import GPSpace

from conftest import make_npz, spec_dict, write_spec

CPU = torch.device("cpu")
ML = "marginal_likelihood"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evidence")
    make_npz(folder / "d.npz", n_train=40, n_test=25, n_classes=3, n_features=4)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": "d.npz"},
                                "n_train": 40, "n_test": 25, "eps": [0.1]})
    return load_task(task, spec_dir=folder)


def _kernel(a, b, bandwidth, kind="rbf"):
    """The unit-amplitude kernel in NumPy (independent of runners/kernels.py)."""
    r = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    if kind == "rbf":
        return np.exp(-(r**2) / (2 * bandwidth**2))
    s = math.sqrt(5) * r / bandwidth  # matern 5/2
    return (1 + s + s**2 / 3) * np.exp(-s)


def _numpy_evidence(x, y, bandwidth, amplitude, jitter, kind="rbf"):
    """log N(Y | 0, a (K + jI)) summed over the outputs, from slogdet and a solve; ``amplitude``
    None profiles it out (a = q / (n k)). Returns (evidence, amplitude)."""
    n, k = y.shape
    gram = _kernel(x, x, bandwidth, kind) + jitter * np.eye(n)
    quad = float((y * np.linalg.solve(gram, y)).sum())
    logdet = np.linalg.slogdet(gram)[1]
    a = quad / (n * k) if amplitude is None else amplitude
    value = -quad / (2 * a) - n * k / 2 * np.log(a) - k / 2 * logdet - n * k / 2 * np.log(
        2 * np.pi)
    return value, a


def _median_distance(x):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return float(np.median(d[np.triu_indices(len(x), 1)]))


# -- (a) the evidence against an independent computation ---------------------------------------

@pytest.mark.parametrize(("amplitude", "jitter"), [(1.0, 1e-8), (0.37, 1e-3), (12.5, 1e-6)])
def test_evidence_equals_gaussian_log_density_per_output(amplitude, jitter):
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3))
    y = np.eye(4)[rng.integers(0, 4, size=12)]
    gram = _kernel(x, x, 1.1)
    terms = evidence_terms(torch.as_tensor(gram.copy()), torch.as_tensor(y), jitter)
    assert terms is not None
    got = log_evidence(*terms, 12, 4, amplitude)
    # the jitter is scaled by the amplitude with the kernel: the prior is a (K + jI)
    cov = amplitude * (gram + jitter * np.eye(12))
    want = sum(multivariate_normal(np.zeros(12), cov).logpdf(y[:, c]) for c in range(4))
    assert got == pytest.approx(want, rel=1e-10, abs=1e-8)


def test_runner_records_the_evidence_of_its_space(data):
    for space, amplitude in [({"bandwidth": 1.3}, 1.0), ({"bandwidth": 1.3, "amplitude": 0.2},
                                                          0.2)]:
        runner = GPRunner(GPSpace(name="g", **space), data, device=CPU)
        want, _ = _numpy_evidence(data.x_train, data.y_train, 1.3, amplitude, 1e-8)
        info = runner.info
        assert (info["amplitude"], info["amplitude_rule"]) == (amplitude, "fixed")
        assert info["log_evidence"] == pytest.approx(want, rel=1e-9)
        assert info["log_evidence_per_point"] == pytest.approx(want / 40, rel=1e-9)


def test_not_positive_definite_kernel_returns_none():
    gram = torch.ones(5, 5, dtype=torch.float64)  # rank one
    assert evidence_terms(gram, torch.eye(5, 2, dtype=torch.float64), 0.0) is None


# -- (b) the chosen values against brute-force grids -------------------------------------------

def test_amplitude_is_the_grid_maximiser(data):
    runner = GPRunner(GPSpace(name="g", bandwidth=1.3, amplitude=ML), data, device=CPU)
    chosen = runner.info["amplitude"]
    assert runner.info["amplitude_rule"] == ML and runner.info["bandwidth_rule"] == "fixed"
    log_grid = np.linspace(math.log(chosen) - 5, math.log(chosen) + 5, 4001)
    values = [_numpy_evidence(data.x_train, data.y_train, 1.3, math.exp(v), 1e-8)[0]
              for v in log_grid]
    best = int(np.argmax(values))
    step = log_grid[1] - log_grid[0]
    assert abs(math.log(chosen) - log_grid[best]) <= step
    own, _ = _numpy_evidence(data.x_train, data.y_train, 1.3, chosen, 1e-8)
    assert own >= values[best] - 1e-9 * abs(values[best])
    assert runner.info["log_evidence"] == pytest.approx(own, rel=1e-9)


@pytest.mark.parametrize(("kernel", "amplitude"), [("rbf", ML), ("rbf", 0.5), ("matern", ML)])
def test_bandwidth_is_the_grid_maximiser(data, kernel, amplitude):
    extra = {"nu": 2.5} if kernel == "matern" else {}
    space = GPSpace(name="g", kernel=kernel, bandwidth=ML, amplitude=amplitude, **extra)
    info = GPRunner(space, data, device=CPU).info
    fixed = None if amplitude == ML else amplitude
    centre = _median_distance(data.x_train)
    assert info["bandwidth_rule"] == ML
    assert info["evidence_search"]["bandwidth_range"] == pytest.approx(
        [centre / RANGE_FACTOR, centre * RANGE_FACTOR], rel=1e-12)
    assert not info["evidence_search"]["at_bound"]
    # the search's whole range, 1500 points
    log_grid = np.linspace(math.log(centre / RANGE_FACTOR), math.log(centre * RANGE_FACTOR), 1500)
    values = [_numpy_evidence(data.x_train, data.y_train, math.exp(v), fixed, 1e-8, kernel)[0]
              for v in log_grid]
    best = int(np.argmax(values))
    assert 0 < best < len(log_grid) - 1  # an interior maximum, so the check means something
    step = log_grid[1] - log_grid[0]
    assert abs(math.log(info["bandwidth"]) - log_grid[best]) <= step
    own, a = _numpy_evidence(data.x_train, data.y_train, info["bandwidth"], fixed, 1e-8, kernel)
    assert own >= values[best] - 1e-9 * abs(values[best])
    assert info["log_evidence"] == pytest.approx(own, rel=1e-9)
    assert info["amplitude"] == pytest.approx(a, rel=1e-5)  # 6 significant digits


def test_search_on_a_known_profile_skips_failures_and_flags_a_bound():
    # with amplitude 1 the evidence is -q/2 - k D/2 - const: q = 2 (log l - log 2)^2 peaks at 2
    def peaked(bandwidth):
        return None if bandwidth > 10 else (2 * (math.log(bandwidth) - math.log(2.0)) ** 2, 0.0)

    found = search_bandwidth(peaked, 3, 1, centre=1.0, amplitude=1.0)
    assert found.bandwidth == pytest.approx(2.0, rel=1e-3) and not found.at_bound
    assert found.log_evidence == pytest.approx(-1.5 * math.log(2 * math.pi), abs=1e-6)

    def rising(bandwidth):  # still rising at the lower end, 1/32
        return (2 * (math.log(bandwidth) - math.log(1e-3)) ** 2, 0.0)

    low = search_bandwidth(rising, 3, 1, centre=1.0, amplitude=1.0)
    assert low.at_bound and low.bandwidth == pytest.approx(1 / 32, rel=1e-3)
    with pytest.raises(IbdbError, match="not positive definite .* at any of 21 bandwidths"):
        search_bandwidth(lambda bandwidth: None, 3, 1, centre=1.0, amplitude=None)


def test_singular_training_kernel_is_a_clear_error(data):
    doubled = type(data)(**{**data.__dict__,
                            "x_train": np.repeat(data.x_train[:20], 2, axis=0)})
    with pytest.raises(IbdbError, match="not positive definite .* Raise jitter"):
        GPRunner(GPSpace(name="g", bandwidth=ML, jitter=0.0), doubled, device=CPU)
    with pytest.raises(IbdbError, match="quadratic form"):
        best_amplitude(float("nan"), 4, 2)


# -- (c) the amplitude scales the posterior covariance exactly ---------------------------------

def test_amplitude_scales_the_covariance_and_not_the_mean(data):
    c = 0.03
    one = GPRunner(GPSpace(name="g", bandwidth=1.3), data, device=CPU)
    scaled = GPRunner(GPSpace(name="g", bandwidth=1.3, amplitude=c), data, device=CPU)
    assert torch.equal(one.mean, scaled.mean) and torch.equal(one.eigenvectors,
                                                               scaled.eigenvectors)
    np.testing.assert_allclose(scaled.spectrum()["eigenvalue"], c * one.spectrum()["eigenvalue"],
                               rtol=1e-15, atol=0)
    np.testing.assert_array_equal(scaled.spectrum()["residuals"], one.spectrum()["residuals"])
    assert scaled.info["train_interp_max_abs_error"] == one.info["train_interp_max_abs_error"]
    # With the same normals z: MSE_a(+-z) = A + a B +- sqrt(a) C, A the mean's own MSE
    ids = np.arange(64)
    seeds = hypothesis_seeds(7, ids)
    noise = one.noise(seeds)
    plus_1, plus_c = one.sample(ids, seeds)["test_mse"], scaled.sample(ids, seeds)["test_mse"]
    minus_1 = one.evaluate(-noise)["test_mse"]
    minus_c = scaled.evaluate(-noise)["test_mse"]
    mean_part = float(((one.mean.numpy() - data.y_test) ** 2).mean())
    np.testing.assert_allclose((plus_c + minus_c) / 2 - mean_part,
                               c * ((plus_1 + minus_1) / 2 - mean_part), rtol=1e-9)
    np.testing.assert_allclose(plus_c - minus_c, math.sqrt(c) * (plus_1 - minus_1),
                               rtol=1e-7, atol=1e-14)


# -- (d) the spec ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"amplitude": 0}, {"amplitude": -1.0}, {"amplitude": float("inf")},
    {"amplitude": float("nan")}, {"amplitude": "1.0"}, {"amplitude": "median"},
    {"amplitude": True}, {"bandwidth": "marginal-likelihood"},
])
def test_bad_amplitude_or_bandwidth_is_refused(fields):
    with pytest.raises(ValidationError):
        GPSpace.model_validate({"name": "g", **fields})


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_marginal_likelihood_bandwidth_is_refused_for_network_kernels(kernel):
    with pytest.raises(ValidationError, match="bandwidth = 'marginal_likelihood' applies to "
                                              "kernels 'rbf', 'laplace', 'matern' and "
                                              f"'arccos', not to '{kernel}'"):
        GPSpace(name="g", kernel=kernel, depth=2, bandwidth=ML)
    # their amplitude may still be chosen (an nngp without width is a pure power of init_scale)
    assert GPSpace(name="g", kernel=kernel, depth=2, amplitude=ML).amplitude == ML


def test_arccos_without_bias_cannot_choose_bandwidth_and_amplitude_together():
    with pytest.raises(ValidationError, match="only scales it"):
        GPSpace(name="g", kernel="arccos", bandwidth=ML, amplitude=ML)
    GPSpace(name="g", kernel="arccos", bandwidth=ML, amplitude=ML, bias_variance=0.5)
    GPSpace(name="g", kernel="arccos", bandwidth=ML)


def test_spec_errors_name_the_field(tmp_path):
    spec = spec_dict()
    spec["spaces"][0]["amplitude"] = -2.0
    with pytest.raises(SpecError, match=r"spaces\.0\.amplitude: Input should be greater than 0"):
        load_experiment(write_spec(tmp_path, spec))


def test_old_identities_and_run_ids_are_unchanged(tmp_path):
    # the identity every gp space had before amplitude existed: no amplitude key
    assert GPSpace(name="g", bandwidth=1.3).identity() == {
        "kind": "gp", "kernel": "rbf", "bandwidth": 1.3, "jitter": 1e-8}
    assert GPSpace(name="g", kernel="nngp", depth=2).identity() == {
        "kind": "gp", "kernel": "nngp", "jitter": 1e-8, "depth": 2, "init_scale": 1.0,
        "activation": "relu"}
    make_npz(tmp_path / "toy.npz")
    ids = {}
    for label, extra in [("old", {}), ("one", {"amplitude": 1.0}), ("int", {"amplitude": 1}),
                         ("half", {"amplitude": 0.5}), ("ml", {"amplitude": ML}),
                         ("mlbw", {"bandwidth": ML})]:
        spec = spec_dict(name=label)
        spec["spaces"][0].update(extra)
        runs = load_runs(load_experiment(write_spec(tmp_path, spec, f"{label}.yaml")).runs(),
                         spec_dir=tmp_path)
        ids[label] = runs[0][1]
    assert ids["old"] == ids["one"] == ids["int"]
    assert len({ids["old"], ids["half"], ids["ml"], ids["mlbw"]}) == 4


def test_quickstart_run_id_is_unchanged():
    """The run id the README prints for the quickstart (an rbf gp space without amplitude)."""
    from importlib import resources

    spec = resources.files("ibdb.examples").joinpath("quickstart.yaml")
    runs = load_runs(load_experiment(Path(str(spec))).runs(), spec_dir=Path(str(spec)).parent)
    assert runs[0][1] == "888bc2a983520963"


# -- (e) end to end ----------------------------------------------------------------------------

def test_run_stores_the_evidence_choice(tmp_path):
    from ibdb.api import Ibdb

    spec = {
        "name": "evidence",
        "tasks": [{"name": "digits-60", "source": {"kind": "digits"}, "n_train": 60,
                   "n_test": 40, "eps": [0.05]}],
        "spaces": [{"name": "rbf-ml", "kind": "gp", "kernel": "rbf", "bandwidth": ML,
                    "amplitude": ML}],
        "budgets": [{"name": "b", "n_hypotheses": 20, "chunk_size": 20}],
    }
    path = write_spec(tmp_path, spec)
    ibdb = Ibdb(tmp_path / "s.duckdb")
    ibdb.run(path, estimate=False)
    _, rows = ibdb.sql("SELECT runner_info FROM runs")
    assert len(rows) == 1
    info = json.loads(rows[0][0]) if isinstance(rows[0][0], str) else rows[0][0]
    assert info["amplitude_rule"] == info["bandwidth_rule"] == ML
    assert info["amplitude"] > 0 and info["bandwidth"] > 0
    assert math.isfinite(info["log_evidence"]) and info["evidence_search"]["evaluations"] > 21
    # the stored choice is the one a runner built from the same spec makes
    planned = ibdb.plan(path)[0]
    again = GPRunner(planned.spec.space, planned.data, device=CPU).info
    assert (again["amplitude"], again["bandwidth"]) == (info["amplitude"], info["bandwidth"])
