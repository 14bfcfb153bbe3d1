"""Shard files: what runners' output looks like on disk between a run and the store.

One folder per run under the shard root::

    <root>/<run_id>/run.json                              the run's spec, identity, provenance
    <root>/<run_id>/spectrum-<sha>.parquet                closed-form loss spectrum (gp runs)
    <root>/<run_id>/losses-<first>-<last>-<sha>.parquet   one chunk of hypotheses
    <root>/<run_id>/levels-r<repeat>-l<level>-<sha>.parquet  one finished level of a splitting
                                                          (subset simulation) repeat

Every file is written under a temporary name, flushed and renamed, so a killed run leaves only
whole files (at most the chunk in flight is lost). ``<sha>`` is the first 16 hex digits of the
file's sha256: Parquet has no checksum DuckDB verifies, and a flipped bit in a data page reads
back as a silently different loss, so ingest recomputes the hash and rejects a mismatch. Loss
shards carry their provenance as Parquet key-value metadata under the key ``ibdb``. Parquet is
written by an in-memory DuckDB connection, never by the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import duckdb
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ibdb.core.errors import ShardError, shorten

if TYPE_CHECKING:
    from ibdb.stats.levels import LevelRecord

MANIFEST = "run.json"
LOSS_SHARD_RE = re.compile(r"^losses-(\d{9})-(\d{9})-([0-9a-f]{16})\.parquet$")
SPECTRUM_RE = re.compile(r"^spectrum-([0-9a-f]{16})\.parquet$")
LEVEL_SHARD_RE = re.compile(r"^levels-r(\d{3})-l(\d{4})-([0-9a-f]{16})\.parquet$")
SHA_PREFIX = 16  # hex digits of the sha256 kept in a shard's name


# -- the manifest (run.json): what ingest reads of it, as a model ------------------------------

_Text = Annotated[str, Field(min_length=1, max_length=10_000)]
_Count = Annotated[int, Field(ge=0, le=2**31 - 1)]  # (stored as INTEGER)


class _Part(BaseModel):
    """Strict (a string is not a number); keys ibdb does not read are allowed, so that a
    manifest written by a later ibdb, with more in it, still loads."""

    model_config = ConfigDict(strict=True, extra="allow")


class _SpecTask(_Part):
    name: _Text
    eps: Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]],
                   Field(min_length=1)]


class _SpecSpace(_Part):
    name: _Text
    kind: _Text


class _SpecBudget(_Part):
    name: _Text
    n_hypotheses: Annotated[int, Field(gt=0, le=2**62)]


class _Spec(_Part):
    experiment: _Text
    task: _SpecTask
    space: _SpecSpace
    budget: _SpecBudget


class _TaskStatistics(_Part):
    """The task statistics the ``bound`` method reads (ibdb.stats.bound.TaskStatistics); their
    ranges are the method's to check, and keys a later ibdb adds are kept and ignored."""

    n: int
    intrinsic_dim: float
    radius: float
    separation: float
    n_classes: int
    output_dim: int
    subsample_size: int | None = None
    measured_on: str | None = None
    pool_size: int | None = None
    k_neighbours: int | None = None


class _TaskFacts(_Part):
    n_train: _Count
    n_test: Annotated[int, Field(gt=0, le=2**31 - 1)]
    n_outputs: Annotated[int, Field(gt=0, le=2**31 - 1)]
    fingerprint: _Text
    statistics: _TaskStatistics | None = None


class _Provenance(_Part):
    ibdb_version: _Text
    torch_version: _Text
    duckdb_version: _Text
    device: _Text
    host: _Text
    started_at: datetime
    finished_at: datetime | None = None
    wall_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class _RunnerInfo(_Part):
    """What the store reads of a runner's report (runs.runner_info: run_summary and the CLI's
    run header): a gp run's posterior-mean test MSE and the spread around it (read as a pair),
    whether the mean interpolates its training data and its largest training residual. Every
    other key is the runner's own."""

    test_mse_of_mean: float | None = None
    test_mse_spread: float | None = None
    interpolates: bool | None = None
    train_interp_max_abs_error: float | None = None

    @model_validator(mode="after")
    def _spread_with_mean(self) -> _RunnerInfo:
        if self.test_mse_of_mean is not None and self.test_mse_spread is None:
            raise ValueError("test_mse_of_mean is given without test_mse_spread; a runner "
                             "reports both (or neither)")
        return self


