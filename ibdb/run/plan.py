"""Plans: which runs a spec asks for, their identities, and the hypotheses still to sample.

A run's id (:mod:`ibdb.spec.identity`) needs its task's data fingerprint, so runs are
identified here, once their data are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ibdb.core import memory
from ibdb.core.errors import DataError
from ibdb.core.memory import format_bytes, require_memory
from ibdb.core.references import resolve
from ibdb.data.task import TaskData, load_task
from ibdb.runners import check_space, check_splitting
from ibdb.runners.sizes import Sizes
from ibdb.spec.experiment import RunSpec
from ibdb.spec.identity import run_id_of, run_identity
from ibdb.spec.sources import SOURCES, Task
from ibdb.spec.spaces import SPACES


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    run_id: str
    identity: dict[str, Any]
    data: TaskData
    stored_ids: frozenset[int]

    @property
    def missing_ids(self) -> np.ndarray:
        """Hypothesis indices in [0, n_hypotheses) not yet in the store, ascending."""
        wanted = np.arange(self.spec.budget.n_hypotheses, dtype=np.int64)
        if not self.stored_ids:
            return wanted
        return wanted[~np.isin(wanted, np.fromiter(self.stored_ids, dtype=np.int64))]

    @property
    def runner_tag(self) -> str:
        return f"{self.identity['runner']}/{self.identity['runner_version']}"


def load_runs(specs: list[RunSpec], *, spec_dir: Path) -> list[tuple[RunSpec, str, dict, TaskData]]:
    """Load every run's data (so that bad input fails before anything is written)."""
    loaded: dict[tuple[str, str], TaskData] = {}
    out = []
    for spec in specs:
        check_plan_memory(spec)
    for spec in specs:
        key = (spec.task.model_dump_json(), str(spec_dir))
        if key not in loaded:
            check_task_memory(spec.task, spec_dir)
            try:
                loaded[key] = load_task(spec.task, spec_dir=spec_dir)
            except MemoryError:
                have = format_bytes(memory.machine_memory_bytes())
                raise DataError(
                    f"task {spec.task.name!r}: its data do not fit in memory (this machine has "
                    f"{have}). Use fewer or smaller points "
                    "(n_train, n_test, the source's size or features), or a machine with more "
                    "memory.") from None
        data = loaded[key]
        check_space(spec.space, data)
        if spec.budget.splitting is not None:
            check_splitting(spec.space)
        check_chunk_memory(spec, data)
        check_splitting_memory(spec, data)
        facts = SPACES.of(spec.space).facts
        identity = run_identity(spec, data.fingerprint,
                                None if facts is None else resolve(facts)(spec.space, data))
        out.append((spec, run_id_of(identity), identity, data))
    return out


# -- memory, checked before anything is allocated --------------------------------------------
# Rough estimates (float64 everywhere, though networks train in float32: about twice what is
# needed), compared with the machine's physical memory (memory.machine_memory_bytes). They are
# meant to turn an absurd size into a message, not to predict the peak to the byte.

PLAN_BYTES_PER_HYPOTHESIS = 40
"""A run's plan holds every hypothesis id to sample (int64) and, while it cuts them into
chunks, four more temporaries per id (execute.chunk_ranges): about 40 bytes per hypothesis."""


def check_plan_memory(spec: RunSpec) -> None:
    """Refuse a budget whose list of hypothesis ids alone cannot fit in memory."""
    n = spec.budget.n_hypotheses
    require_memory(
        n * PLAN_BYTES_PER_HYPOTHESIS,
        f"{spec.label}: budget.n_hypotheses = {n} (the plan keeps every id to sample, about "
        f"{PLAN_BYTES_PER_HYPOTHESIS} bytes per hypothesis)",
        "Lower budget.n_hypotheses (a run can be extended later: asking for more hypotheses "
        "resumes it).")


def check_task_memory(task: Task, spec_dir: Path) -> None:
    """Refuse a task whose data cannot fit, before loading it, with its source's own check
    (generators' sizes come from the spec, files' class counts from a look at their labels)."""
    check = SOURCES.of(task.source).memory
    if check is not None:
        resolve(check)(task, spec_dir)


