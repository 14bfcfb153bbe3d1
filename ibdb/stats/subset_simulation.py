"""IB(eps) from the stored levels of a subset-simulation run (:mod:`ibdb.run.splitting`).

P[L <= eps | fit] is the product of the levels' conditional fractions up to the level whose
threshold lies just above eps, times that level's fraction of particles at or below eps.

Error: the Au-Beck coefficient of variation, delta^2 = sum_k (1 - q_k) / (q_k n_k) (1 + gamma_k),
gamma_k from the indicator's autocorrelation along the chains of level k. It ignores correlation
between levels and the O(1/N) bias, so it is somewhat optimistic; the interval is normal on the
log scale, bits +- z SE with SE = delta / ln 2. Past ~20 bits (~6 levels) it undercovers (73 %
at 40 bits, 67 % at 60 bits on a synthetic exact tail, 84-93 % on gp spaces: BENCHMARKS.md); use
:func:`repeats_estimate` (independent runs, a t-interval) for an honest interval there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ibdb.core.errors import EstimateError
from ibdb.stats.levels import LevelRecord

__all__ = ["EpsEstimate", "RepeatsEstimate", "SplittingEstimate", "repeats_estimate",
           "splitting_estimate"]

_LN2 = math.log(2.0)


# ------------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class EpsEstimate:
    """IB at one eps. ``status``: 'level0' (plain Monte Carlo among level 0's fitting particles),
    'levels' (between thresholds), 'tail' (below the last threshold, from the last level's
    particles), or 'lower_bound' (no particle reaches eps: ``bits`` is then a lower bound, from
    the rule of three on the last level, and the interval is [bits, inf))."""

    eps: float
    bits: float
    se_bits: float
    lo_bits: float
    hi_bits: float
    cv: float
    level_used: int
    status: str

    @property
    def lower_bound(self) -> bool:
        return self.status == "lower_bound"


@dataclass(frozen=True)
class SplittingEstimate:
    estimates: list[EpsEstimate]
    thresholds: list[float]
    rhos: list[float]
    acceptance: list[float]
    ess: list[float]  # per level: effective samples for the next threshold's indicator
    n_evaluations: int
    p_fit: float
    p_fit_se: float
    notes: list[str] = field(default_factory=list)


def _gamma(rec: LevelRecord, ind: np.ndarray) -> float:
    """Au-Beck's 1 + gamma factor minus one: 2 sum_k (pairs_k / N) r(k), with r(k) the
    indicator's lag-k autocorrelation along chains (pairs within one chain only)."""
    p = float(ind.mean())
    r0 = p - p * p
    if r0 <= 0.0 or rec.level == 0:
        return 0.0
    x = ind.astype(np.float64)
    same = rec.chain
    g = 0.0
    for k in range(1, int(rec.step.max()) + 1):
        pair = same[k:] == same[:-k]
        npairs = int(pair.sum())
        if npairs == 0:
            break
        rk = (float((x[k:] * x[:-k])[pair].mean()) - p * p) / r0
        g += 2.0 * npairs / rec.n * rk
    return max(g, 0.0)


def _factor(rec: LevelRecord, x: float) -> tuple[float, float]:
    """(q, CV^2 of q): the fraction of the level's particles in {L <= x, fit}, among the fitting
    ones at level 0 (i.i.d., binomial), among all at a moving level (with chain correlation)."""
    ind = rec.fitted & (rec.losses <= x)
    if rec.level == 0:
        n, k = int(rec.fitted.sum()), int(ind.sum())
        q = k / n
        return q, ((1.0 - q) / (q * n) if k else math.inf)
    q = float(ind.mean())
    return q, ((1.0 - q) / (q * rec.n) * (1.0 + _gamma(rec, ind)) if q > 0 else math.inf)


def splitting_estimate(
    records: Sequence[LevelRecord],
    eps_list: Sequence[float],
    *,
    confidence: float = 0.95,
) -> SplittingEstimate:
    """IB(eps) = -log2 P[L <= eps | fit] with the Au-Beck SE and a normal interval on the log
    scale, for each eps, recomputed from the stored records alone."""
    if not records or records[0].level != 0:
        raise EstimateError("no level-0 record; pass the records of a run, level 0 first.")
    if not 0.0 < confidence < 1.0:
        raise EstimateError(f"confidence = {confidence!r}; it must lie in (0, 1), e.g. 0.95.")
    if not records[0].fitted.any():
        raise EstimateError("no level-0 particle fits; P[fit] is not estimable.")
    zq = float(stats.norm.ppf(0.5 + confidence / 2.0))
    thresholds = [math.inf] + [r.threshold for r in records[1:]]
    out = []
    for eps in eps_list:
        eps = float(eps)
        if math.isnan(eps):
            raise EstimateError("eps is NaN; pass finite losses (or inf).")
        j = max(k for k, b in enumerate(thresholds) if b >= eps)
        log2p, cv2 = 0.0, 0.0
        for k in range(j):
            q, c = _factor(records[k], thresholds[k + 1])
            log2p += math.log2(q)
            cv2 += c
        q, c = _factor(records[j], eps)
        status = "level0" if j == 0 else ("levels" if j < len(records) - 1 else "tail")
        if q > 0:
            log2p += math.log2(q)
            cv2 += c
            bits = -log2p
            se = math.sqrt(cv2) / _LN2
            out.append(EpsEstimate(eps, bits, se, max(bits - zq * se, 0.0), bits + zq * se,
                                   math.sqrt(cv2), j, status))
        else:
            n = records[j].fitted.sum() if j == 0 else records[j].n
            bits = -log2p - math.log2(min(3.0 / n, 1.0))
            out.append(EpsEstimate(eps, bits, math.nan, bits, math.inf, math.inf, j,
                                   "lower_bound"))
    ess = []
    for k, rec in enumerate(records):
        nxt = thresholds[k + 1] if k + 1 < len(records) else _seeds_threshold_any(rec)
        ind = rec.fitted & (rec.losses <= nxt)
        ess.append(float(rec.fitted.sum()) if k == 0 else rec.n / (1.0 + _gamma(rec, ind)))
    n0 = records[0].n
    p_fit = float(records[0].fitted.mean())
    return SplittingEstimate(
        estimates=out, thresholds=thresholds[1:], rhos=[r.rho for r in records],
        acceptance=[r.acceptance_rate for r in records], ess=ess,
        n_evaluations=sum(r.n_evaluations for r in records), p_fit=p_fit,
        p_fit_se=math.sqrt(p_fit * (1.0 - p_fit) / n0),
        notes=["SE: Au-Beck CV (chain autocorrelation, inter-level correlation ignored); "
               "interval: normal on the log2 scale, bits +- z SE."])


def _seeds_threshold_any(rec: LevelRecord) -> float:
    """For the last level's ESS: its median fitting loss (no next threshold exists)."""
    fit = rec.losses[rec.fitted]
    return float(np.median(fit)) if fit.size else math.inf


@dataclass(frozen=True)
class RepeatsEstimate:
    """IB at one eps from independent runs: the mean of their bits, its SE from their spread,
    and a Student-t interval. ``n_lower_bound`` runs reached no particle below eps; if any did,
    ``bits`` is only a lower bound (their bounds are averaged in) and ``lower_bound`` is True."""

    eps: float
    bits: float
    se_bits: float
    lo_bits: float
    hi_bits: float
    n_repeats: int
    n_lower_bound: int

    @property
    def lower_bound(self) -> bool:
        return self.n_lower_bound > 0


def repeats_estimate(
    runs: Sequence[Sequence[LevelRecord]],
    eps_list: Sequence[float],
    *,
    confidence: float = 0.95,
) -> list[RepeatsEstimate]:
    """The honest interval: Au-Beck's SE ignores the correlation between levels and grows
    optimistic with depth (its 95 % interval covered 95, 87, 73 and 67 % at 10, 20, 40, 60 bits
    over 100 runs in benchmarks/bench_splitting.py, N = 1000), whereas the spread of independent
    runs (different seeds) includes everything. Needs >= 2 runs. The mean of bits is taken, so
    the O(1/N) bias and the Jensen bias of -log2 p_hat (~CV^2 / (2 ln 2) per run) remain."""
    if len(runs) < 2:
        raise EstimateError(
            f"{len(runs)} run(s) given; independent repeats need at least 2 (use 5-20 runs "
            "with different seeds)."
        )
    per_run = [splitting_estimate(r, eps_list, confidence=confidence).estimates for r in runs]
    tq = float(stats.t.ppf(0.5 + confidence / 2.0, len(runs) - 1))
    out = []
    for i, eps in enumerate(eps_list):
        bits = np.array([est[i].bits for est in per_run])
        n_lb = sum(est[i].lower_bound for est in per_run)
        mean = float(bits.mean())
        se = float(bits.std(ddof=1) / math.sqrt(bits.size))
        lo = max(mean - tq * se, 0.0)
        out.append(RepeatsEstimate(float(eps), mean, se, lo, math.inf if n_lb else mean + tq * se,
                                   bits.size, n_lb))
    return out
