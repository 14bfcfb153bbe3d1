"""Execution: progress, crash and resume, and agreement of sampled losses with the exact law."""

from __future__ import annotations

import hashlib
import json

import duckdb
import numpy as np
import pytest
import torch

from ibdb.api import Ibdb
from ibdb.core.errors import IbdbError
from ibdb.runners import gp as gp_module
from ibdb.stats.spectrum import gp_loss_distribution

from conftest import interrupt_gp_sampling, make_npz, spec_dict, write_spec


def _losses(api: Ibdb) -> np.ndarray:
    _, rows = api.sql("SELECT hypothesis_id, seed, test_mse, test_error FROM losses "
                      "ORDER BY hypothesis_id")
    return np.array(rows, dtype=np.float64)


def test_progress_reports_every_chunk(tmp_path, toy_spec):
    calls = []
    Ibdb(tmp_path / "p.duckdb", device="cpu").run(
        toy_spec, progress=lambda label, done, total: calls.append((label, done, total)),
        estimate=False)
    assert calls == [("tiny/toy/gp/b", d, 200) for d in (64, 128, 192, 200)]


def test_a_crashed_run_resumes_to_the_uninterrupted_result(tmp_path, toy_spec, monkeypatch):
    reference = Ibdb(tmp_path / "ref.duckdb", device="cpu")
    reference.run(toy_spec, estimate=False)

    real_sample = gp_module.GPRunner.sample
    api = Ibdb(tmp_path / "crash.duckdb", device="cpu")
    interrupt_gp_sampling(monkeypatch, at_chunk=3)
    with pytest.raises(KeyboardInterrupt):
        api.run(toy_spec, estimate=False)
    shards = sorted((api.shard_root).glob("*/losses-*.parquet"))
    assert [p.name[:27] for p in shards] == ["losses-000000000-000000063-",
                                             "losses-000000064-000000127-"]
    assert not list(api.shard_root.glob("*/.*tmp*"))  # no partial files left behind

    monkeypatch.setattr(gp_module.GPRunner, "sample", real_sample)
    recomputed = {"n": 0}

    def counting(self, ids, seeds):
        recomputed["n"] += len(ids)
        return real_sample(self, ids, seeds)

    monkeypatch.setattr(gp_module.GPRunner, "sample", counting)
    api.run(toy_spec, estimate=False)
    assert recomputed["n"] == 200 - 128  # the two finished chunks were not recomputed
    np.testing.assert_array_equal(_losses(api), _losses(reference))


def test_more_hypotheses_extend_a_stored_run(tmp_path):
    make_npz(tmp_path / "toy.npz")
    small = write_spec(tmp_path, spec_dict(n_hypotheses=100), "small.yaml")
    large = write_spec(tmp_path, spec_dict(n_hypotheses=250), "large.yaml")
    api = Ibdb(tmp_path / "grow.duckdb", device="cpu")
    api.run(small, estimate=False)
    (planned,) = api.plan(large)
    assert planned.missing_ids.tolist() == list(range(100, 250))
    api.run(large, estimate=False)
    whole = Ibdb(tmp_path / "whole.duckdb", device="cpu")
    whole.run(large, estimate=False)
    np.testing.assert_array_equal(_losses(api), _losses(whole))


def test_sampled_losses_follow_the_exact_distribution(tmp_path):
    """End to end: the runner's stored losses against the exact CDF from its stored spectrum."""
    make_npz(tmp_path / "toy.npz", n_train=40, n_test=30)
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=20000, chunk_size=5000))
    api = Ibdb(tmp_path / "e2e.duckdb", device="cpu")
    api.run(spec, estimate=False)
    losses = _losses(api)[:, 2]
    _, ((n_test, n_outputs),) = api.sql("SELECT n_test, n_outputs FROM runs")
    _, rows = api.sql("SELECT eigenvalue, residual_sq FROM gp_components ORDER BY component")
    lam, rsq = np.array(rows).T
    dist = gp_loss_distribution(lam, rsq, n_test=n_test, n_outputs=n_outputs)
    for q in (0.002, 0.01, 0.1, 0.5, 0.9):
        eps = float(np.quantile(losses, q))
        p_exact = np.exp(dist.logcdf(eps))
        p_hat = np.mean(losses <= eps)
        # binomial standard error of the empirical fraction; allow 5 of them
        se = np.sqrt(p_exact * (1 - p_exact) / len(losses))
        assert abs(p_hat - p_exact) < 5 * se, (q, p_hat, p_exact)


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, toy_spec):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(IbdbError, match="device 'cuda' was asked for but torch sees no CUDA"):
        Ibdb(tmp_path / "g.duckdb", device="cuda").run(toy_spec)
    assert not (tmp_path / "g.duckdb").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_run_matches_cpu_run(tmp_path, toy_spec):
    cpu = Ibdb(tmp_path / "cpu.duckdb", device="cpu")
    gpu = Ibdb(tmp_path / "gpu.duckdb", device="cuda")
    cpu.run(toy_spec, estimate=False)
    gpu.run(toy_spec, estimate=False)
    a, b = _losses(cpu), _losses(gpu)
    np.testing.assert_array_equal(a[:, :2], b[:, :2])  # same ids and seeds
    np.testing.assert_allclose(a[:, 2], b[:, 2], rtol=1e-9)  # same test MSE
    assert np.mean(a[:, 3] != b[:, 3]) < 0.01  # 0-1 error: argmax ties may differ


def test_each_shard_carries_its_manifest(tmp_path, toy_spec):
    api = Ibdb(tmp_path / "m.duckdb", device="cpu")
    api.run(toy_spec, estimate=False)
    (run_id,) = [p.name for p in api.shard_root.iterdir()]
    shard = sorted(api.shard_root.glob("*/losses-*.parquet"))[1]
    con = duckdb.connect()
    (raw,) = con.execute("SELECT value FROM parquet_kv_metadata(?) WHERE key = 'ibdb'",
                         [str(shard)]).fetchone()
    meta = json.loads(raw)
    assert meta["spec_hash"] == meta["run_id"] == run_id
    assert (meta["first_hypothesis"], meta["last_hypothesis"], meta["n_rows"]) == (64, 127, 64)
    assert meta["runner"] == "gp/" + meta["runner_version"]
    assert meta["torch_version"] == torch.__version__
    assert meta["duckdb_version"] == duckdb.__version__
    assert meta["ibdb_version"] and meta["host"] and meta["written_at"]
    assert meta["device"] == "cpu" and meta["wall_seconds"] > 0
    # the name promises the content's sha256, so a flipped bit cannot pass unseen
    assert hashlib.sha256(shard.read_bytes()).hexdigest().startswith(shard.stem.split("-")[-1])
