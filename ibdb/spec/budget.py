"""Budgets in specs: how many hypotheses a run samples, its seed, and an optional splitting
block (rare-event sampling deep in the tail) on the same run."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from ibdb.spec.base import Name, PositiveFloat, PositiveInt
from ibdb.spec.base import SpecModel as _Spec


class SplittingSpec(_Spec):
    """Rare-event sampling (subset simulation) deep in the tail, after the i.i.d. hypotheses.

    It runs on the same run as the budget's i.i.d. hypotheses, from the budget's seed, and
    reaches depths (bits) that i.i.d. sampling cannot. Each level has ``particles`` particles;
    the ``round(p0 * particles)`` lowest-loss ones seed the next level, whose threshold is their
    loss, and are grown into chains by preconditioned Crank-Nicolson moves. It stops when a
    level's threshold reaches ``target_eps`` or its depth reaches ``target_bits``, whichever
    comes first, or (as a partial run) at ``max_evaluations`` or ``max_levels``.
    """

    particles: PositiveInt = Field(1000, description="Particles per level (N).")
    p0: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        0.1, description="Conditional probability of each level: the fraction of a level's "
        "particles that seed the next. p0 * particles must round to between 1 and "
        "particles - 1.")
    rho: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        0.9, description="Correlation of the first moving level's pCN proposals; later levels "
        "adapt it toward target_acceptance.")
    target_acceptance: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        0.4, description="Acceptance rate of pCN moves that the step size is tuned toward.")
    target_bits: PositiveFloat | None = Field(
        None, description="Stop once a level is this deep, in bits (-log2 of its probability).")
    target_eps: PositiveFloat | None = Field(
        None, description="Stop once a level's threshold is at most this test MSE.")
    max_evaluations: PositiveInt = Field(
        1_000_000, description="Most hypotheses evaluated per repeat (at least particles); a "
        "repeat that reaches it stops as a partial run.")
    repeats: PositiveInt = Field(
        1, description="Independent runs, each from its own seed; 2 or more give an interval "
        "from their spread.")
    max_levels: PositiveInt = Field(
        200, description="Most levels per repeat; a repeat that reaches it stops as a partial "
        "run.")

    @model_validator(mode="after")
    def _consistent(self) -> SplittingSpec:
        seeds = round(self.p0 * self.particles)
        if not 1 <= seeds <= self.particles - 1:
            raise ValueError(
                f"p0 * particles = {self.p0} * {self.particles} rounds to {seeds} seeds; it must "
                "be between 1 and particles - 1: raise particles or change p0")
        if self.target_bits is None and self.target_eps is None:
            raise ValueError("splitting needs target_bits (a depth in bits, e.g. 40) or "
                             "target_eps (a test MSE)")
        if self.max_evaluations < self.particles:
            raise ValueError(
                f"max_evaluations = {self.max_evaluations} is below particles = "
                f"{self.particles}; level 0 alone needs particles evaluations: raise it")
        return self


class Budget(_Spec):
    """How many hypotheses to sample, in chunks of ``chunk_size`` (one shard file per chunk)."""

    name: Name = "default"
    n_hypotheses: PositiveInt
    chunk_size: PositiveInt = 1000
    seed: Annotated[int, Field(ge=0, lt=2**63)] = Field(
        0, description="The run's seed, 0 <= seed < 2^63 (hypothesis i's own seed is a hash of "
        "it and i).")
    splitting: SplittingSpec | None = Field(
        None, description="Rare-event sampling after the i.i.d. hypotheses, on the same run "
        "(no splitting when absent).")

    def identity(self) -> dict[str, Any]:
        """What of the budget defines hypotheses (its part of the run id): the seed. The count,
        chunks and a splitting block add hypotheses to the same run."""
        return {"seed": self.seed}

