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

from ibdb.core import memory
from ibdb.core.errors import DataError
from ibdb.core.memory import format_bytes, require_memory
from ibdb.data import datasets
from ibdb.data.task import TaskData, load_task, resolve_source_path
from ibdb.runners import check_space, check_splitting, runner_entry
from ibdb.spec.experiment import RunSpec
from ibdb.spec.sources import NpzSource, ParquetSource, PendulumSource, SyntheticSource, Task
from ibdb.spec.spaces import CNNSpace, GPSpace, MLPSpace

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
        identity = run_identity(spec, data)
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
    """Refuse a task whose generated data or one-hot targets cannot fit, before loading it:
    generators' sizes come from the spec, files' class counts from a look at their labels."""
    source = task.source
    where = f"task {task.name!r}: source"
    if isinstance(source, SyntheticSource):
        p = source.model_dump()
        require_memory(
            datasets.synthetic_bytes(**p),
            f"{where} synthetic with n_points = {source.n_points}, ambient_dim = "
            f"{source.ambient_dim}, intrinsic_dim = {source.intrinsic_dim}, n_classes = "
            f"{source.n_classes}, teacher_width = {source.teacher_width} (estimate: 8 bytes x "
            "(4 n d + 3 d m + n (3 m + 2 width + 3 classes)))",
            "Lower source.n_points or source.ambient_dim.")
    elif isinstance(source, PendulumSource):
        require_memory(
            datasets.pendulum_bytes(n_points=source.n_points, n_bins=source.n_bins,
                                    steps=source.steps),
            f"{where} pendulum with n_points = {source.n_points}, n_bins = {source.n_bins} "
            "(estimate: 8 bytes x (15 n + 2 bins + n bins))",
            "Lower source.n_points or source.n_bins.")
    elif isinstance(source, NpzSource | ParquetSource):
        n_classes = _file_class_count(source, spec_dir)
        if n_classes is not None:
            rows = task.n_train + task.n_test
            require_memory(
                8 * rows * n_classes,
                f"{where}.path: its largest label {n_classes - 1} makes {n_classes} classes; "
                f"one-hot targets of n_train + n_test = {rows} points (8 bytes x points x "
                "classes)",
                "Labels must be class indices 0, 1, ..., k - 1: renumber them (or keep a few "
                "with preprocess.classes).")


def _file_class_count(source: NpzSource | ParquetSource, spec_dir: Path) -> int | None:
    """1 + the largest label in an npz's y_train / y_test or a Parquet file's label column
    (an npz's one-hot labels: their columns); None when the file cannot be read that way
    (loading the task then says why)."""
    path = resolve_source_path(source, spec_dir)
    try:
        if isinstance(source, ParquetSource):
            import duckdb

            with duckdb.connect() as con:
                top = con.execute('SELECT max("label") FROM read_parquet(?)',
                                  [str(path)]).fetchone()
            value = top[0] if top else None
            return int(value) + 1 if isinstance(value, int) and value >= 0 else None
        with np.load(path, allow_pickle=False) as npz:
            counts = []
            for name in ("y_train", "y_test"):
                labels = npz[name]
                if labels.ndim == 2:
                    counts.append(labels.shape[1])
                elif labels.ndim == 1 and labels.size and np.issubdtype(labels.dtype,
                                                                        np.integer):
                    counts.append(int(labels.max()) + 1)
            return max(counts) if counts else None
    except Exception:  # noqa: BLE001 (any unreadable file: load_task reports it properly)
        return None


