"""Tests of subset simulation over the noise (ibdb.run.splitting).

The oracle is independent of the sampler: a synthetic loss L(z) = sum_j w_j (z_j + b_j)^2 over
z ~ N(0, I) is a generalised chi-squared with one dof per coordinate and noncentrality b_j^2,
whose log-CDF ibdb.stats.genchi2 computes by a saddlepoint (accurate to ~1e-6 bits here, checked in
tests/stats/test_genchi2.py). Where fit depends on a coordinate inside L, the oracle is a 1-D
quadrature of that coordinate against the saddlepoint CDF of the rest.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from ibdb.core.errors import EstimateError, SpecError
from ibdb.run.splitting import SplittingSettings, regenerate_noise, run_levels
from ibdb.stats.genchi2 import GenChi2
from ibdb.stats.levels import LevelRecord
from ibdb.stats.subset_simulation import repeats_estimate, splitting_estimate

DIM = 100


def _law(dim: int = DIM, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 1.0 / (1.0 + np.arange(dim)) ** 0.8, rng.normal(0.0, 0.5, dim)


W, B = _law()
EXACT = GenChi2.from_arrays(W, 1.0, B**2)


def _loss(z: np.ndarray, w: np.ndarray = W, b: np.ndarray = B) -> np.ndarray:
    # row by row the same arithmetic whatever the batch, so a single row reproduces bitwise
    return ((z[:, : w.size] + b) ** 2 * w).sum(axis=1)


def _always(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _loss(z), np.ones(z.shape[0], dtype=bool)


def _eps_at(bits: float, law: GenChi2 = EXACT) -> float:
    return optimize.brentq(lambda x: law.bits_below(x) - bits, 1e-12, law.mean())


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"p0": 1.0}, "p0 = 1.0: Input should be less than 1"),
        ({"p0": 0.0}, "p0 = 0.0: Input should be greater than 0"),
        ({"p0": -0.2}, "p0 = -0.2: Input should be greater than 0"),
        ({"n_particles": 0}, "n_particles = 0: Input should be greater than 0"),
        ({"n_particles": 5, "p0": 0.01}, "rounds to 0 seeds"),
        ({"rho": 1.0}, "rho = 1.0: Input should be less than 1"),
        ({"target_acceptance": 0.0}, "target_acceptance = 0.0"),
        ({"target_bits": None}, "needs target_bits (a depth in bits, e.g. 40) or target_eps"),
        ({"target_bits": -3.0}, "target_bits = -3.0: Input should be greater than 0"),
        ({"target_eps": math.nan, "target_bits": None}, "target_eps = nan"),
        ({"max_evaluations": 10}, "max_evaluations = 10 is below particles = 100"),
        ({"n_particles": np.int64(100), "p0": np.float64(0.5)}, None),  # numpy numbers pass
        ({"seed": -1}, "seed = -1"),
    ],
)
def test_settings_validation_says_what_is_wrong(kwargs, fragment):
    """The rules are the spec's splitting block's, with the sampler's names."""
    base = {"n_particles": 100, "target_bits": 10.0}
    if fragment is None:
        assert SplittingSettings(**{**base, **kwargs}).n_seeds == 50
        return
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        SplittingSettings(**{**base, **kwargs})


def test_bad_dim_and_nan_losses_are_errors():
    st = SplittingSettings(n_particles=50, target_bits=5.0)
    with pytest.raises(SpecError, match="dim = 0"):
        run_levels(_always, 0, st)
    with pytest.raises(EstimateError, match="NaN losses"):
        run_levels(lambda z: (np.full(len(z), np.nan), np.ones(len(z), bool)), 3, st)
    with pytest.raises(EstimateError, match="none of the 50 level-0"):
        run_levels(lambda z: (_loss(z), np.zeros(len(z), bool)), DIM, st)


