"""Executors: where the chunks of a run are sampled. Every executor writes shards into the shared
shard folder and nothing else; the driver ingests them afterwards in one transaction.

- ``local`` (default): in this process, chunk after chunk, one runner per run.
- ``ray``: each chunk is a Ray task (one GPU per task when the cluster has GPUs); joins the
  cluster at ``ray_address``, or starts a local one (Ray has no in-process mode).
- ``slurm``: a submitit job array (``map_array``), one GPU per task unless ``--device cpu``;
  the shard folder must be on a file system the compute nodes share.

Ray and submitit are optional extras (``pip install ibdb[ray]`` / ``ibdb[slurm]``), imported only
when their executor is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ibdb.core.errors import IbdbError
from ibdb.run.execute import ChunkMapper, ChunkTask, sample_chunk

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray", "slurm")


class ExecutorError(IbdbError):
    """An executor cannot start, or one of its tasks failed."""


def make_mapper(kind: str, *, shard_root: Path, device_name: str = "auto",
                ray_address: str | None = None, slurm_cluster: str | None = "slurm",
                slurm_parameters: dict[str, Any] | None = None) -> ChunkMapper | None:
    """The chunk mapper for executor ``kind`` (None means the local, in-process loop).

    ``slurm_cluster`` is submitit's cluster: "slurm", or "local" / "debug" to try a spec on one
    machine; ``slurm_parameters`` go to ``AutoExecutor.update_parameters`` (partition, timeout).
    """
    if kind == "local":
        if ray_address:
            raise ExecutorError(f"--ray-address {ray_address!r} needs --executor ray.")
        return None
    if kind == "ray":
        ray = _import("ray", "ray")
        gpus = 0 if device_name == "cpu" else None  # None: one per task if the cluster has any
        return lambda tasks, done: _map_ray(ray, tasks, done, ray_address, gpus)
    if kind == "slurm":
        submitit = _import("submitit", "slurm")
        folder = Path(shard_root) / ".submitit"  # job logs and pickles, beside the shards
        return lambda tasks, done: _map_submitit(submitit, tasks, done, folder, slurm_cluster,
                                                 device_name, slurm_parameters or {})
    raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}.")


def _import(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ExecutorError(f"--executor {extra} needs {module}, which is not installed. "
                            f"Install it with `pip install 'ibdb[{extra}]'`.") from None


def _map_ray(ray: Any, tasks: list[ChunkTask], done: Callable[[ChunkTask], None],
             address: str | None, gpus: int | None) -> None:
    if not tasks:
        return
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
            raise ExecutorError(f"cannot start or join a Ray cluster at {address or 'local'} "
                                f"({exc}). Check --ray-address (e.g. ray://host:10001 or "
                                "auto), or drop it to start a local cluster.") from None
    try:
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        remote = ray.remote(num_gpus=gpus, max_retries=2)(_ray_sample)
        # A run's task data goes to the object store once, not once per chunk.
        shared = {id(t.planned): ray.put(t.planned) for t in tasks}
        pending = {remote.remote(shared[id(t.planned)], t.ids, t.shard_root, t.device_name,
                                 t.repeat): t for t in tasks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            try:
                ray.get(ready[0])
            except Exception as exc:
                raise ExecutorError(f"Ray task for run {task.planned.run_id} {task.what} "
                                    f"failed: {exc}. Shards "
                                    "written so far are kept; re-run to resume.") from None
            done(task)
    finally:
        if started_here:
            ray.shutdown()


def _ray_sample(planned: Any, ids: Any, shard_root: Path, device_name: str,
                repeat: int | None = None) -> Path:
    # Ray resolves object references passed as top-level arguments, hence the unpacked task.
    return sample_chunk(ChunkTask(planned, ids, shard_root, device_name, repeat))


def _map_submitit(submitit: Any, tasks: list[ChunkTask], done: Callable[[ChunkTask], None],
                  folder: Path, cluster: str | None, device_name: str,
                  parameters: dict[str, Any]) -> None:
    if not tasks:
        return
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as exc:  # submitit: 'Could not detect "srun", are you indeed on a slurm..'
        raise ExecutorError(
            f"--executor slurm found no Slurm cluster from this machine ({exc}). Run it where "
            "`srun` and `sbatch` work (a Slurm login node), or use --executor local or ray."
        ) from None
    gpus = 0 if device_name == "cpu" else 1
    options: dict[str, Any] = {"timeout_min": 60, "gpus_per_node": gpus, "cpus_per_task": 2}
    options.update(parameters)
    executor.update_parameters(**options)
    jobs = executor.map_array(sample_chunk, tasks)
    for job, task in zip(jobs, tasks, strict=True):
        try:
            job.result()
        except Exception as exc:
            raise ExecutorError(f"{cluster} job {job.job_id} for run {task.planned.run_id} "
                                f"{task.what} failed: {exc}. Its "
                                f"log is under {folder}; re-run to resume.") from None
        done(task)
