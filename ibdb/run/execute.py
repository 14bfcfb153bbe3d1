"""Execution: turn a planned run into shard files, chunk by chunk, on the chosen device.

This is the only module of the library that imports torch (through the runners), and it never
opens the store: its output is a run folder (see :mod:`ibdb.run.shards`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ibdb.core.errors import EstimateError
from ibdb.progress import Progress  # progress(label, done, total): see ibdb.progress
from ibdb.run import shards as shardfiles
from ibdb.run.plan import PlannedRun, hypothesis_seeds
from ibdb.runners import load_runner
from ibdb.spec.spaces import SPACES
from ibdb.stats.bound import statistics_for_task

log = logging.getLogger(__name__)

# A loss shard's footer holds its fitted hypotheses' summed test residuals (test points x
# outputs values, as JSON in the store's shard ledger) only up to this many: 1e5 values are
# ~2 MB of JSON per shard (MNIST's 10 000 test points x 10 classes).
SUMMARY_MAX_VALUES = 100_000



def chunk_ranges(missing: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """Split missing hypothesis ids at multiples of ``chunk_size`` and at gaps.

    Aligning chunks to multiples of the chunk size keeps shard names stable between a killed
    run and its resumption.
    """
    if len(missing) == 0:
        return []
    breaks = np.flatnonzero((np.diff(missing) != 1) | (np.diff(missing // chunk_size) != 0)) + 1
    return np.split(missing, breaks)


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """One chunk of one run: everything a worker on another machine needs to write its shard."""

    planned: PlannedRun
    ids: np.ndarray
    shard_root: Path
    device_name: str
    repeat: int | None = None  # a splitting repeat to run (or resume) instead of hypotheses

    @property
    def what(self) -> str:
        """What the task computes, for messages."""
        if self.repeat is not None:
            return f"splitting repeat {self.repeat}"
        return f"hypotheses {self.ids[0]}..{self.ids[-1]}"


ChunkMapper = Callable[[list[ChunkTask], Callable[[ChunkTask], None]], None]
"""mapper(tasks, done): run :func:`sample_chunk` on every task, calling done(task) as each one
finishes (in any order). See :mod:`ibdb.run.executors`."""


def execute_run(planned: PlannedRun, *, shard_root: Path, device_name: str = "auto",
                progress: Progress | None = None, mapper: ChunkMapper | None = None) -> Path:
    """Sample every missing hypothesis of ``planned`` into its run folder; return the folder.

    Without ``mapper`` the chunks run here, one after another, with one runner; with one (Ray,
    submitit) each chunk is a task that builds its own runner and writes its own shard.
    """
    import torch  # deferred: `import ibdb` and the CLI's help must not pay for torch

    from ibdb.runners.base import resolve_device

    device = resolve_device(device_name)
    folder = shardfiles.run_dir(shard_root, planned.run_id)
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat()
    runner = _make_runner(planned, device)
    manifest = _manifest(planned, runner.info, device=str(device), started_at=started_at,
                         torch_version=torch.__version__)
    shardfiles.write_manifest(folder, manifest)
    spectrum = runner.spectrum()
    if spectrum is not None and not shardfiles.spectrum_shards(folder):
        shardfiles.write_spectrum(folder, planned.run_id, spectrum["eigenvalue"],
                                  spectrum["residuals"])
    existing = {shardfiles.shard_range(p) for p in shardfiles.loss_shards(folder)}
    chunks = chunk_ranges(planned.missing_ids, planned.spec.budget.chunk_size)
    total = sum(len(ids) for ids in chunks)
    # a chunk written before a crash is not recomputed
    todo = [ids for ids in chunks if (int(ids[0]), int(ids[-1])) not in existing]
    done = [total - sum(len(ids) for ids in todo)]

    def report(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(planned.spec.label, done[0], total)

    if mapper is None:
        for ids in todo:
            _write_chunk(planned, runner, ids, folder, device)
            report(len(ids))
        if not todo and progress is not None:
            progress(planned.spec.label, total, total)
    else:
        del runner  # workers build their own; free the driver's memory meanwhile
        # workers on other machines (or in other working folders) need an absolute path
        root = Path(shard_root).resolve()
        tasks = [ChunkTask(planned, ids, root, device_name) for ids in todo]
        mapper(tasks, lambda task: report(len(task.ids)))
    if planned.spec.budget.splitting is not None:
        if mapper is not None:  # each repeat a task; the driver then reads how far each got
            root = Path(shard_root).resolve()
            mapper([ChunkTask(planned, np.empty(0, np.int64), root, device_name, repeat=r)
                    for r in range(planned.spec.budget.splitting.repeats)], lambda task: None)
            runner = _make_runner(planned, device)
        manifest["runner_info"]["splitting"] = run_splitting(planned, runner, folder,
                                                             progress=progress)
    manifest["provenance"]["finished_at"] = datetime.now(UTC).isoformat()
    manifest["provenance"]["wall_seconds"] = time.monotonic() - started
    shardfiles.write_manifest(folder, manifest)
    log.info("run %s: %d hypotheses in %.2f s on %s", planned.run_id, total,
             time.monotonic() - started, device)
    return folder


def splitting_seed(run_seed: int, repeat: int) -> int:
    """The seed of a splitting repeat: hypothesis ``repeat``'s seed of a stream of its own
    (the run seed's bits flipped), so repeats are independent of each other and of the i.i.d.
    hypotheses, and repeat r is the same whatever the number of repeats asked for."""
    stream = run_seed ^ 0x5EED_5EED_5EED_5EED
    return int(hypothesis_seeds(stream, np.array([repeat], dtype=np.int64))[0])


def run_splitting(planned: PlannedRun, runner: Any, folder: Path, *,
                  progress: Progress | None = None, repeats: list[int] | None = None
                  ) -> list[dict[str, Any]]:
    """Run (or resume) every repeat of the budget's splitting block, one level shard per
    finished level; return how far each repeat got.

    A repeat resumes from its level shards in ``folder``: each level is a pure function of the
    previous one and the repeat's seed (ibdb.run.splitting), so a killed run continues bit for bit,
    and a finished repeat returns at once. ``repeats``: only these (default: every repeat).
    """
    from ibdb.run.splitting import SAMPLER_VERSION, SplittingSettings, run_levels

    block = planned.spec.budget.splitting
    label = f"{planned.spec.label} splitting"
    # for progress only: the levels a target depth takes at p0 per level (unknown for an eps)
    expected_levels = 1 + math.ceil(block.target_bits / -math.log2(block.p0)) \
        if block.target_bits else 2

    def evaluate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = runner.evaluate(z)  # a noise row holds all of its hypothesis's randomness
        fitted = out.get("fitted")  # (runners whose hypotheses always fit leave it out)
        return out["test_mse"], np.ones(len(z), bool) if fitted is None else fitted

    noise_version = SPACES.of(planned.spec.space).noise_version
    outcomes = []
    for repeat in range(block.repeats) if repeats is None else repeats:
        seed = splitting_seed(planned.spec.budget.seed, repeat)
        settings = SplittingSettings.from_spec(block, seed)
        # what makes the levels (not the stopping rules, which a resume may change)
        sampler = {"seed": seed, "particles": block.particles, "p0": block.p0,
                   "rho": block.rho, "target_acceptance": block.target_acceptance,
                   "noise": noise_version, "sampler_version": SAMPLER_VERSION}
        done = shardfiles.read_levels(folder, repeat, expect=sampler)

        def store(record: Any, repeat: int = repeat, sampler: dict = sampler) -> None:
            shardfiles.write_level_shard(folder, planned.run_id, repeat, record, {
                "spec_hash": planned.run_id, "runner": planned.runner_tag, "loss": "test_mse",
                **sampler})
            if progress is not None:
                progress(f"{label} {repeat + 1}/{block.repeats}", record.level + 1,
                         max(record.level + 1, expected_levels))

        run = run_levels(evaluate, runner.noise_dim, settings, resume=done, progress=store,
                         step_scale=runner.step_scale)
        if not run.reached_target:
            log.warning("run %s, splitting repeat %d stopped early: %s", planned.run_id,
                        repeat, run.stop_reason)
        outcomes.append({"repeat": repeat, "seed": seed, "levels": len(run.records),
                         "evaluations": run.n_evaluations, "reached_target": run.reached_target,
                         "stop_reason": run.stop_reason})
    return outcomes


def sample_chunk(task: ChunkTask) -> Path:
    """Sample one chunk into its shard (in a Ray task or a Slurm array job); return the shard.
    A splitting-repeat task runs (or resumes) that repeat into level shards instead."""
    from ibdb.runners.base import resolve_device

    device = resolve_device(task.device_name)
    runner = _make_runner(task.planned, device)
    folder = shardfiles.run_dir(task.shard_root, task.planned.run_id)
    if task.repeat is not None:
        run_splitting(task.planned, runner, folder, repeats=[task.repeat])
        return folder
    return _write_chunk(task.planned, runner, task.ids, folder, device)


def _make_runner(planned: PlannedRun, device: Any) -> Any:
    runner_cls = load_runner(planned.spec.space.kind)
    return runner_cls(planned.spec.space, planned.data, device=device)


def _write_chunk(planned: PlannedRun, runner: Any, ids: np.ndarray, folder: Path,
                 device: Any) -> Path:
    import torch

    t0 = time.monotonic()
    seeds = hypothesis_seeds(planned.spec.budget.seed, ids)
    summary: dict[str, Any] = {}
    if hasattr(runner, "sample_with_summary"):  # what the mean hypothesis needs (networks)
        losses, summary = runner.sample_with_summary(ids, seeds)
        if len(summary.get("test_residual_sum", ())) > SUMMARY_MAX_VALUES:
            summary = {}  # too large for a shard's footer; no decomposition for this run
    else:
        losses = runner.sample(ids, seeds)
    # Each loss shard carries this much of the manifest, so a shard alone says what made it
    # (run_id is the spec hash; the runner tag is kind/version).
    return shardfiles.write_loss_shard(folder, planned.run_id, ids, seeds, losses, {
        **({"summary": summary} if summary else {}),
        "spec_hash": planned.run_id, "runner": planned.runner_tag,
        "runner_version": planned.runner_tag.rpartition("/")[2],
        "ibdb_version": importlib.metadata.version("ibdb"), "torch_version": torch.__version__,
        "duckdb_version": duckdb.__version__, "device": str(device),
        "host": socket.gethostname(), "wall_seconds": time.monotonic() - t0,
        "written_at": datetime.now(UTC).isoformat(),
    })


def _manifest(planned: PlannedRun, runner_info: dict[str, Any], *, device: str, started_at: str,
              torch_version: str) -> dict[str, Any]:
    data = planned.data
    try:  # the 2023 bound's inputs; a task they cannot be computed for still runs
        # m and delta on the task's fixed source sample, so they do not drift with n_train
        statistics = dataclasses.asdict(statistics_for_task(data))
    except EstimateError as exc:
        log.warning("run %s: no task statistics for the 2023 bound: %s", planned.run_id, exc)
        statistics = None
    return {
        "run_id": planned.run_id,
        "runner": planned.runner_tag,
        "spec": planned.spec.model_dump(mode="json"),
        "identity": planned.identity,
        "task": {"n_train": len(data.x_train), "n_test": len(data.x_test),
                 "n_outputs": data.n_outputs, "fingerprint": data.fingerprint,
                 "statistics": statistics},
        "runner_info": runner_info,
        "provenance": {
            "ibdb_version": importlib.metadata.version("ibdb"),
            "torch_version": torch_version,
            "duckdb_version": duckdb.__version__,
            "device": device,
            "host": socket.gethostname(),
            "started_at": started_at,
            "finished_at": None,
            "wall_seconds": None,
        },
    }