def space_sizes(spec: RunSpec, data: TaskData) -> Sizes | None:
    """The space's memory estimates on ``data`` (its kind's ``sizes`` in
    :data:`ibdb.spec.spaces.SPACES`), or None when its kind gives none."""
    sizes = SPACES.of(spec.space).sizes
    return None if sizes is None else resolve(sizes)(spec.space, data)


def check_chunk_memory(spec: RunSpec, data: TaskData) -> None:
    """Refuse a run one of whose chunks (or a gp's fixed matrices) cannot fit in memory."""
    sizes = space_sizes(spec, data)
    if sizes is None:
        return
    fixed, per, formula = sizes.fixed, sizes.per_hypothesis, sizes.formula
    if fixed:
        require_memory(fixed, f"{spec.label}: {sizes.fixed_what}",
                       "Lower the task's n_train or n_test.")
    chunk = min(spec.budget.chunk_size, spec.budget.n_hypotheses)
    _require_count(
        fixed, chunk, per + 16, least=1, field="budget.chunk_size",  # (+ the id and seed)
        what=f"{spec.label}: one chunk of budget.chunk_size = {chunk} hypotheses of the "
             f"{spec.space.kind} space (estimate: {format_bytes(per + 16)} per hypothesis, "
             f"{formula}, + 16 bytes)",
        too_big="Even one hypothesis does not fit: make the space smaller (width, depth, "
                "channels, layers) or the task (n_train, n_test, features).")


def check_splitting_memory(spec: RunSpec, data: TaskData) -> None:
    """Refuse a splitting block one of whose levels cannot fit in memory. A level holds its
    particles' noise twice (the previous level's and its own) and, for the step being
    taken, each chain's fresh normals and proposal (at most one per particle): 4 x particles
    x noise_dim float64; each step evaluates up to one hypothesis per particle."""
    splitting = spec.budget.splitting
    sizes = space_sizes(spec, data)
    if splitting is None or sizes is None or sizes.noise_dim is None:
        return
    dim, per, formula = sizes.noise_dim, sizes.per_hypothesis, sizes.formula
    n = splitting.particles
    _require_count(
        sizes.fixed, n, 32 * dim + per, least=2, field="budget.splitting.particles",
        what=f"{spec.label}: one splitting level of particles = {n} (estimate per particle: 32 "
             f"bytes x noise_dim = {dim}, + one hypothesis's evaluation, {formula})",
        too_big="Make the space or the task smaller (its noise vector is too long).")


def _require_count(fixed: int, count: int, unit: int, *, least: int, field: str, what: str,
                   too_big: str) -> None:
    """Refuse ``count`` items of ``unit`` bytes each beside ``fixed`` bytes when they exceed
    the machine's memory, naming the largest ``field`` that fits in half of it (or
    ``too_big`` when fewer than ``least`` would)."""
    have = memory.machine_memory_bytes()
    needed = fixed + count * unit
    if not have or needed <= have:
        return
    fits = (have // 2 - fixed) // unit
    fix = (f"Lower {field} to at most {fits} (what fits in half this machine's memory)."
           if fits >= least else too_big)
    require_memory(needed, what, fix)


_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def hypothesis_seeds(run_seed: int, hypothesis_ids: np.ndarray) -> np.ndarray:
    """Hypothesis i's own seed: a SplitMix64 hash of (run seed, i), in [0, 2^63).

    Any hypothesis can be recomputed alone from (run seed, i), and neighbouring indices get
    unrelated generators.
    """
    ids = np.asarray(hypothesis_ids, dtype=np.uint64)
    # Each run seed starts its own stream at a pseudo-random 64-bit offset (as SplitMix64
    # streams do); two runs' streams overlap only if their offsets lie within N of each other.
    base = _splitmix64(np.array([run_seed], dtype=np.uint64))
    mixed = _splitmix64(_splitmix64(base + ids))
    return (mixed >> np.uint64(1)).astype(np.int64)