# -------------------------------------------------------------------------------- accuracy
def _ensemble(depth_bits: float, repeats: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    eps = _eps_at(depth_bits)
    errs, covered = [], []
    for r in range(repeats):
        st = SplittingSettings(n_particles=n, p0=0.1, target_eps=eps, seed=1000 + r)
        run = run_levels(_always, DIM, st).require_target()
        e = splitting_estimate(run.records, [eps]).estimates[0]
        assert e.status in ("levels", "tail") and math.isfinite(e.se_bits)
        errs.append(e.bits - depth_bits)
        covered.append(e.lo_bits <= depth_bits <= e.hi_bits)
    return np.array(errs), np.array(covered)


# With 20 repeats, a true coverage of 95 % gives >= 17 covered with probability 0.98; >= 17
# (85 %) is the bound asserted. The mean error's SE over 20 repeats is ~0.15-0.3 bits here.
@pytest.mark.parametrize("depth_bits", [10.0, 20.0])
def test_ensemble_matches_exact(depth_bits):
    errs, covered = _ensemble(depth_bits, repeats=20, n=1000)
    assert abs(errs.mean()) < 0.5, errs
    assert covered.sum() >= 17, (covered.sum(), errs)


@pytest.mark.slow
def test_ensemble_matches_exact_40_bits():
    """At 40 bits Au-Beck's SE is optimistic (inter-level correlation), so only the mean error is
    checked here, within 1 bit: a single run's CV is ~0.9, so -log2 p_hat is biased up by about
    CV^2 / (2 ln 2) ~ 0.5 bits (Jensen), and the mean of 20 has an SE of ~0.3 bits. The
    interval is the independent-repeats one, in groups of 5 runs."""
    eps = _eps_at(40.0)
    runs = [run_levels(_always, DIM, SplittingSettings(n_particles=1000, target_eps=eps,
                                                       seed=2000 + r)).records
            for r in range(20)]
    singles = [splitting_estimate(r, [eps]).estimates[0].bits for r in runs]
    assert abs(np.mean(singles) - 40.0) < 1.0, singles
    groups = [repeats_estimate(runs[k:k + 5], [eps])[0] for k in range(0, 20, 5)]
    assert sum(g.lo_bits <= 40.0 <= g.hi_bits for g in groups) >= 3, groups


def test_repeats_estimate():
    eps = _eps_at(10.0)
    runs = [run_levels(_always, DIM, SplittingSettings(n_particles=300, target_eps=eps,
                                                       seed=r)).records for r in range(4)]
    singles = np.array([splitting_estimate(r, [eps]).estimates[0].bits for r in runs])
    got = repeats_estimate(runs, [eps, 1e-30])
    assert got[0].bits == pytest.approx(singles.mean())
    assert got[0].se_bits == pytest.approx(singles.std(ddof=1) / 2.0)
    assert got[0].lo_bits < got[0].bits < got[0].hi_bits and not got[0].lower_bound
    assert got[1].lower_bound and got[1].hi_bits == math.inf
    with pytest.raises(EstimateError, match="at least 2"):
        repeats_estimate(runs[:1], [eps])


def test_level0_eps_is_plain_monte_carlo():
    st = SplittingSettings(n_particles=2000, target_bits=3.0, seed=3)
    run = run_levels(_always, DIM, st)
    eps = _eps_at(1.0)
    e = splitting_estimate(run.records, [eps]).estimates[0]
    frac = float((run.records[0].losses <= eps).mean())
    assert e.status == "level0" and e.level_used == 0
    assert e.bits == pytest.approx(-math.log2(frac), rel=1e-12)
    assert e.se_bits == pytest.approx(math.sqrt((1 - frac) / (frac * 2000)) / math.log(2))


# ------------------------------------------------------------------------- resume, replay
def test_resume_after_a_crash_is_bitwise_identical():
    eps = _eps_at(15.0)
    st = SplittingSettings(n_particles=300, target_eps=eps, seed=7)
    full = run_levels(_always, DIM, st)
    assert len(full.records) >= 4

    stored: list[LevelRecord] = []

    def crash_after_two(rec: LevelRecord) -> None:
        stored.append(rec)
        if rec.level == 2:
            raise KeyboardInterrupt  # stands in for kill -9 midway through level 3

    with pytest.raises(KeyboardInterrupt):
        run_levels(_always, DIM, st, progress=crash_after_two)
    rows = [row for rec in stored for row in rec.to_rows()]
    rebuilt = LevelRecord.from_rows(rows[::-1])  # any row order
    resumed = run_levels(_always, DIM, st, resume=rebuilt)
    assert len(resumed.records) == len(full.records)
    assert all(a.same_as(b) for a, b in zip(full.records, resumed.records, strict=True))
    grid = [_eps_at(b) for b in (2.0, 8.0, 14.0, 30.0)]
    assert splitting_estimate(full.records, grid) == splitting_estimate(resumed.records, grid)


def test_partial_run_then_resume_with_a_larger_cap():
    eps = _eps_at(12.0)
    st = SplittingSettings(n_particles=200, target_eps=eps, seed=11)
    full = run_levels(_always, DIM, st)
    short = run_levels(_always, DIM, SplittingSettings(n_particles=200, target_eps=eps,
                                                       seed=11, max_levels=2))
    assert not short.reached_target and "max_levels" in short.stop_reason
    resumed = run_levels(_always, DIM, st, resume=short.records)
    assert resumed.reached_target
    assert all(a.same_as(b) for a, b in zip(full.records, resumed.records, strict=True))


def test_regenerated_noise_reproduces_the_loss_exactly():
    st = SplittingSettings(n_particles=200, target_bits=12.0, seed=5)
    run = run_levels(_always, DIM, st)
    rng = np.random.default_rng(0)
    for level in (0, 1, len(run.records) - 1):
        rec = run.records[level]
        for i in rng.choice(rec.n, 5, replace=False):
            z = regenerate_noise(run.records, level, int(i), seed=st.seed, dim=DIM)
            assert _loss(z[None, :])[0] == rec.losses[i]
    with pytest.raises(EstimateError, match="no particle"):
        regenerate_noise(run.records, 99, 0, seed=st.seed, dim=DIM)


def test_a_step_scale_keeps_the_law_and_replays_bitwise():
    """Coordinates with a smaller step (a network's data-order normals) move less but keep
    N(0, 1): from standard normals, one scaled proposal is again standard normal coordinate by
    coordinate (moments over 200k draws, 5 sigma). A run with a step scale matches exact as
    well (the oracle ignores coordinates 50..99 only through their law, which the moves keep),
    resumes bitwise and replays any particle's noise."""
    from ibdb.run.splitting import _propose

    rng = np.random.default_rng(3)
    z, xi = rng.standard_normal((2, 200_000, 3))
    scale = np.array([1.0, 0.01, 50.0])  # 50 clips the step at 1 (an independent redraw)
    prop = _propose(z, xi, 0.8, scale)
    assert np.abs(prop.mean(axis=0)).max() < 5 / math.sqrt(200_000)
    assert np.abs(prop.var(axis=0) - 1).max() < 5 * math.sqrt(2 / 200_000)
    np.testing.assert_allclose(np.corrcoef(z[:, 1], prop[:, 1])[0, 1],
                               math.sqrt(1 - 0.006**2), atol=1e-4)  # s = 0.6 * 0.01
    assert abs(np.corrcoef(z[:, 2], prop[:, 2])[0, 1]) < 0.02
    np.testing.assert_allclose(_propose(z, xi, 0.8, None), 0.8 * z + 0.6 * xi, atol=1e-14)
    np.testing.assert_allclose(_propose(z, xi, 0.8, np.ones(3)), 0.8 * z + 0.6 * xi, atol=1e-14)

    step = np.where(np.arange(DIM) < 50, 1.0, 0.05)
    eps = _eps_at(12.0)
    st = SplittingSettings(n_particles=400, target_eps=eps, seed=4)
    full = run_levels(_always, DIM, st, step_scale=step)
    plain = run_levels(_always, DIM, st)
    assert not np.array_equal(full.records[1].losses, plain.records[1].losses)
    short = run_levels(_always, DIM, SplittingSettings(n_particles=400, target_eps=eps, seed=4,
                                                       max_levels=2), step_scale=step)
    resumed = run_levels(_always, DIM, st, resume=short.records, step_scale=step)
    assert all(a.same_as(b) for a, b in zip(full.records, resumed.records, strict=True))
    last = full.records[-1]
    for i in (0, 7, last.n - 1):
        z = regenerate_noise(full.records, last.level, i, seed=4, dim=DIM, step_scale=step)
        assert _loss(z[None, :])[0] == last.losses[i]
    with pytest.raises(SpecError, match="step_scale must be 100 finite values > 0"):
        run_levels(_always, DIM, st, step_scale=np.zeros(DIM))
    with pytest.raises(SpecError, match="step_scale must be 100"):
        run_levels(_always, DIM, st, step_scale=np.ones(3))


def test_step_adaptation_follows_the_square_root_of_the_acceptance_ratio():
    """Between levels the step s = sqrt(1 - rho^2) is scaled by (acc / target)^1/2 (acc floored
    at one accepted move), clipped to [1e-3, 1]: recomputed here from the stored records."""
    from ibdb.run.splitting import _step_size

    st = SplittingSettings(n_particles=500, target_bits=25.0, seed=9, target_acceptance=0.4)
    run = run_levels(_always, DIM, st)
    assert run.records[1].rho == st.rho
    for prev, rec in zip(run.records[1:], run.records[2:], strict=False):
        moves = int((prev.step > 0).sum())
        acc = max(prev.acceptance_rate, 1 / moves)
        want = min(max(_step_size(prev.rho) * math.sqrt(acc / 0.4), 1e-3), 1.0)
        assert _step_size(rec.rho) == pytest.approx(want, rel=1e-9)
    # and it settles near the target on this smooth loss
    assert abs(run.records[-1].acceptance_rate - 0.4) < 0.2


def test_rows_round_trip_and_fields():
    st = SplittingSettings(n_particles=100, target_bits=6.0, seed=2)
    run = run_levels(_always, DIM, st)
    rows = [r for rec in run.records for r in rec.to_rows()]
    assert set(rows[0]) == {"level", "index", "threshold", "rho", "loss", "fitted", "chain",
                            "parent", "step", "accepted", "acceptance_rate", "n_evaluations"}
    back = LevelRecord.from_rows(rows)
    assert all(a.same_as(b) for a, b in zip(run.records, back, strict=True))
    lvl = run.records[1]
    assert lvl.n == 100 and (lvl.losses <= lvl.threshold).all()
    assert lvl.n_evaluations == int((lvl.step > 0).sum())
    assert 0.0 < lvl.acceptance_rate < 1.0
    with pytest.raises(EstimateError, match="missing or duplicated"):
        LevelRecord.from_rows(rows[1:])


# ------------------------------------------------------------------------ fit conditioning
def test_fit_on_a_coordinate_outside_the_loss():
    """fitted iff z_last > -1 with L on the other coordinates: P[L <= eps | fit] = P[L <= eps]."""
    dim = DIM + 1

    def ev(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _loss(z), z[:, -1] > -1.0

    eps = _eps_at(10.0)
    bits = []
    for r in range(5):
        run = run_levels(ev, dim, SplittingSettings(n_particles=1000, target_eps=eps, seed=r))
        est = splitting_estimate(run.records, [eps])
        pf = stats.norm.sf(-1.0)
        assert abs(est.p_fit - pf) < 4 * est.p_fit_se
        bits.append(est.estimates[0].bits)
    assert abs(np.mean(bits) - 10.0) < 0.6, bits


def test_fit_on_a_coordinate_inside_the_loss():
    """fitted iff z_0 > 0.5, and z_0 carries the largest weight of L. Exact: quadrature over z_0
    of the rest's saddlepoint CDF, P[L <= eps | fit] = int_{0.5}^inf phi(z) F_rest(eps -
    w_0 (z + b_0)^2) dz / P[z_0 > 0.5]."""
    w, b = W.copy(), B.copy()
    w[0], b[0] = 3.0, -1.0
    rest = GenChi2.from_arrays(w[1:], 1.0, b[1:] ** 2)

    def ev(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _loss(z, w, b), z[:, 0] > 0.5

    def integrand(t: float) -> float:
        x = eps - w[0] * (t + b[0]) ** 2
        return stats.norm.pdf(t) * math.exp(rest.logcdf(x)) if x > 0 else 0.0

    eps = _eps_at(12.0, rest)  # a loss that only part of the fitting z_0 range can reach
    hi = -b[0] + math.sqrt(eps / w[0])
    p_joint = integrate.quad(integrand, 0.5, hi, epsabs=0, epsrel=1e-8, limit=200)[0]
    exact_bits = -math.log2(p_joint / stats.norm.sf(0.5))
    bits = []
    for r in range(6):
        run = run_levels(ev, DIM, SplittingSettings(n_particles=1000, target_eps=eps, seed=r))
        bits.append(splitting_estimate(run.records, [eps]).estimates[0].bits)
    assert exact_bits > 8.0
    assert abs(np.mean(bits) - exact_bits) < 0.6, (bits, exact_bits)


# -------------------------------------------------------------------- unreachable targets
def test_unreachable_eps_gives_a_labelled_partial_result():
    st = SplittingSettings(n_particles=200, target_eps=1e-30, max_evaluations=2000, seed=0)
    run = run_levels(_always, DIM, st)
    assert not run.reached_target and "max_evaluations = 2000" in run.stop_reason
    assert run.n_evaluations <= 2000
    with pytest.raises(EstimateError, match="stopped before its target"):
        run.require_target()
    e = splitting_estimate(run.records, [1e-30]).estimates[0]
    assert e.lower_bound and e.status == "lower_bound" and e.hi_bits == math.inf
    deepest = -math.log2(0.1) * (len(run.records) - 1)
    assert e.bits > deepest  # a lower bound beyond the depth reached
    assert EXACT.bits_below(1e-30) > e.bits


def test_diagnostics_are_reported():
    st = SplittingSettings(n_particles=500, target_bits=15.0, seed=4)
    run = run_levels(_always, DIM, st)
    est = splitting_estimate(run.records, [_eps_at(12.0)])
    m = len(run.records)
    assert len(est.acceptance) == len(est.ess) == len(est.rhos) == m
    assert len(est.thresholds) == m - 1
    assert all(0 < a < 1 for a in est.acceptance[1:]) and math.isnan(est.acceptance[0])
    assert all(0 < e <= 500 for e in est.ess)
    assert est.n_evaluations == run.n_evaluations
    assert all(r.n_evaluations == int((r.step > 0).sum()) for r in run.records[1:])
    assert run.records[0].n_evaluations == 500
    assert est.p_fit == 1.0 and est.p_fit_se == 0.0
