"""Shard files: what runners' output looks like on disk between a run and the store.

One folder per run under the shard root::

    <root>/<run_id>/run.json                       the run's spec, identity and provenance
    <root>/<run_id>/spectrum.parquet               closed-form loss spectrum (gp runs)
    <root>/<run_id>/losses-<first>-<last>.parquet  one chunk of hypotheses

Every file is written under a temporary name, flushed and renamed, so a killed run leaves only
whole files (at most the chunk in flight is lost). Loss shards carry their provenance as Parquet
key-value metadata under the key ``ibdb``. Parquet is written by an in-memory DuckDB connection,
never by the store.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ibdb.errors import ShardError

MANIFEST = "run.json"
SPECTRUM = "spectrum.parquet"
LOSS_SHARD_RE = re.compile(r"^losses-(\d{9})-(\d{9})\.parquet$")


def run_dir(root: Path, run_id: str) -> Path:
    return Path(root) / run_id


def loss_shard_name(first: int, last: int) -> str:
    return f"losses-{first:09d}-{last:09d}.parquet"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MANIFEST
    _write_atomically(target, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
    return target


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path}: missing; a run folder needs its run.json. Re-run the spec "
                         "with `ibdb run` to rewrite it.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({exc}). Delete the run folder and re-run.") \
            from None
    for key in ("run_id", "spec", "identity", "task", "runner_info"):
        if key not in manifest:
            raise ShardError(f"{path}: manifest lacks {key!r}; it was not written by ibdb.")
    return manifest


def write_spectrum(folder: Path, run_id: str, eigenvalue: np.ndarray,
                   residuals: np.ndarray) -> Path:
    columns = {
        "component": np.arange(len(eigenvalue), dtype=np.int32),
        "eigenvalue": np.asarray(eigenvalue, dtype=np.float64),
    }
    # A list column from numpy needs one object per row; the spectrum is small (m rows).
    residual_rows = np.asarray(residuals, dtype=np.float64).tolist()
    return _write_parquet(
        folder / SPECTRUM,
        "SELECT ?::VARCHAR AS run_id, c.component, c.eigenvalue, r.residuals "
        "FROM cols_np c POSITIONAL JOIN (SELECT unnest(?::DOUBLE[][]) AS residuals) r",
        columns,
        params=[run_id, residual_rows],
        metadata={"run_id": run_id},
    )


def write_loss_shard(folder: Path, run_id: str, hypothesis_ids: np.ndarray, seeds: np.ndarray,
                     losses: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    ids = np.asarray(hypothesis_ids, dtype=np.int64)
    if len(ids) == 0 or (np.diff(ids) != 1).any():
        raise ValueError("a loss shard holds one contiguous, ascending range of hypotheses")
    columns = {"hypothesis_id": ids, "seed": np.asarray(seeds, dtype=np.int64)}
    # losses are float64; counts (epochs) and flags (fitted) keep their integer / bool type
    columns.update({name: np.asarray(v) if np.asarray(v).dtype.kind in "biu"
                    else np.asarray(v, dtype=np.float64) for name, v in losses.items()})
    meta = {"run_id": run_id, "first_hypothesis": int(ids[0]), "last_hypothesis": int(ids[-1]),
            "n_rows": len(ids), **metadata}
    return _write_parquet(
        folder / loss_shard_name(int(ids[0]), int(ids[-1])),
        "SELECT ?::VARCHAR AS run_id, * FROM cols_np",
        columns,
        params=[run_id],
        metadata=meta,
    )


def list_run_folders(paths: list[Path]) -> list[Path]:
    """Run folders named by ``paths``: each a run folder itself or a root holding run folders."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ShardError(f"{path}: no such shard folder. Pass a run folder or the shard "
                             "root that `ibdb run` wrote (see --shards).")
        if (path / MANIFEST).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.glob(f"*/{MANIFEST}")))
        else:
            raise ShardError(f"{path}: not a shard folder (expected a folder with {MANIFEST}).")
    return list(dict.fromkeys(found))


def loss_shards(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if LOSS_SHARD_RE.match(p.name))


def _write_parquet(target: Path, select: str, cols: dict[str, np.ndarray], *,
                   params: list[Any], metadata: dict[str, Any]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    kv = json.dumps(metadata, sort_keys=True).replace("'", "''")

    def write(tmp: Path) -> None:
        cols_np = cols  # noqa: F841 -- DuckDB's replacement scan reads this dict of arrays
        con = duckdb.connect()
        try:
            con.execute(
                f"COPY ({select}) TO '{_sql_path(tmp)}' "
                f"(FORMAT parquet, COMPRESSION snappy, KV_METADATA {{ibdb: '{kv}'}})",
                params,
            )
        finally:
            con.close()

    _write_atomically(target, write)
    return target


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _write_atomically(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
