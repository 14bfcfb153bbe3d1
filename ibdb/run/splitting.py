"""Subset simulation over a runner's noise: IB(eps) deep in the tail with far fewer evaluations.

Every runner turns standard-normal noise z into a hypothesis deterministically, so
P[L <= eps | fit] is a probability under N(0, I) and rare-event methods apply (REFERENCE.md,
"Rare-event estimation"). Subset simulation (Au & Beck 2001) writes a small probability as a
product of conditional ones of about p0 each: level 0 draws N i.i.d. particles; each next level's
threshold is the p0-quantile of the previous level's fitting losses, and its particles are grown
from the p0 N seeds below it by preconditioned Crank-Nicolson moves, which leave N(0, I)
restricted to {L <= b, fit} invariant whatever the dimension.

Conditioning on fit: the levels run on the joint event {L <= b and fit}; P[fit] comes from level
0, so the first factor is a binomial proportion among level 0's fitting particles and
IB = -log2 of the product.

Reproducibility: every normal vector comes from its own generator, seeded by
(run seed, level, chain, step), never from a shared stream. A level is therefore a pure function
of the previous level's record, the run seed and the evaluator, so a run killed at any point and
resumed from its stored records continues bit for bit, and any particle's noise can be replayed
from the records alone (:func:`regenerate_noise`).

The estimate and its error, from the stored records alone, are in
:mod:`ibdb.stats.subset_simulation`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from ibdb.core.errors import EstimateError, SpecError
from ibdb.spec.budget import SplittingSpec
from ibdb.stats.levels import LevelRecord

__all__ = [
    "SAMPLER_VERSION",
    "SplittingRun",
    "SplittingSettings",
    "regenerate_noise",
    "run_levels",
]

log = logging.getLogger(__name__)

_LN2 = math.log(2.0)
# Bump when the levels that given settings, seed and evaluator make change (level shards record
# it, and a resume refuses levels of another version). 2: step adaptation by (acc/target)^1/2.
SAMPLER_VERSION = "2"
_MIN_STEP = 1e-3  # smallest pCN step size s = sqrt(1 - rho^2) the adaptation goes to
Evaluator = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------------- settings
def _plain(value: object) -> object:
    """numpy scalars as Python numbers (the spec's models are strict)."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class SplittingSettings:
    """How to run the levels. Each level has ``n_particles`` particles; ``round(p0 * N)`` seeds
    are grown into chains of about 1/p0 particles each (the seed is the chain's step 0, so a
    level costs N - seeds evaluations). ``rho`` is the first moving level's pCN correlation; later
    levels move the step size sqrt(1 - rho^2) toward ``target_acceptance``. The run stops when the
    next threshold is <= ``target_eps``, or its depth is >= ``target_bits``, whichever first, or
    (as a partial run) when the next level would exceed ``max_evaluations`` or ``max_levels``."""

    n_particles: int = 1000
    p0: float = 0.1
    rho: float = 0.9
    target_acceptance: float = 0.4
    target_eps: float | None = None
    target_bits: float | None = None
    max_evaluations: int = 1_000_000
    max_levels: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        # The rules are the spec's (SplittingSpec, ibdb.spec.budget): one definition, whether
        # the settings come from a spec or are made by hand (tests, benchmarks, notebooks).
        fields = {"particles": self.n_particles, "p0": self.p0, "rho": self.rho,
                  "target_acceptance": self.target_acceptance, "target_eps": self.target_eps,
                  "target_bits": self.target_bits, "max_evaluations": self.max_evaluations,
                  "max_levels": self.max_levels}
        try:
            SplittingSpec.model_validate({k: _plain(v) for k, v in fields.items()})
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            name = "n_particles" if field == "particles" else field
            value = f"{name} = {fields[field]!r}: " if field in fields else ""
            raise SpecError(f"splitting settings: {value}{error['msg']}.") from None
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or (
            self.seed < 0
        ):
            raise SpecError(f"seed = {self.seed!r}; it must be an integer >= 0.")

    @classmethod
    def from_spec(cls, block: SplittingSpec, seed: int) -> SplittingSettings:
        """The settings of one repeat of a budget's splitting block, run from ``seed``."""
        return cls(n_particles=block.particles, p0=block.p0, rho=block.rho,
                   target_acceptance=block.target_acceptance, target_eps=block.target_eps,
                   target_bits=block.target_bits, max_evaluations=block.max_evaluations,
                   max_levels=block.max_levels, seed=seed)

    @property
    def n_seeds(self) -> int:
        """Seeds per level (ties at the threshold may add more)."""
        return int(round(self.p0 * self.n_particles))


@dataclass
class SplittingRun:
    """The records of a run and why it stopped; ``reached_target`` is False for a partial run."""

    settings: SplittingSettings
    dim: int
    records: list[LevelRecord]
    reached_target: bool
    stop_reason: str

    @property
    def n_evaluations(self) -> int:
        return sum(r.n_evaluations for r in self.records)

    def require_target(self) -> SplittingRun:
        """Raise EstimateError unless the run reached its target; return self otherwise."""
        if not self.reached_target:
            raise EstimateError(
                f"subset simulation stopped before its target ({self.stop_reason}) after "
                f"{len(self.records)} levels and {self.n_evaluations} evaluations; raise "
                "max_evaluations / max_levels, or aim for a shallower target."
            )
        return self


# ----------------------------------------------------------------------------- the randomness
def _normal(seed: int, level: int, chain: int, step: int, dim: int) -> np.ndarray:
    """The normal vector owned by (seed, level, chain, step): level 0's particle `chain`, or
    move `step` of chain `chain` at `level`. Independent of any other draw's history."""
    ss = np.random.SeedSequence([int(seed), int(level), int(chain), int(step)])
    return np.random.default_rng(ss).standard_normal(dim)


def _step_size(rho: float) -> float:
    return math.sqrt(1.0 - rho * rho)


def _propose(z: np.ndarray, xi: np.ndarray, rho: float, scale: np.ndarray | None) -> np.ndarray:
    """The pCN proposal rho z + s xi, s = sqrt(1 - rho^2); with ``scale`` (dim,), coordinate j
    moves with its own step s_j = min(scale_j s, 1) and correlation sqrt(1 - s_j^2), which
    leaves N(0, I) invariant just the same (coordinate by coordinate)."""
    if scale is None:
        return rho * z + _step_size(rho) * xi
    s = np.minimum(_step_size(rho) * scale, 1.0)
    return np.sqrt(1.0 - s * s) * z + s * xi


def _next_rho(prev: LevelRecord | None, settings: SplittingSettings) -> float:
    """Scale the step size s = sqrt(1 - rho^2) by (acc / target)^(1/2), acc floored at one
    accepted move per level: a pure function of the stored record, so a resumed run adapts
    exactly as the uninterrupted one did. The ratio form shrinks s fast when moves are almost
    all rejected (acc 1.5 % against 40 %: s / 5) and grows it gently when they are too easy
    (80 %: s x 1.4); a linear rule exp(2 (acc - target)) trailed network levels whose
    acceptance kept falling, and a steeper linear one made gp runs oscillate."""
    if prev is None or prev.level == 0:
        return float(settings.rho)
    moves = int((prev.step > 0).sum())
    acc = max(prev.acceptance_rate, 1.0 / max(moves, 1))
    s = _step_size(prev.rho) * math.sqrt(acc / settings.target_acceptance)
    s = min(max(s, _MIN_STEP), 1.0)
    return float(math.sqrt(1.0 - s * s))


def _seeds_and_threshold(rec: LevelRecord, settings: SplittingSettings) -> tuple[float, np.ndarray]:
    """The next threshold (the n_seeds-th smallest fitting loss; inf when fewer fit) and the
    indices, ascending, of the fitting particles at or below it."""
    keyed = np.where(rec.fitted, rec.losses, np.inf)
    n_fit = int(rec.fitted.sum())
    if n_fit <= settings.n_seeds:
        b = math.inf
    else:
        b = float(np.partition(keyed, settings.n_seeds - 1)[settings.n_seeds - 1])
    return b, np.flatnonzero(rec.fitted & (keyed <= b))


def _chain_layout(n_seeds: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(chain, step) of each particle, chain-major; the first N mod n_seeds chains are one
    longer, so a level again has N particles."""
    lengths = np.full(n_seeds, n // n_seeds, dtype=np.int64)
    lengths[: n % n_seeds] += 1
    chain = np.repeat(np.arange(n_seeds, dtype=np.int64), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    step = np.arange(n, dtype=np.int64) - starts[chain]
    return chain, step


def _call(evaluate: Evaluator, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    losses, fitted = evaluate(z)
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    fitted = np.asarray(fitted).reshape(-1).astype(bool)
    if losses.size != z.shape[0] or fitted.size != z.shape[0]:
        raise EstimateError(
            f"evaluate returned {losses.size} losses and {fitted.size} fit flags for a batch of "
            f"{z.shape[0]}; it must return one of each per row of z."
        )
    # a hypothesis that does not fit may have no loss (a rejected proposal's is never computed):
    # it never enters a level, so its NaN is kept as inf; a fitted one must have a loss
    unexplained = np.isnan(losses) & fitted
    if unexplained.any():
        raise EstimateError(
            f"evaluate returned NaN losses for {int(unexplained.sum())} of {z.shape[0]} "
            "hypotheses marked fitted; return a finite loss (or inf) and mark failures as not "
            "fitted."
        )
    return np.where(fitted, losses, np.where(np.isnan(losses), np.inf, losses)), fitted


# -------------------------------------------------------------------------------- the sampler
def _level_zero(evaluate: Evaluator, dim: int, settings: SplittingSettings
                ) -> tuple[LevelRecord, np.ndarray]:
    n = settings.n_particles
    z = np.stack([_normal(settings.seed, 0, i, 0, dim) for i in range(n)])
    idx = np.arange(n, dtype=np.int64)
    losses, fitted = _call(evaluate, z)
    rec = LevelRecord(level=0, threshold=math.inf, rho=math.nan, losses=losses, fitted=fitted,
                      chain=idx, parent=np.full(n, -1, dtype=np.int64),
                      step=np.zeros(n, dtype=np.int64), accepted=np.ones(n, dtype=bool),
                      n_evaluations=n)
    return rec, z


def _move_level(evaluate: Evaluator, prev: LevelRecord, prev_z: np.ndarray,
                settings: SplittingSettings, scale: np.ndarray | None
                ) -> tuple[LevelRecord, np.ndarray]:
    """Grow one chain per seed below the next threshold; all chains advance one step per
    batched evaluate call."""
    level, n, dim = prev.level + 1, settings.n_particles, prev_z.shape[1]
    b, seeds = _seeds_and_threshold(prev, settings)
    rho = _next_rho(prev, settings)
    chain, step = _chain_layout(seeds.size, n)
    z = np.empty((n, dim))
    losses = np.empty(n)
    accepted = np.ones(n, dtype=bool)
    starts = np.flatnonzero(step == 0)
    z[starts], losses[starts] = prev_z[seeds], prev.losses[seeds]
    evals = 0
    for t in range(1, int(step.max()) + 1):
        at = np.flatnonzero(step == t)
        xi = np.stack([_normal(settings.seed, level, int(c), t, dim) for c in chain[at]])
        prop = _propose(z[at - 1], xi, rho, scale)
        lp, fp = _call(evaluate, prop)
        evals += at.size
        ok = fp & (lp <= b)
        accepted[at] = ok
        z[at] = np.where(ok[:, None], prop, z[at - 1])
        losses[at] = np.where(ok, lp, losses[at - 1])
    rec = LevelRecord(level=level, threshold=b, rho=rho, losses=losses,
                      fitted=np.ones(n, dtype=bool), chain=chain, parent=seeds[chain],
                      step=step, accepted=accepted, n_evaluations=evals)
    return rec, z


def _replay_level(rec: LevelRecord, prev_z: np.ndarray | None, seed: int, dim: int,
                  scale: np.ndarray | None) -> np.ndarray:
    """Every particle's noise at one level from the previous level's noise and the record,
    with the same arithmetic as :func:`_move_level`, so the result is bitwise identical."""
    if rec.level == 0:
        return np.stack([_normal(seed, 0, i, 0, dim) for i in range(rec.n)])
    z = np.empty((rec.n, dim))
    starts = np.flatnonzero(rec.step == 0)
    z[starts] = prev_z[rec.parent[starts]]
    for t in range(1, int(rec.step.max()) + 1):
        at = np.flatnonzero(rec.step == t)
        xi = np.stack([_normal(seed, rec.level, int(c), t, dim) for c in rec.chain[at]])
        prop = _propose(z[at - 1], xi, rec.rho, scale)
        z[at] = np.where(rec.accepted[at][:, None], prop, z[at - 1])
    return z


def _depth_bits(records: Sequence[LevelRecord], b_next: float) -> float:
    """-log2 of the estimated P[L <= b_next | fit] after the last record."""
    bits = 0.0
    thresholds = [r.threshold for r in records[1:]] + [b_next]
    for rec, b in zip(records, thresholds, strict=True):
        inside = rec.fitted & (rec.losses <= b)
        denom = int(rec.fitted.sum()) if rec.level == 0 else rec.n
        bits -= math.log2(max(int(inside.sum()), 1) / denom)
    return bits


def _check_scale(step_scale: np.ndarray | None, dim: int) -> np.ndarray | None:
    if step_scale is None:
        return None
    scale = np.asarray(step_scale, dtype=np.float64)
    if scale.shape != (dim,) or not (np.isfinite(scale).all() and (scale > 0).all()):
        raise SpecError(f"step_scale must be {dim} finite values > 0 (one per noise "
                        f"coordinate), not shape {scale.shape} with min {scale.min(initial=0)!r}.")
    return scale


def _check_resume(records: Sequence[LevelRecord], settings: SplittingSettings) -> None:
    for j, rec in enumerate(records):
        if rec.level != j or rec.n != settings.n_particles:
            raise EstimateError(
                f"resume record {j} has level {rec.level} and {rec.n} particles; expected level "
                f"{j} with n_particles = {settings.n_particles}: pass the finished levels of a "
                "run with the same settings, in order."
            )


def run_levels(
    evaluate: Evaluator,
    dim: int,
    settings: SplittingSettings,
    *,
    resume: Sequence[LevelRecord] | None = None,
    progress: Callable[[LevelRecord], None] | None = None,
    step_scale: np.ndarray | None = None,
) -> SplittingRun:
    """Run subset simulation on {L <= b, fit} over z ~ N(0, I_dim).

    ``evaluate(z)`` maps a (B, dim) batch of noise to (losses (B,), fitted (B,)); z must hold
    all of a hypothesis's randomness (randomness held outside it would never be moved, so the
    chains could not mix over it). ``step_scale`` (dim,): per-coordinate multipliers of the
    adapted pCN step (see :func:`_propose`; e.g. gentler moves for a network's data-order
    normals); a resume and :func:`regenerate_noise` need the same. ``resume``: the
    records of finished levels of an earlier run with the same settings, evaluator and dim; the
    continuation is bitwise that of an uninterrupted run. ``progress`` is called with each newly
    finished level's record (store it there; a level interrupted midway is simply rerun).
    Returns a partial run (``reached_target`` False, ``stop_reason`` saying why) when the cap or
    ``max_levels`` is hit first; raises EstimateError when no level-0 particle fits.
    """
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise SpecError(f"dim = {dim!r}; the noise dimension must be an integer >= 1.")
    if not isinstance(settings, SplittingSettings):
        raise SpecError(f"settings must be a SplittingSettings, got {type(settings).__name__}.")
    scale = _check_scale(step_scale, int(dim))
    records: list[LevelRecord] = list(resume or [])
    _check_resume(records, settings)
    if records:
        z = None
        for rec in records:
            z = _replay_level(rec, z, settings.seed, dim, scale)
    else:
        rec, z = _level_zero(evaluate, dim, settings)
        records.append(rec)
        if progress is not None:
            progress(rec)
    if not records[0].fitted.any():
        raise EstimateError(
            f"none of the {settings.n_particles} level-0 hypotheses fits the training data, so "
            "P[fit] cannot be estimated; use more particles or a model that can fit."
        )
    spent = sum(r.n_evaluations for r in records)
    while True:
        last = records[-1]
        b, seeds = _seeds_and_threshold(last, settings)
        depth = _depth_bits(records, b)
        if settings.target_eps is not None and b <= settings.target_eps:
            return SplittingRun(settings, dim, records, True, f"threshold {b!r} <= target_eps")
        if settings.target_bits is not None and depth >= settings.target_bits:
            return SplittingRun(settings, dim, records, True,
                                f"depth {depth:.2f} bits >= target_bits")
        if last.level >= 1 and b >= last.threshold:
            return SplittingRun(settings, dim, records, False,
                                f"stalled: threshold stuck at {b!r} (a plateau of equal losses)")
        if len(records) >= settings.max_levels:
            return SplittingRun(settings, dim, records, False,
                                f"max_levels = {settings.max_levels} reached")
        cost = settings.n_particles - seeds.size
        if spent + cost > settings.max_evaluations:
            return SplittingRun(
                settings, dim, records, False,
                f"next level needs {cost} evaluations, {settings.max_evaluations - spent} left "
                f"of max_evaluations = {settings.max_evaluations}; reached {depth:.2f} bits")
        rec, z = _move_level(evaluate, last, z, settings, scale)
        spent += rec.n_evaluations
        records.append(rec)
        log.info("level %d: threshold %.6g, rho %.3f, acceptance %.2f, depth %.2f bits",
                 rec.level, rec.threshold, rec.rho, rec.acceptance_rate, depth)
        if progress is not None:
            progress(rec)


def regenerate_noise(records: Sequence[LevelRecord], level: int, index: int, *, seed: int,
                     dim: int, step_scale: np.ndarray | None = None) -> np.ndarray:
    """The noise z of particle ``index`` at ``level``, replayed from the records and the seed
    (only its ancestors' chains are replayed, no evaluation is needed); ``step_scale`` as the
    run had it."""
    if not 0 <= level < len(records) or not 0 <= index < records[level].n:
        raise EstimateError(
            f"no particle ({level}, {index}); there are {len(records)} levels of "
            f"{records[0].n if records else 0} particles."
        )
    rec = records[level]
    if level == 0:
        return _normal(seed, 0, index, 0, dim)
    c = rec.chain[index]
    first = index - int(rec.step[index])
    z = regenerate_noise(records, level - 1, int(rec.parent[first]), seed=seed, dim=dim,
                         step_scale=step_scale)
    scale = _check_scale(step_scale, dim)
    for i in range(first + 1, index + 1):
        if rec.accepted[i]:
            z = _propose(z, _normal(seed, level, int(c), int(rec.step[i]), dim), rec.rho, scale)
    return z
