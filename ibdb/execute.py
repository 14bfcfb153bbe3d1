"""Execution: turn a planned run into shard files, chunk by chunk, on the chosen device.

This is the only module of the library that imports torch (through the runners), and it never
opens the store: its output is a run folder (see :mod:`ibdb.shards`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ibdb import shards as shardfiles
from ibdb.bound import task_statistics
from ibdb.errors import EstimateError
from ibdb.plan import PlannedRun, hypothesis_seeds
from ibdb.runners import runner_entry

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""progress(label, hypotheses_done, hypotheses_total) after each chunk."""


def chunk_ranges(missing: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """Split missing hypothesis ids at multiples of ``chunk_size`` and at gaps.

    Aligning chunks to multiples of the chunk size keeps shard names stable between a killed
    run and its resumption.
    """
    if len(missing) == 0:
        return []
    breaks = np.flatnonzero((np.diff(missing) != 1) | (np.diff(missing // chunk_size) != 0)) + 1
    return np.split(missing, breaks)


def execute_run(planned: PlannedRun, *, shard_root: Path, device_name: str = "auto",
                progress: Progress | None = None) -> Path:
    """Sample every missing hypothesis of ``planned`` into its run folder; return the folder."""
    import torch  # deferred: `import ibdb` and the CLI's help must not pay for torch

    from ibdb.runners.base import resolve_device

    device = resolve_device(device_name)
    folder = shardfiles.run_dir(shard_root, planned.run_id)
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat()
    runner_cls = runner_entry(planned.spec.space.kind).load()
    runner = runner_cls(planned.spec.space, planned.data, device=device)
    manifest = _manifest(planned, runner.info, device=str(device), started_at=started_at,
                         torch_version=torch.__version__)
    shardfiles.write_manifest(folder, manifest)
    spectrum = runner.spectrum()
    if spectrum is not None and not (folder / shardfiles.SPECTRUM).exists():
        shardfiles.write_spectrum(folder, planned.run_id, spectrum["eigenvalue"],
                                  spectrum["residuals"])
    existing = {p.name for p in shardfiles.loss_shards(folder)} if folder.exists() else set()
    missing = planned.missing_ids
    done, total = 0, len(missing)
    for ids in chunk_ranges(missing, planned.spec.budget.chunk_size):
        name = shardfiles.loss_shard_name(int(ids[0]), int(ids[-1]))
        if name not in existing:  # a chunk written before a crash is not recomputed
            t0 = time.monotonic()
            seeds = hypothesis_seeds(planned.spec.budget.seed, ids)
            losses = runner.sample(ids, seeds)
            shardfiles.write_loss_shard(folder, planned.run_id, ids, seeds, losses, {
                "runner": planned.runner_tag, "device": str(device), "host": socket.gethostname(),
                "wall_seconds": time.monotonic() - t0, "written_at": datetime.now(UTC).isoformat(),
            })
        done += len(ids)
        if progress is not None:
            progress(planned.spec.label, done, total)
    manifest["provenance"]["finished_at"] = datetime.now(UTC).isoformat()
    manifest["provenance"]["wall_seconds"] = time.monotonic() - started
    shardfiles.write_manifest(folder, manifest)
    log.info("run %s: %d hypotheses in %.2f s on %s", planned.run_id, total,
             time.monotonic() - started, device)
    return folder


def _manifest(planned: PlannedRun, runner_info: dict[str, Any], *, device: str, started_at: str,
              torch_version: str) -> dict[str, Any]:
    data = planned.data
    try:  # the 2023 bound's inputs; a task they cannot be computed for still runs
        statistics = dataclasses.asdict(task_statistics(data.x_train,
                                                        data.y_train.argmax(axis=1)))
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
