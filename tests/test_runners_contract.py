"""The contract every registered runner keeps, run on CPU with its tiny sane parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibdb.plan import hypothesis_seeds
from ibdb.runners import RUNNERS
from ibdb.runners.base import LOSS_COLUMNS
from ibdb.specs import Task
from ibdb.tasks import load_task

from conftest import make_npz


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    make_npz(folder / "d.npz", n_train=20, n_test=15, n_classes=3)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": "d.npz"},
                                "n_train": 20, "n_test": 15, "eps": [0.1]})
    return load_task(task, spec_dir=folder)


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_runner_contract(kind, tiny_data):
    entry = RUNNERS[kind]
    cls = entry.load()
    from ibdb.specs import HypothesisSpace

    space = HypothesisSpace.model_validate(entry.sane_space)
    runner = cls(space, tiny_data, device=torch.device("cpu"))
    ids = np.arange(10, 26)
    seeds = hypothesis_seeds(3, ids)
    batch = runner.sample(ids, seeds)
    assert set(batch) == set(LOSS_COLUMNS)
    for name, values in batch.items():
        assert values.dtype == np.float64 and values.shape == (len(ids),), name
        assert np.isfinite(values).all(), name
    # deterministic per seed, and hypothesis i alone equals hypothesis i inside a batch
    again = cls(space, tiny_data, device=torch.device("cpu")).sample(ids, seeds)
    for name in batch:
        np.testing.assert_array_equal(batch[name], again[name])
    alone = runner.sample(ids[5:6], seeds[5:6])
    for name in batch:
        np.testing.assert_allclose(alone[name], batch[name][5:6], rtol=1e-12)
    # different seeds give different hypotheses
    assert len(np.unique(batch["test_mse"])) == len(ids)
    assert 0 <= batch["test_error"].min() and batch["test_error"].max() <= 1
