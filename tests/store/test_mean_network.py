"""The mean network of a network run (issue 12's loss decomposition): the summed test residuals
each loss shard records, the `mean_network` view that combines them, and run_summary's split of
E[test MSE] into the mean network's test MSE and the spread around it, checked against the
networks retrained from their seeds and the decomposition computed directly."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ibdb.cli import main
from ibdb.run.plan import hypothesis_seeds, load_runs
from ibdb.spec.file import load_experiment

from conftest import make_npz, spec_dict, write_spec

N_HYPOTHESES, CHUNK = 24, 10  # three loss shards (10, 10, 4 networks)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mean_network")
    make_npz(folder / "toy.npz", n_train=30, n_test=20, n_classes=3, n_features=5)
    spec = spec_dict(n_hypotheses=N_HYPOTHESES, chunk_size=CHUNK)
    # a loose criterion that some networks miss, so that the sums must skip the unfitted ones
    spec["spaces"] = [{"name": "mlp", "kind": "mlp", "width": 8, "depth": 1,
                       "optimizer": {"kind": "adam", "lr": 0.02, "epochs": 6, "batch_size": 8},
                       "fit": {"criterion": "train_mse", "train_mse_max": 0.12}}]
    path = write_spec(folder, spec)
    db = folder / "s.duckdb"
    result = CliRunner().invoke(main, ["--db", str(db), "run", str(path)])
    assert result.exit_code == 0, result.output
    return path, db, result.output


def _direct(spec_path):
    """Retrain the run's networks from their seeds and decompose their test MSE directly."""
    ((spec, run_id, _, data),) = load_runs(load_experiment(spec_path).runs(),
                                           spec_dir=spec_path.parent)
    from ibdb.runners.mlp import RUNNER

    runner = RUNNER(spec.space, data, device=torch.device("cpu"))
    ids = np.arange(N_HYPOTHESES)
    seeds = hypothesis_seeds(spec.budget.seed, ids)
    trained = runner.train(seeds)
    params = [p.detach().to(torch.float64) for p in trained.params]
    # the inputs as the runner holds them (float32), evaluated in float64
    x_test = torch.as_tensor(data.x_test, dtype=torch.float32).to(torch.float64)
    preds = runner.predict(params, x_test.reshape(-1, *runner.net.input_shape)).numpy()
    fitted = runner.sample(ids, seeds)["fitted"]
    y = data.y_test
    kept = preds[fitted]
    mean = kept.mean(axis=0)
    of_mean = float(((mean - y) ** 2).mean())
    spread = float(((kept - mean) ** 2).mean())  # mean over networks, points and outputs
    return run_id, fitted, of_mean, spread, float(((kept - y) ** 2).mean())


def test_run_summary_splits_the_expected_test_mse_as_the_retrained_networks_do(stored):
    spec_path, db, _ = stored
    run_id, fitted, of_mean, spread, expected = _direct(spec_path)
    assert 0 < fitted.sum() < N_HYPOTHESES  # the sums must skip the unfitted networks
    con = duckdb.connect(str(db), read_only=True)
    n_fitted, view_of_mean = con.execute(
        "SELECT n_fitted, test_mse_of_mean FROM mean_network WHERE run_id = ?",
        [run_id]).fetchone()
    row = con.execute("SELECT mean_fitted_test_mse, test_mse_of_mean, test_mse_spread, "
                      "interpolates FROM run_summary WHERE run_id = ?", [run_id]).fetchone()
    n_shards = con.execute("SELECT count(*) FROM shards WHERE kind = 'losses'").fetchone()[0]
    assert n_shards == 3 and n_fitted == fitted.sum()
    assert view_of_mean == pytest.approx(of_mean, rel=1e-9)
    assert row[0] == pytest.approx(expected, rel=1e-9)
    # the bias-variance identity: mean fitted test MSE = the mean network's + the spread
    assert of_mean + spread == pytest.approx(expected, rel=1e-9)
    assert row[1] == pytest.approx(of_mean, rel=1e-9)
    assert row[2] == pytest.approx(spread, rel=1e-7)
    assert row[3] is None  # interpolation is a gp run's fact


def test_cli_names_the_mean_network(stored):
    _, _, output = stored
    assert "mean network's" in output and "posterior mean's" not in output


def test_a_shard_without_the_summary_leaves_the_run_out(stored, tmp_path):
    _, db, _ = stored
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(db.read_bytes())
    con = duckdb.connect(str(copy))
    sha, provenance = con.execute("SELECT sha256, provenance FROM shards WHERE kind = 'losses' "
                                  "ORDER BY first_hypothesis LIMIT 1").fetchone()
    meta = json.loads(provenance)
    assert set(meta["summary"]) == {"n_fitted", "test_residual_sum"}
    del meta["summary"]  # as an older shard has it
    con.execute("UPDATE shards SET provenance = ? WHERE sha256 = ?", [json.dumps(meta), sha])
    assert con.execute("SELECT count(*) FROM mean_network").fetchone()[0] == 0
    assert con.execute("SELECT test_mse_of_mean FROM run_summary").fetchone()[0] is None
