"""A budget's splitting block end to end: spec -> runner.evaluate -> level shards -> store ->
the `splitting` method, against the run's exact law; resume after a crash; refusals."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main

from conftest import make_npz, spec_dict, write_spec

SPLITTING = {"particles": 300, "p0": 0.1, "target_bits": 16, "repeats": 3}


def _spec(tmp_path, splitting=SPLITTING, space=None):
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(n_hypotheses=300, eps=[0.3])
    spec["budgets"][0]["splitting"] = splitting
    if space is not None:
        spec["spaces"] = [space]
    return write_spec(tmp_path, spec)


def _particles(api: Ibdb) -> list[tuple]:
    # (rho is NaN at level 0, and NaN != NaN in Python: compare its bits as text)
    return api.sql("SELECT repeat, level, particle, threshold, rho::VARCHAR, loss, parent, "
                   "step, accepted FROM splitting_particles ORDER BY ALL")[1]


def test_splitting_estimates_agree_with_exact(tmp_path):
    api = Ibdb(tmp_path / "s.duckdb", shards=tmp_path / "shards", device="cpu")
    api.run(_spec(tmp_path))
    _, levels = api.sql("SELECT repeat, max(level), min(threshold) FROM splitting_levels "
                        "GROUP BY repeat ORDER BY repeat")
    assert [r[0] for r in levels] == [0, 1, 2] and all(r[1] >= 4 for r in levels)
    # eps between level thresholds, about 6 to 14 bits deep
    _, exact = api.sql("SELECT max(threshold) FILTER (level = 2), max(threshold) FILTER "
                       "(level = 4) FROM splitting_particles WHERE repeat = 0")
    eps = list(exact[0])
    report = api.estimate(methods=["exact", "splitting"], eps=eps)
    assert not report.skipped
    _, rows = api.sql("SELECT eps, splitting_bits, exact_bits, splitting_minus_exact FROM "
                      f"method_agreement WHERE eps IN ({eps[0]!r}, {eps[1]!r}) ORDER BY eps")
    assert len(rows) == 2
    for e, split, exact_bits, diff in rows:
        assert 4 < exact_bits < 20
        assert abs(diff) < 1.5, (e, split, exact_bits)  # 3 repeats of 300 particles
    _, intervals = api.sql("SELECT lower_bits, upper_bits, diagnostics->>'interval' FROM "
                           f"ib_estimates WHERE method = 'splitting' AND eps IN ({eps[0]!r}, "
                           f"{eps[1]!r})")
    assert all(lo < hi for lo, hi, _ in intervals)
    assert {i for _, _, i in intervals} == {"student-t over 3 repeats, 0.95"}
    # the SQL function over the stored particles gives the stored numbers
    _, via_sql = api.sql(
        "SELECT ib_splitting(list(struct_pack(repeat, level, particle, threshold, rho, loss, "
        f"fitted, chain, parent, step, accepted, n_evaluations)), {eps[0]!r}).bits FROM "
        "splitting_particles")
    _, stored = api.sql(f"SELECT bits FROM estimates WHERE method = 'splitting' AND "
                        f"eps = {eps[0]!r}")
    assert via_sql == stored
    # a second run finds every level done: nothing new, the same rows
    before = _particles(api)
    again = api.run(_spec(tmp_path))
    assert again.ingest.shards_ingested == 0 and _particles(api) == before


def test_a_crashed_splitting_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    from ibdb.run import shards

    whole = Ibdb(tmp_path / "whole.duckdb", shards=tmp_path / "whole", device="cpu")
    whole.run(_spec(tmp_path))
    real = shards.write_level_shard
    written = []

    def crash_after_three(*args, **kwargs):
        if len(written) == 3:
            raise KeyboardInterrupt  # stands for a kill -9 during level 3 of repeat 0
        written.append(real(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(shards, "write_level_shard", crash_after_three)
    resumed = Ibdb(tmp_path / "resumed.duckdb", shards=tmp_path / "resumed", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        resumed.run(_spec(tmp_path))
    monkeypatch.undo()
    resumed.run(_spec(tmp_path))
    assert _particles(resumed) == _particles(whole)
    names = sorted(p.name for p in (tmp_path / "whole").glob("*/levels-*.parquet"))
    assert names == sorted(p.name for p in (tmp_path / "resumed").glob("*/levels-*.parquet"))
    query = "SELECT eps, bits, lower_bits, upper_bits FROM ib_estimates WHERE " \
            "method = 'splitting' ORDER BY eps"
    assert resumed.sql(query) == whole.sql(query)


NET = {"name": "net", "kind": "mlp", "width": 8, "depth": 1,
       "optimizer": {"kind": "adam", "lr": 0.03, "epochs": 6, "batch_size": 8}}


def test_splitting_on_a_runner_that_cannot_is_refused_before_anything_runs(tmp_path,
                                                                          monkeypatch):
    import dataclasses

    from ibdb.spec.spaces import SPACES

    monkeypatch.setattr(SPACES, "_entries", {**SPACES._entries, "mlp": dataclasses.replace(
        SPACES.get("mlp"), splitting=False)})
    spec = _spec(tmp_path, space=NET)
    got = CliRunner().invoke(main, ["--db", str(tmp_path / "n.duckdb"), "validate", str(spec)])
    assert got.exit_code == 2
    assert "space 'net' (kind mlp): a budget's splitting block runs on gp, cnn, torch spaces" \
        in got.output
    assert not (tmp_path / "n.duckdb").exists()


def test_splitting_on_a_network_space_agrees_with_its_iid_samples(tmp_path):
    """Networks: the moves change initial weights and data orders; a network that misses
    the fit criterion never enters a level. At an eps the i.i.d. samples resolve (~5 bits),
    splitting and the empirical fraction of 3000 trained networks agree."""
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(n_hypotheses=3000, eps=[0.3])
    spec["spaces"] = [NET]
    spec["budgets"][0]["splitting"] = {"particles": 400, "p0": 0.1, "target_bits": 8,
                                       "repeats": 4}
    api = Ibdb(tmp_path / "net.duckdb", shards=tmp_path / "shards", device="cpu")
    api.run(write_spec(tmp_path, spec))
    _, fit = api.sql("SELECT avg(fitted::INTEGER) FROM losses")
    _, level0 = api.sql("SELECT avg(fitted::INTEGER) FROM splitting_particles WHERE level = 0")
    assert 0.05 < fit[0][0] < 0.999  # some networks miss the criterion: conditioning matters
    assert abs(level0[0][0] - fit[0][0]) < 0.08  # level 0 is a draw of the same space
    _, deeper = api.sql("SELECT count(*) FROM splitting_particles WHERE level > 0 AND NOT "
                        "fitted")
    assert deeper == [(0,)]
    _, (eps,) = api.sql("SELECT quantile_cont(test_mse, 0.03) FROM losses WHERE fitted")
    api.estimate(methods=["empirical", "splitting"], eps=[eps[0]])
    _, rows = api.sql("SELECT method, bits, lower_bits, upper_bits FROM ib_estimates WHERE "
                      f"eps = {eps[0]!r} ORDER BY method")
    (_, emp, emp_lo, emp_hi), (_, split, lo, hi) = rows
    assert 3 < emp < 7 and abs(split - emp) < 1.0, rows
    assert lo < hi and max(lo, emp_lo) <= min(hi, emp_hi)  # the intervals overlap


def test_a_run_without_levels_skips_splitting_unless_asked(tmp_path, toy_spec):
    api = Ibdb(tmp_path / "p.duckdb", shards=tmp_path / "shards", device="cpu")
    api.run(toy_spec)
    assert api.sql("SELECT count(*) FROM estimates WHERE method = 'splitting'")[1] == [(0,)]
    report = api.estimate(methods=["splitting"])
    assert report.rows == [] and len(report.skipped) == 1
    assert "no splitting levels stored for this gp run" in report.skipped[0]


@pytest.mark.slow
def test_kill_9_during_a_splitting_run_then_resume_gives_the_same_estimate(tmp_path):
    """A real kill -9 of `ibdb run` while it writes levels; the rerun resumes from the level
    shards, and every particle and estimate equals an uninterrupted run's, bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    deep = {"particles": 2000, "p0": 0.1, "target_bits": 150, "max_levels": 50}
    spec = _spec(tmp_path, splitting=deep)
    whole = Ibdb(tmp_path / "whole.duckdb", shards=tmp_path / "whole", device="cpu")
    whole.run(spec)

    argv = [sys.executable, "-c", "from ibdb.cli import main; main()", "--device", "cpu",
            "--db", str(tmp_path / "killed.duckdb"), "--shards", str(tmp_path / "killed"),
            "run", str(spec)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "killed").glob("*/levels-*.parquet"))) < 4:
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_levels = len(list((tmp_path / "whole").glob("*/levels-*.parquet")))
    assert len(list((tmp_path / "killed").glob("*/levels-*.parquet"))) < n_levels

    resumed = Ibdb(tmp_path / "killed.duckdb", shards=tmp_path / "killed", device="cpu")
    resumed.run(spec)
    assert _particles(resumed) == _particles(whole)
    query = "SELECT eps, bits, lower_bits, upper_bits FROM ib_estimates WHERE " \
            "method = 'splitting' ORDER BY eps"
    assert resumed.sql(query) == whole.sql(query)


