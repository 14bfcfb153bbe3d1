"""Subset simulation on a real GP space against its exact law (issue 11's validation ground).

The GP runner's `evaluate` turns the sampler's moved noise into test MSEs; the exact bits come
from the same run's spectrum. A small seeded version of benchmarks/bench_splitting_gp.py:
20 repeats per depth on digits (n_train 100, n_test 300).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_splitting_gp import eps_at, gp_space  # noqa: E402

from ibdb.run.splitting import SplittingSettings, run_levels  # noqa: E402
from ibdb.stats.subset_simulation import splitting_estimate  # noqa: E402


@pytest.fixture(scope="module")
def digits_gp():
    return gp_space(100, 300)


@pytest.mark.parametrize("depth", [10.0, 20.0])
def test_splitting_matches_exact_on_a_gp_space(digits_gp, depth):
    evaluate, dim, law = digits_gp
    eps = eps_at(law, depth)
    exact = law.bits_below(eps)
    errors, covered = [], 0
    for seed in range(20):
        settings = SplittingSettings(n_particles=1000, p0=0.1, target_eps=eps, seed=seed)
        run = run_levels(evaluate, dim, settings).require_target()
        (est,) = splitting_estimate(run.records, [eps]).estimates
        errors.append(est.bits - exact)
        covered += est.lo_bits <= exact <= est.hi_bits
        # the first level is the runner's own law: its losses are i.i.d. draws of test MSE
        assert run.records[0].losses.shape == (1000,)
    assert abs(np.mean(errors)) < 0.5, errors
    assert covered >= 17, (covered, errors)  # P(>= 17 of 20) ~ 0.98 at a true 95 %


def test_a_particle_of_a_gp_run_is_regenerated_from_its_seeds(digits_gp):
    from ibdb.run.splitting import regenerate_noise

    evaluate, dim, law = digits_gp
    settings = SplittingSettings(n_particles=200, p0=0.1, target_bits=8.0, seed=3)
    run = run_levels(evaluate, dim, settings).require_target()
    last = run.records[-1]
    for index in (0, len(last.losses) // 2, len(last.losses) - 1):
        z = regenerate_noise(run.records, last.level, index, seed=3, dim=dim)
        assert evaluate(z[None, :])[0][0] == last.losses[index]