class RunManifest(_Part):
    """A run folder's run.json (ibdb.run.execute writes it): the run, its spec as run, its identity
    (what its id hashes), the task's facts, what the runner reported, and provenance."""

    run_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    runner: _Text
    spec: _Spec
    identity: dict[str, Any]
    task: _TaskFacts
    runner_info: _RunnerInfo
    provenance: _Provenance


def run_dir(root: Path, run_id: str) -> Path:
    return Path(root) / run_id


def loss_shard_name(first: int, last: int, sha256: str) -> str:
    return f"losses-{first:09d}-{last:09d}-{sha256[:SHA_PREFIX]}.parquet"


def shard_range(path: Path) -> tuple[int, int] | None:
    """(first, last) hypothesis of a loss shard, from its name; None for any other file."""
    match = LOSS_SHARD_RE.match(Path(path).name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def name_digest(path: Path) -> str | None:
    """The sha256 prefix a shard's name promises, or None when the name is not a shard's."""
    match = LOSS_SHARD_RE.match(path.name) or SPECTRUM_RE.match(path.name) \
        or LEVEL_SHARD_RE.match(path.name)
    return match.groups()[-1] if match else None


def level_of(path: Path) -> tuple[int, int] | None:
    """(repeat, level) of a level shard, from its name; None for any other file."""
    match = LEVEL_SHARD_RE.match(Path(path).name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256s(paths: list[Path]) -> dict[Path, str]:
    """sha256 of many files, hashed on threads (hashlib releases the GIL while it hashes, so
    this is about as many times faster as there are cores: ingest hashes every byte)."""
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1) or 1) as pool:
        return dict(zip(paths, pool.map(file_sha256, paths), strict=True))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return _write_atomically(folder, MANIFEST,
                             lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))


def read_manifest(folder: Path) -> dict[str, Any]:
    """A run folder's run.json, checked against :class:`RunManifest` (every field ingest
    reads, with its type and range); a ShardError names the file and each wrong field."""
    path = folder / MANIFEST
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ShardError(f"{path}: missing; a run folder needs its run.json. Re-run the spec "
                         "with `ibdb run` to rewrite it.") from None
    except OSError as exc:
        raise ShardError(f"{path}: cannot be read ({exc.strerror or exc}); nothing was "
                         "ingested. Make it a readable file: re-run the spec with `ibdb run` to "
                         "rewrite it.") from None
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({shorten(str(exc), 120)}); nothing was "
                         "ingested. Re-run the spec with `ibdb run` to rewrite it, or delete "
                         "the run folder.") from None
    if not isinstance(manifest, dict):
        raise ShardError(f"{path}: holds a JSON {type(manifest).__name__}, not the object "
                         "ibdb writes; nothing was ingested. Re-run the spec with `ibdb run` to "
                         "rewrite it.")
    try:
        model = RunManifest.model_validate_json(text)
    except ValidationError as exc:
        problems = [f"  - {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                    + ("" if e["type"] == "missing" else f" (got {shorten(repr(e['input']), 60)})")
                    for e in exc.errors()[:10]]
        more = f"\n  ... and {exc.error_count() - 10} more" if exc.error_count() > 10 else ""
        raise ShardError(f"{path}: not a run manifest ibdb wrote ({exc.error_count()} "
                         "problem(s)):\n" + "\n".join(problems) + more + "\nNothing was "
                         "ingested. Re-run the spec with `ibdb run` to rewrite run.json (its "
                         "shards are kept), or move the run folder away.") from None
    # times as ISO text that DuckDB reads (a valid manifest may spell them otherwise)
    provenance = manifest["provenance"]
    provenance["started_at"] = model.provenance.started_at.isoformat()
    if model.provenance.finished_at is not None:
        provenance["finished_at"] = model.provenance.finished_at.isoformat()
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
        folder, lambda sha: f"spectrum-{sha[:SHA_PREFIX]}.parquet",
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
        folder, lambda sha: loss_shard_name(int(ids[0]), int(ids[-1]), sha),
        "SELECT ?::VARCHAR AS run_id, * FROM cols_np",
        columns,
        params=[run_id],
        metadata=meta,
    )


