"""Run identity and per-hypothesis seeds."""

from __future__ import annotations

import numpy as np

from ibdb.run.execute import chunk_ranges
from ibdb.run.plan import hypothesis_seeds, load_runs
from ibdb.spec.file import load_experiment

from conftest import make_npz, spec_dict, write_spec


def _run_id(tmp_path, spec, name="spec.yaml"):
    exp = load_experiment(write_spec(tmp_path, spec, name))
    ((_, run_id, _, _),) = load_runs(exp.runs(), spec_dir=tmp_path)
    return run_id


def test_run_id_ignores_labels_eps_and_count_but_not_what_changes_losses(tmp_path):
    make_npz(tmp_path / "toy.npz")
    base = _run_id(tmp_path, spec_dict())
    assert _run_id(tmp_path, spec_dict(name="other", eps=[0.05], n_hypotheses=999,
                                       chunk_size=7)) == base
    assert _run_id(tmp_path, spec_dict(seed=1)) != base
    assert _run_id(tmp_path, spec_dict(bandwidth=2.0)) != base
    assert _run_id(tmp_path, spec_dict(n_train=29)) != base
    make_npz(tmp_path / "toy.npz", seed=1)  # same path, new content: a different task
    assert _run_id(tmp_path, spec_dict()) != base


def test_seeds_are_deterministic_distinct_and_independent_of_the_batch():
    ids = np.arange(100_000)
    seeds = hypothesis_seeds(7, ids)
    assert seeds.dtype == np.int64 and (seeds >= 0).all()
    assert len(np.unique(seeds)) == len(ids)
    np.testing.assert_array_equal(hypothesis_seeds(7, ids[500:501]), seeds[500:501])
    assert not np.isin(hypothesis_seeds(8, ids[:1000]), seeds).any()


def test_chunks_align_to_multiples_and_split_at_gaps():
    missing = np.array([3, 4, 5, 6, 7, 8, 12, 13, 20])
    got = [c.tolist() for c in chunk_ranges(missing, 4)]
    assert got == [[3], [4, 5, 6, 7], [8], [12, 13], [20]]
    assert chunk_ranges(np.array([], dtype=np.int64), 4) == []
