"""Plans: which runs a spec asks for, their identities, and the hypotheses still to sample.

A run's id is the hash of the canonical JSON of everything that changes its losses: the task's
data (content fingerprint) and split, the space (less its name), the runner and its version, and
the sampling seed. Names, eps and the number of hypotheses do not enter it: hypothesis ``i`` is
the same whatever ``N`` is, so asking for more hypotheses extends a run instead of starting anew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ibdb.runners import check_space, check_splitting, runner_entry
from ibdb.specs import RunSpec
from ibdb.tasks import TaskData, load_task

RUN_ID_LENGTH = 16  # hex digits of sha256: 64 bits, ample for one store's runs


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


def run_identity(spec: RunSpec, data: TaskData) -> dict[str, Any]:
    task = spec.task
    space = spec.space.model_dump(mode="json", exclude={"name"})
    entry = runner_entry(spec.space.kind)
    return {
        "task": {"source": task.source.kind, "data": data.fingerprint, "n_train": task.n_train,
                 "n_test": task.n_test, "split_seed": task.split_seed},
        "space": space,
        "runner": entry.kind,
        "runner_version": entry.version,
        "seed": spec.budget.seed,
    }


def run_id_of(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:RUN_ID_LENGTH]


def load_runs(specs: list[RunSpec], *, spec_dir: Path) -> list[tuple[RunSpec, str, dict, TaskData]]:
    """Load every run's data (so that bad input fails before anything is written)."""
    loaded: dict[tuple[str, str], TaskData] = {}
    out = []
    for spec in specs:
        key = (spec.task.model_dump_json(), str(spec_dir))
        if key not in loaded:
            loaded[key] = load_task(spec.task, spec_dir=spec_dir)
        data = loaded[key]
        check_space(spec.space, data)
        if spec.budget.splitting is not None:
            check_splitting(spec.space)
        identity = run_identity(spec, data)
        out.append((spec, run_id_of(identity), identity, data))
    return out


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