def hypothesis_bytes(spec: RunSpec, data: TaskData) -> tuple[int, str]:
    """Rough bytes one hypothesis of ``spec``'s space takes while its chunk is sampled, and the
    estimate's formula. n_train, n_test, k classes, d features (c x h x w for images):

    - gp: its (n_test, k) normals and predictions (float32) and temporaries: 12 n_test k;
      conditioned on a fit (``fit``): 16 (n_train + n_test) k more;
    - mlp: P parameters (weights, gradients, two optimiser moments: 4 P) and activations for
      train and test points, forward and backward (3 (n_train + n_test) (depth width + k));
    - cnn: the same with the convolutions' parameters and feature maps (channels x h x w per
      layer, halved by each pooling).
    All times 8 bytes, except the gp's float32 arrays; the fixed matrices a gp holds for every
    hypothesis (n_train^2 + n_train n_test + n_test^2 float64) are checked apart.
    """
    space = spec.space
    n_train, n_test = len(data.x_train), len(data.x_test)
    k = data.y_train.shape[1]
    if space.kind == "gp":
        per = 12 * n_test * k + 64
        formula = "12 bytes x n_test x k"
        if space.fit is not None:
            per += 16 * (n_train + n_test) * k
            formula += " + 16 bytes x (n_train + n_test) x k"
        return per, formula
    params, units = network_size(space, data)
    return (8 * (4 * params + 3 * (n_train + n_test) * units),
            f"8 bytes x (4 x {params} parameters + 3 x (n_train + n_test) x {units} units)")


def network_size(space: MLPSpace | CNNSpace, data: TaskData) -> tuple[int, int]:
    """(parameters, units) of one network of an mlp or cnn space on ``data``: its weights and
    biases, and the activations per point (every hidden unit of every layer, plus the k
    outputs; a cnn's feature maps are channels x h x w, halved by each pooling)."""
    k, d = data.y_train.shape[1], data.x_train.shape[1]
    if space.kind == "mlp":
        w, depth = space.width, space.depth
        if depth == 0:
            return (d + 1) * k, k
        return (d + 1) * w + (depth - 1) * (w + 1) * w + (w + 1) * k, depth * w + k
    channels_in, height, width = data.image_shape or (1, 1, d)
    c, ks = space.channels, space.kernel_size
    params, units = 0, 0
    for _ in range(space.layers):
        params += channels_in * c * ks * ks + c
        units += c * height * width
        channels_in = c
        if space.pooling != "none":
            height, width = max(1, height // 2), max(1, width // 2)
    return params + c * height * width * k + k, units + k


def noise_dimension(space: GPSpace | MLPSpace | CNNSpace, data: TaskData) -> int:
    """The length of one hypothesis's noise vector, what a splitting block moves (the runners'
    ``noise_dim``, computed here without building a runner): a gp's n_test k normals (plus
    n_train k + 1 when conditioned on a fit); a network's one per parameter, plus one per
    training point and epoch for its data orders (none for full-batch training)."""
    n_train, n_test = len(data.x_train), len(data.x_test)
    k = data.y_train.shape[1]
    if space.kind == "gp":
        return n_test * k + (n_train * k + 1 if space.fit is not None else 0)
    params, _ = network_size(space, data)
    opt = space.optimizer
    return params + (0 if opt.batch_size == "full" else opt.epochs * n_train)


def check_chunk_memory(spec: RunSpec, data: TaskData) -> None:
    """Refuse a run one of whose chunks (or a gp's fixed matrices) cannot fit in memory."""
    n_train, n_test = len(data.x_train), len(data.x_test)
    fixed = _fixed_bytes(spec, data)
    if fixed:
        require_memory(
            fixed,
            f"{spec.label}: the gp space's kernel matrices for n_train = {n_train}, n_test = "
            f"{n_test} (8 bytes x (n_train^2 + n_train n_test + n_test^2))",
            "Lower the task's n_train or n_test.")
    per, formula = hypothesis_bytes(spec, data)
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
    if splitting is None:
        return
    dim = noise_dimension(spec.space, data)
    per, formula = hypothesis_bytes(spec, data)
    n = splitting.particles
    _require_count(
        _fixed_bytes(spec, data), n, 32 * dim + per, least=2, field="budget.splitting.particles",
        what=f"{spec.label}: one splitting level of particles = {n} (estimate per particle: 32 "
             f"bytes x noise_dim = {dim}, + one hypothesis's evaluation, {formula})",
        too_big="Make the space or the task smaller (its noise vector is too long).")


def _fixed_bytes(spec: RunSpec, data: TaskData) -> int:
    """What a run holds whatever its chunk: a gp's kernel matrices (float64)."""
    if spec.space.kind != "gp":
        return 0
    n_train, n_test = len(data.x_train), len(data.x_test)
    return 8 * (n_train**2 + n_train * n_test + n_test**2)


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
