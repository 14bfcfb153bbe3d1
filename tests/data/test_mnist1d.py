"""The mnist1d source: MNIST-1D generated offline by the mnist1d package's own generator."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from ibdb.cli import main
from ibdb.core.errors import DataError, SpecError
from ibdb.data.task import load_task
from ibdb.spec.file import load_experiment
from ibdb.spec.sources import Task

from conftest import spec_dict, write_spec

mnist1d_data = pytest.importorskip("mnist1d.data")


def _task(source: dict | None = None, **kw) -> Task:
    base = {"name": "m1d", "source": {"kind": "mnist1d", **(source or {})}, "n_train": 4000,
            "n_test": 1000, "eps": [0.1]}
    base.update(kw)
    return Task.model_validate(base)


@pytest.fixture(scope="module")
def standard():
    return load_task(_task(), spec_dir=".")


def test_standard_settings_give_the_packages_split_of_40_point_signals(standard):
    assert standard.x_train.shape == (4000, 40) and standard.x_test.shape == (1000, 40)
    assert standard.image_shape == (1, 1, 40) and standard.n_outputs == 10
    assert set(standard.labels_test.tolist()) == set(range(10))
    np.testing.assert_array_equal(standard.y_test.argmax(1), standard.labels_test)
    assert standard.pool_size == 5000
    # the same signals as the package's make_dataset with its default arguments (rows permuted
    # by split_seed, which keeps the package's split)
    ref = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
    ref_test = {row.tobytes(): label for row, label in zip(ref["x_test"], ref["y_test"],
                                                          strict=True)}
    assert all(ref_test[row.tobytes()] == label
               for row, label in zip(standard.x_test, standard.labels_test, strict=True))
    ref_train = {row.tobytes() for row in ref["x"]}
    assert all(row.tobytes() in ref_train for row in standard.x_train)


def test_loading_leaves_global_random_state_alone():
    np.random.seed(7)
    random.seed(7)
    expected = (np.random.rand(), random.random())
    np.random.seed(7)
    random.seed(7)
    load_task(_task({"num_samples": 100}, n_train=50, n_test=20), spec_dir=".")
    assert (np.random.rand(), random.random()) == expected


def test_seed_fixes_data_and_fingerprint(standard):
    again = load_task(_task(), spec_dir=".")
    np.testing.assert_array_equal(again.x_train, standard.x_train)
    np.testing.assert_array_equal(again.x_test, standard.x_test)
    assert again.fingerprint == standard.fingerprint
    version = standard.fingerprint.split(":")[2]
    assert standard.fingerprint.startswith(f"mnist1d:v1:{version}:")
    settings = json.loads(standard.fingerprint.split(":", 3)[3])
    assert settings["seed"] == 42 and settings["num_samples"] == 5000
    assert "url" not in settings
    other = load_task(_task({"seed": 1}), spec_dir=".")
    assert other.fingerprint != standard.fingerprint
    assert not np.allclose(other.x_test, standard.x_test)


def test_generator_settings_enter_the_fingerprint():
    small = {"num_samples": 100}
    base = load_task(_task(small, n_train=20, n_test=10), spec_dir=".")
    for change in ({"iid_noise_scale": 0.05}, {"shuffle_seq": True}, {"train_split": 0.5},
                   {"final_seq_length": 30}):
        data = load_task(_task({**small, **change}, n_train=20, n_test=10), spec_dir=".")
        assert data.fingerprint != base.fingerprint, change
    short = load_task(_task({**small, "final_seq_length": 30}, n_train=20, n_test=10),
                      spec_dir=".")
    assert short.x_train.shape == (20, 30) and short.image_shape == (1, 1, 30)


def test_n_train_n_test_subsets_of_the_fixed_split(standard):
    small = load_task(_task(n_train=300, n_test=200, split_seed=3), spec_dir=".")
    assert small.x_train.shape == (300, 40) and small.x_test.shape == (200, 40)
    train_rows = {row.tobytes() for row in standard.x_train}
    test_rows = {row.tobytes() for row in standard.x_test}
    assert all(row.tobytes() in train_rows for row in small.x_train)
    assert all(row.tobytes() in test_rows for row in small.x_test)
    assert small.fingerprint == standard.fingerprint  # the split is not the data's identity
    with pytest.raises(SpecError, match=r"n_train = 4001, but the generated mnist1d data "
                                        r"holds only 4000 train examples"):
        load_task(_task(n_train=4001), spec_dir=".")


@pytest.mark.parametrize("bad", [{"num_samples": 105}, {"num_samples": 10},
                                 {"train_split": 1.0}, {"num_samples": 20, "train_split": 0.01},
                                 {"final_seq_length": 1}, {"iid_noise_scale": -1.0}])
def test_bad_generator_settings_are_spec_errors(tmp_path, bad):
    spec = spec_dict(source={"kind": "mnist1d", **bad})
    with pytest.raises(SpecError) as info:
        load_experiment(write_spec(tmp_path, spec))
    assert "source" in str(info.value)


def _invoke(tmp_path, *args: str):
    return CliRunner().invoke(main, ["--db", str(tmp_path / "m.duckdb"), "--shards",
                                     str(tmp_path / "shards"), "--device", "cpu", *args])


def test_run_gp_and_mlp_spaces_through_the_cli(tmp_path):
    spec = spec_dict(source={"kind": "mnist1d", "num_samples": 200}, n_train=60, n_test=40,
                     n_hypotheses=8, chunk_size=8, eps=[0.5, 0.1], bandwidth=5.0)
    spec["spaces"].append({"name": "mlp", "kind": "mlp", "width": 16, "depth": 1,
                           "activation": "relu",
                           "optimizer": {"kind": "adam", "lr": 1e-2, "weight_decay": 0.0,
                                         "batch_size": 30, "epochs": 3},
                           "fit": {"criterion": "train_accuracy", "stop_when_fit": True}})
    result = _invoke(tmp_path, "run", str(write_spec(tmp_path, spec)))
    assert result.exit_code == 0, result.output
    assert "2 run(s): 2 sampled" in result.output
    stored = _invoke(tmp_path, "sql", "SELECT n_stored, complete FROM run_summary",
                     "--format", "json")
    assert stored.exit_code == 0, stored.output
    assert [(r["n_stored"], r["complete"]) for r in json.loads(stored.output)] == \
        [(8, True), (8, True)]


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(DataError, match=r"pip install mnist1d"):
        load_task(_task(), spec_dir=".")
    spec = spec_dict(source={"kind": "mnist1d"}, n_train=60, n_test=40)
    result = _invoke(tmp_path, "run", str(write_spec(tmp_path, spec)))
    assert result.exit_code == 2, result.output
    assert "pip install mnist1d" in result.output and "Traceback" not in result.output
