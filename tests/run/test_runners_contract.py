"""The contract every registered runner keeps, run on CPU with its tiny sane parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibdb.data.task import load_task
from ibdb.run.plan import hypothesis_seeds
from ibdb.runners import check_space, load_runner
from ibdb.runners.base import LOSS_COLUMNS
from ibdb.spec.sources import Task
from ibdb.spec.spaces import SPACES, parse_space

from conftest import make_npz


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Small two-channel 4x4 images: every runner can use them (gp and mlp see 32 features)."""
    folder = tmp_path_factory.mktemp("contract")
    make_npz(folder / "flat.npz", n_train=20, n_test=15, n_classes=3, n_features=32)
    with np.load(folder / "flat.npz") as flat:
        arrays = {k: flat[k] for k in flat.files}
    for name in ("X_train", "X_test"):
        arrays[name] = arrays[name].reshape(-1, 2, 4, 4)
    np.savez(folder / "d.npz", **arrays)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": "d.npz"},
                                "n_train": 20, "n_test": 15, "eps": [0.1]})
    data = load_task(task, spec_dir=folder)
    assert data.image_shape == (2, 4, 4)
    return data


def _assert_loss_columns(batch, entry, n):
    """The required loss columns and others of the entry's, each of its declared dtype and
    length n; floats finite, except the test losses of hypotheses marked not fitted by a runner
    that does not compute them (NaN)."""
    required = {n for n, c in LOSS_COLUMNS.items() if c.required}
    assert required <= set(batch) <= set(entry.loss_columns)
    fitted = batch.get("fitted", np.ones(n, dtype=bool))
    for name, values in batch.items():
        assert values.dtype == np.dtype(LOSS_COLUMNS[name].dtype), name
        assert values.shape == (n,), name
        if values.dtype.kind == "f":
            assert np.isfinite(values[fitted]).all(), name
            assert np.isfinite(values).all() or name in ("test_mse", "test_error"), name


def _distinct_fitted(values, batch):
    """Different seeds give different hypotheses (those with losses)."""
    kept = values[batch.get("fitted", np.ones(len(values), dtype=bool))]
    assert len(kept) >= 2 and len(np.unique(kept)) == len(kept)


# every registered runner's sane space, and the gp conditioned on a train MSE (a loose one, so
# that the tiny task accepts a good share of proposals)
SANE = [(e.kind, e.sane_space) for e in SPACES] + [
    ("gp", {**SPACES.get("gp").sane_space, "fit": {"train_mse_max": 1.0}})]
SANE_IDS = [kind if "fit" not in space else f"{kind}-train-mse" for kind, space in SANE]


@pytest.mark.parametrize(("kind", "sane_space"), SANE, ids=SANE_IDS)
def test_runner_contract(kind, sane_space, tiny_data):
    entry = SPACES.get(kind)
    cls = load_runner(kind)
    space = parse_space(sane_space)
    assert space.kind == kind
    check_space(space, tiny_data)  # the sane parameters pass the plan's check
    assert set(entry.loss_columns) <= set(LOSS_COLUMNS)
    assert {n for n, c in LOSS_COLUMNS.items() if c.required} <= set(entry.loss_columns)
    runner = cls(space, tiny_data, device=torch.device("cpu"))
    ids = np.arange(10, 26)
    seeds = hypothesis_seeds(3, ids)
    batch = runner.sample(ids, seeds)
    _assert_loss_columns(batch, entry, len(ids))
    # deterministic per seed, and hypothesis i alone equals hypothesis i inside a batch
    again = cls(space, tiny_data, device=torch.device("cpu")).sample(ids, seeds)
    for name in batch:
        np.testing.assert_array_equal(batch[name], again[name])
    for i in (0, 5, 15):
        alone = runner.sample(ids[i:i + 1], seeds[i:i + 1])
        for name in batch:
            np.testing.assert_allclose(alone[name], batch[name][i:i + 1], rtol=1e-12,
                                       equal_nan=True, err_msg=f"{name} of hypothesis {i}")
    _distinct_fitted(batch["test_mse"], batch)
    for name in ("test_error", "train_error"):
        if name in batch:
            assert 0 <= np.nanmin(batch[name]) and np.nanmax(batch[name]) <= 1
    if "epochs" in batch:
        assert (batch["epochs"] >= 1).all()
        assert (batch["epochs"] <= space.optimizer.epochs).all()


@pytest.mark.parametrize(("kind", "sane_space"), SANE, ids=SANE_IDS)
def test_runner_evaluate_contract(kind, sane_space, tiny_data):
    """evaluate(noise), what rare-event samplers call: the columns sample returns, a
    hypothesis fixed by its (noise row, seed) whatever shares its batch, and noise(seeds) a
    deterministic (B, noise_dim) float64 first level."""
    entry = SPACES.get(kind)
    cls = load_runner(kind)
    space = parse_space(sane_space)
    runner = cls(space, tiny_data, device=torch.device("cpu"))
    assert isinstance(runner.noise_dim, int) and runner.noise_dim > 0
    ids = np.arange(12)
    seeds = hypothesis_seeds(5, ids)
    noise = runner.noise(seeds)
    assert noise.shape == (len(ids), runner.noise_dim) and noise.dtype == np.float64
    np.testing.assert_array_equal(noise, cls(space, tiny_data,
                                             device=torch.device("cpu")).noise(seeds))
    # a moved point, as a pCN step makes it: not float32-representable
    rng = np.random.default_rng(0)
    noise = 0.9 * noise + np.sqrt(1 - 0.9**2) * rng.standard_normal(noise.shape)
    batch = runner.evaluate(noise)
    _assert_loss_columns(batch, entry, len(ids))
    _distinct_fitted(batch["test_mse"], batch)
    again = cls(space, tiny_data, device=torch.device("cpu")).evaluate(noise)
    for name in batch:
        np.testing.assert_array_equal(batch[name], again[name])
    for rows in ([0], [7, 3], [11, 2, 5]):
        part = runner.evaluate(noise[rows])
        for name in batch:
            np.testing.assert_allclose(part[name], batch[name][rows], rtol=1e-12,
                                       equal_nan=True, err_msg=f"{name} of hypotheses {rows}")
    if "epochs" in batch:
        assert ((batch["epochs"] >= 1) & (batch["epochs"] <= space.optimizer.epochs)).all()