def write_level_shard(folder: Path, run_id: str, repeat: int, record: LevelRecord,
                      metadata: dict[str, Any]) -> Path:
    """One finished level of a splitting repeat: a row per particle (ibdb.run.splitting's record).

    ``metadata`` must not hold times or hosts: the same level recomputed (a resumed run) then
    has the same bytes, so the same name, and ingest sees one shard, not two."""
    columns = {
        "particle": np.arange(record.n, dtype=np.int64),
        "loss": np.asarray(record.losses, dtype=np.float64),
        "fitted": np.asarray(record.fitted, dtype=bool),
        "chain": np.asarray(record.chain, dtype=np.int64),
        "parent": np.asarray(record.parent, dtype=np.int64),
        "step": np.asarray(record.step, dtype=np.int32),
        "accepted": np.asarray(record.accepted, dtype=bool),
    }
    meta = {"run_id": run_id, "repeat": repeat, "level": record.level, "n_rows": record.n,
            **metadata}
    return _write_parquet(
        folder,
        lambda sha: f"levels-r{repeat:03d}-l{record.level:04d}-{sha[:SHA_PREFIX]}.parquet",
        "SELECT ?::VARCHAR AS run_id, ?::INTEGER AS repeat, ?::INTEGER AS level, "
        "c.particle, ?::DOUBLE AS threshold, ?::DOUBLE AS rho, c.loss, c.fitted, c.chain, "
        "c.parent, c.step, c.accepted, ?::BIGINT AS n_evaluations FROM cols_np c",
        columns,
        params=[run_id, repeat, record.level, record.threshold, record.rho,
                record.n_evaluations],
        metadata=meta,
    )


def read_levels(folder: Path, repeat: int, *, expect: dict[str, Any] | None = None
                ) -> list[LevelRecord]:
    """The finished levels of one repeat from its level shards, level 0 first (for a resume).

    ``expect``: metadata every one of them must hold with these values (the sampler settings a
    resume must share with the levels it continues); a shard that differs raises ShardError."""
    from ibdb.stats.levels import LevelRecord

    paths = [p for p in level_shards(folder) if level_of(p)[0] == repeat]
    if not paths:
        return []
    con = duckdb.connect()
    try:
        for path, raw in con.execute(
                "SELECT file_name, value FROM parquet_kv_metadata(?) WHERE key = 'ibdb'",
                [[str(p) for p in paths]]).fetchall():
            meta = json.loads(raw)
            wrong = {k: meta.get(k) for k, v in (expect or {}).items() if meta.get(k) != v}
            if wrong:
                raise ShardError(
                    f"{path}: a level of splitting repeat {repeat} made with "
                    f"{', '.join(f'{k}={v!r}' for k, v in wrong.items())}, where the spec now "
                    f"asks for {', '.join(f'{k}={expect[k]!r}' for k in wrong)}; levels made "
                    "with other settings cannot be continued. Give the budget another seed (a "
                    "new run), or delete this run folder's levels-* files to start over.")
        cursor = con.execute(
            "SELECT level, particle AS index, threshold, rho, loss, fitted, chain, parent, "
            "step, accepted, n_evaluations FROM read_parquet(?) ORDER BY level, particle",
            [[str(p) for p in paths]])
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    except duckdb.Error as exc:
        raise ShardError(f"{folder}: cannot read the level shards of repeat {repeat} ({exc}); "
                         "delete the unreadable one and re-run to rewrite it.") from None
    finally:
        con.close()
    records = LevelRecord.from_rows(rows)
    if [r.level for r in records] != list(range(len(records))):
        raise ShardError(f"{folder}: repeat {repeat} has levels {[r.level for r in records]}, "
                         "not 0, 1, 2, ...; a level shard is missing. Delete that repeat's level "
                         "shards from the first gap on and re-run.")
    return records


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