def test_an_unreachable_eps_stores_a_partial_run_that_says_how_deep_it_got(tmp_path, caplog):
    import json

    shallow = {"particles": 300, "p0": 0.1, "target_eps": 1e-9, "max_evaluations": 1500}
    api = Ibdb(tmp_path / "u.duckdb", shards=tmp_path / "shards", device="cpu")
    api.run(_spec(tmp_path, splitting=shallow))
    assert "stopped early" in caplog.text and "max_evaluations = 1500" in caplog.text
    (info,) = api.sql("SELECT runner_info->'splitting' FROM runs")[1][0]
    (outcome,) = json.loads(info)
    assert outcome["reached_target"] is False and "bits" in outcome["stop_reason"]
    assert outcome["evaluations"] <= 1500
    report = api.estimate(methods=["splitting"], eps=[1e-9])
    (row,) = report.rows
    assert row["bound"] == "lower" and row["upper_bits"] is None and row["bits"] > 0


def test_the_splitting_example_reads_40_bits_beside_exact(tmp_path):
    """examples/splitting_digits.yaml as a user runs it: every eps of the spec, from 4 to 38
    bits deep, estimated by splitting within 1.5 bits of the exact law, inside its interval."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "splitting_digits.yaml"
    got = CliRunner().invoke(main, ["--db", str(tmp_path / "e.duckdb"), "--shards",
                                    str(tmp_path / "e.shards"), "--device", "cpu", "run",
                                    str(example)])
    assert got.exit_code == 0, got.output
    api = Ibdb(tmp_path / "e.duckdb")
    _, rows = api.sql("SELECT a.eps, a.exact_bits, a.splitting_bits, e.lower_bits, "
                      "e.upper_bits FROM method_agreement a JOIN ib_estimates e USING "
                      "(run_id, loss, eps) WHERE e.method = 'splitting' ORDER BY a.eps")
    assert [r[0] for r in rows] == [0.53, 0.55, 0.58, 0.62]
    assert rows[0][1] > 35  # the deepest eps is far below the 2000 i.i.d. samples
    for eps, exact, split, lo, hi in rows:
        assert abs(split - exact) < 1.5 and lo <= exact <= hi, (eps, exact, split, lo, hi)


def test_levels_made_with_other_sampler_settings_are_not_continued(tmp_path):
    """The splitting block is not part of the run id (a deeper target extends the run), but
    levels made with another p0 cannot be continued by a resume: say so, store nothing."""
    from ibdb.core.errors import ShardError

    api = Ibdb(tmp_path / "o.duckdb", shards=tmp_path / "shards", device="cpu")
    api.run(_spec(tmp_path, splitting={**SPLITTING, "target_bits": 6, "repeats": 1}))
    deeper = api.run(_spec(tmp_path, splitting={**SPLITTING, "target_bits": 12, "repeats": 1}))
    assert deeper.ingest.shards_ingested > 0  # the same levels continued deeper
    with pytest.raises(ShardError, match=r"made with p0=0\.1, where the spec now asks for "
                                         r"p0=0\.2; .* another seed"):
        api.run(_spec(tmp_path, splitting={**SPLITTING, "p0": 0.2, "repeats": 1}))


def test_levels_of_another_sampler_or_noise_version_are_not_continued(tmp_path, monkeypatch):
    """Level shards record the sampler's and the runner's noise-map versions; after either
    changes (e.g. network noise version 1, whose data orders were not in the noise), a resume
    refuses the old levels by name instead of continuing them with other arithmetic."""
    import ibdb.run.splitting
    from ibdb.core.errors import ShardError
    from ibdb.spec.spaces import SPACES

    api = Ibdb(tmp_path / "v.duckdb", shards=tmp_path / "shards", device="cpu")
    api.run(_spec(tmp_path, splitting={**SPLITTING, "target_bits": 6, "repeats": 1}))
    deeper = {**SPLITTING, "target_bits": 12, "repeats": 1}
    monkeypatch.setattr(ibdb.run.splitting, "SAMPLER_VERSION", "1")
    with pytest.raises(ShardError, match=r"made with sampler_version='2', where the spec now "
                                         r"asks for sampler_version='1'"):
        api.run(_spec(tmp_path, splitting=deeper))
    monkeypatch.undo()
    monkeypatch.setattr(SPACES, "_entries", {**SPACES._entries, "gp": dataclasses.replace(
        SPACES.get("gp"), noise_version="0")})
    with pytest.raises(ShardError, match=r"made with noise='1', where the spec now asks for "
                                         r"noise='0'"):
        api.run(_spec(tmp_path, splitting=deeper))