def spectrum_shards(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if SPECTRUM_RE.match(p.name))


def level_shards(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if LEVEL_SHARD_RE.match(p.name))


def unexpected_files(folder: Path) -> list[Path]:
    """Parquet files in a run folder that are not named as ibdb names shards (a renamed copy, a
    stray export): ingest rejects them rather than guess what they hold. Dot files are
    temporary files of a writer (perhaps one that was killed) and are ignored."""
    return sorted(p for p in folder.glob("*.parquet")
                  if not (LOSS_SHARD_RE.match(p.name) or SPECTRUM_RE.match(p.name)
                          or LEVEL_SHARD_RE.match(p.name)))


def first_unreadable(folder: Path) -> tuple[Path, str] | None:
    """The first shard file of a run folder whose every column DuckDB cannot read, with why;
    read on a connection of its own (the caller's transaction is aborted by then)."""
    paths = [p for p in spectrum_shards(folder) + loss_shards(folder) + level_shards(folder)
             if p.is_file()]
    con = duckdb.connect()
    try:
        for path in paths:
            try:
                con.execute(f"SELECT count(*), min(hash(t)) FROM "
                            f"read_parquet('{sql_path(path)}') t").fetchone()
            except duckdb.Error as exc:
                return path, shorten(str(exc).strip().splitlines()[0], 200)
    finally:
        con.close()
    return None


def metadata_problem(meta: Any) -> str | None:
    """What is wrong with a shard's ibdb metadata where the store reads it (the ledger keeps
    it, and the mean_network view casts its ``summary``: a network chunk's fitted count and
    summed test residuals), or None."""
    if not isinstance(meta, dict):
        return f"is a JSON {_json_kind(meta)}, not an object"
    if "summary" not in meta:
        return None
    summary = meta["summary"]
    if not isinstance(summary, dict):
        return f"has a summary that is a JSON {_json_kind(summary)}, not an object"
    n_fitted, sums = summary.get("n_fitted"), summary.get("test_residual_sum")
    if n_fitted is not None and (type(n_fitted) is not int or not 0 <= n_fitted < 2**63):
        return f"has summary.n_fitted {shorten(repr(n_fitted), 40)}, not a count"
    if sums is not None and (not isinstance(sums, list) or not all(
            type(v) in (int, float) for v in sums)):
        return (f"has summary.test_residual_sum {shorten(repr(sums), 60)}, not a list of "
                "numbers")
    return None


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _write_parquet(folder: Path, name: Callable[[str], str], select: str,
                   cols: dict[str, np.ndarray], *, params: list[Any],
                   metadata: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    kv = json.dumps(metadata, sort_keys=True).replace("'", "''")

    def write(tmp: Path) -> None:
        cols_np = cols  # noqa: F841 -- DuckDB's replacement scan reads this dict of arrays
        con = duckdb.connect()
        try:
            con.execute(
                f"COPY ({select}) TO '{sql_path(tmp)}' "
                f"(FORMAT parquet, COMPRESSION snappy, KV_METADATA {{ibdb: '{kv}'}})",
                params,
            )
        except duckdb.IOException as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "IO error"
            raise ShardError(f"{folder}: cannot write a shard ({shorten(detail, 300)}). Free "
                             "disk space there (or fix its permissions); the shards written "
                             "before are kept, and `ibdb run` again resumes after them.") \
                from None
        finally:
            con.close()

    return _write_atomically(folder, name, write)


def sql_path(path: Path) -> str:
    """A path as the body of a SQL string literal (quotes doubled)."""
    return str(path).replace("'", "''")


def _write_atomically(folder: Path, name: str | Callable[[str], str],
                      write: Callable[[Path], Any]) -> Path:
    """Write through ``write(tmp)``, fsync, rename to ``name`` (or ``name(sha256)``), and fsync
    the folder so the rename itself survives a power cut."""
    stem = name if isinstance(name, str) else "shard"
    tmp = folder / f".{stem}.tmp-{os.getpid()}"
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        target = folder / (name if isinstance(name, str) else name(file_sha256(tmp)))
        os.replace(tmp, target)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
