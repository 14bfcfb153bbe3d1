"""The DuckDB store: one embedded file holding every raw sample, its provenance, and estimates.

Opening a store applies the table definitions in ``schemas/`` (once, in one transaction),
re-creates the views in ``queries/`` and registers the estimator functions, so SQL over the store
can call ``ib_fit`` and ``ib_exact``. DuckDB lets one process write a file at a time; a
second opener gets :class:`StoreLockedError` naming the process that holds it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ibdb import shards as shardfiles
from ibdb.errors import ShardError, StoreError, StoreLockedError
from ibdb.sqlfunctions import register_functions

SCHEMA_FILE_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
LOSS_NAMES = ("test_mse", "test_error")  # the losses estimates can be asked for
# Per-hypothesis columns a loss shard may carry besides test_mse and test_error; a shard
# without one of them (a gp run has no training loss) stores NULL there.
OPTIONAL_COLUMNS = ("train_mse", "train_error", "epochs", "fitted")


@dataclass
class IngestReport:
    runs: list[str] = field(default_factory=list)
    shards_ingested: int = 0
    shards_skipped: int = 0
    hypotheses_inserted: int = 0


class Store:
    """An open store. Use :meth:`open`; close it (or use ``with``) to release the file lock."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, *, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, retry_seconds: float = 0.0,
             create: bool = True) -> Store:
        """Open (and, unless read-only, create or upgrade) the store at ``path``.

        ``:memory:`` gives an in-memory store. Read-only openers retry for ``retry_seconds`` while
        a writer holds the file, then raise :class:`StoreLockedError`.
        """
        path = str(path)
        if path != ":memory:":
            if Path(path).is_dir():
                raise StoreError(f"{path}: is a folder; --db must name a DuckDB file.")
            if not Path(path).exists() and (read_only or not create):
                raise StoreError(f"{path}: no such store. Run `ibdb init` or `ibdb run SPEC` "
                                 "first, or point --db / IBDB_DB at an existing store.")
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                con = duckdb.connect(path, read_only=read_only and path != ":memory:")
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise StoreError(f"{path}: cannot open the store ({exc}).") from None
                if time.monotonic() >= deadline:
                    raise StoreLockedError(_lock_message(path, str(exc))) from None
                time.sleep(0.1)
            except duckdb.Error as exc:
                raise StoreError(f"{path}: not a DuckDB database, or damaged ({exc}). "
                                 "Point --db at another file.") from None
        store = cls(con, path, read_only=read_only and path != ":memory:")
        try:
            store._prepare()
        except BaseException:
            con.close()
            raise
        return store

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare(self) -> None:
        version = self.schema_version()
        files = _schema_files()
        if self.read_only:
            if version == 0:
                raise StoreError(f"{self.path}: not an ibdb store (no ibdb tables). "
                                 "Run `ibdb init` on it, or pick the right --db.")
        else:
            pending = [(n, text) for n, text in files if n > version]
            if pending:
                self.con.execute("BEGIN")
                try:
                    for _, text in pending:
                        self.con.execute(text)
                    self.con.execute("INSERT OR REPLACE INTO ibdb_meta VALUES "
                                     "('schema_version', ?)", [str(pending[-1][0])])
                    self.con.execute("COMMIT")
                except BaseException:
                    self.con.execute("ROLLBACK")
                    raise
        latest = files[-1][0]
        if self.schema_version() > latest:
            raise StoreError(f"{self.path}: store schema version {self.schema_version()} is "
                             f"newer than this ibdb understands ({latest}); upgrade ibdb.")
        self._create_views()
        register_functions(self.con)

    def schema_version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ibdb_meta' "
            "AND database_name = current_database()").fetchone()[0]
        if not exists:
            return 0
        row = self.con.execute(
            "SELECT value FROM ibdb_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _create_views(self) -> None:
        # Read-only stores cannot change their catalog; temporary views serve the session.
        scope = "TEMP " if self.read_only else ""
        pending = view_definitions()
        while pending:  # a view can name another: create in dependency order, by retrying
            failed = []
            for name, body in pending:
                try:
                    self.con.execute(f"CREATE OR REPLACE {scope}VIEW {name} AS {body}")
                except duckdb.CatalogException:
                    failed.append((name, body))
            if len(failed) == len(pending):
                name, body = failed[0]
                self.con.execute(f"CREATE OR REPLACE {scope}VIEW {name} AS {body}")  # raises
            pending = failed

    # -- reading -------------------------------------------------------------------------------

    def stored_hypotheses(self, run_id: str) -> frozenset[int]:
        rows = self.con.execute(
            "SELECT hypothesis_id FROM losses WHERE run_id = ?", [run_id]).fetchnumpy()
        return frozenset(rows["hypothesis_id"].tolist())

    def run_ids(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT run_id FROM specs ORDER BY created_at, "
                                               "run_id").fetchall()]

    def run_facts(self, run_id: str) -> dict[str, Any]:
        row = self.con.execute(
            "SELECT s.eps, s.space_kind, r.n_test, r.n_outputs, r.task_statistics FROM specs s "
            "LEFT JOIN runs r USING (run_id) WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise StoreError(f"run {run_id!r} is not in {self.path}. List the runs with "
                             "`ibdb sql \"SELECT * FROM run_summary\"`.")
        statistics = json.loads(row[4]) if row[4] else None
        return {"eps": list(row[0]), "space_kind": row[1], "n_test": row[2], "n_outputs": row[3],
                "task_statistics": statistics}

    def loss_set_digest(self, run_id: str, loss: str) -> str | None:
        """The digest of a run's loss set ('test_mse', 'test_error' or 'spectrum')."""
        row = self.con.execute("SELECT digest FROM loss_sets WHERE run_id = ? AND loss = ?",
                               [run_id, loss]).fetchone()
        return row[0] if row else None

    def losses(self, run_id: str, loss: str = "test_mse") -> np.ndarray:
        """A run's ``loss`` column, by hypothesis id, for the hypotheses that fit the training
        data (the definition conditions on fitting; ``fitted`` NULL means fit by construction)."""
        if loss not in LOSS_NAMES:
            raise StoreError(f"unknown loss {loss!r}; recorded losses: {', '.join(LOSS_NAMES)}.")
        out = self.con.execute(
            f"SELECT {loss} FROM losses WHERE run_id = ? AND fitted IS NOT FALSE "
            "ORDER BY hypothesis_id", [run_id]).fetchnumpy()[loss]
        return np.asarray(out, dtype=np.float64)

    def spectrum(self, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(eigenvalues, residual_sq) of a gp run's loss distribution, or None if not stored."""
        got = self.con.execute(
            "SELECT eigenvalue, residual_sq FROM gp_components WHERE run_id = ? "
            "ORDER BY component", [run_id]).fetchnumpy()
        if len(got["eigenvalue"]) == 0:
            return None
        return (np.asarray(got["eigenvalue"], dtype=np.float64),
                np.asarray(got["residual_sq"], dtype=np.float64))

    # -- writing -------------------------------------------------------------------------------

    def ingest(self, folders: list[Path]) -> IngestReport:
        """Load run folders' shards in one transaction; shards already ingested are skipped.

        Any invalid shard aborts the whole call with nothing stored, naming the file.
        """
        report = IngestReport()
        self.con.execute("BEGIN")
        try:
            for folder in folders:
                self._ingest_run(Path(folder), report)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return report

    def _ingest_run(self, folder: Path, report: IngestReport) -> None:
        manifest = shardfiles.read_manifest(folder)
        run_id = manifest["run_id"]
        spec, task, prov = manifest["spec"], manifest["task"], manifest["provenance"]
        self.con.execute(
            "INSERT INTO specs (run_id, experiment, task_name, space_name, budget_name, "
            "space_kind, runner, n_hypotheses, eps, spec, identity) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
            "experiment = excluded.experiment, task_name = excluded.task_name, "
            "space_name = excluded.space_name, budget_name = excluded.budget_name, "
            "n_hypotheses = greatest(specs.n_hypotheses, excluded.n_hypotheses), "
            "eps = excluded.eps, spec = excluded.spec",
            [run_id, spec["experiment"], spec["task"]["name"], spec["space"]["name"],
             spec["budget"]["name"], spec["space"]["kind"], manifest["runner"],
             spec["budget"]["n_hypotheses"], spec["task"]["eps"], json.dumps(spec),
             json.dumps(manifest["identity"], sort_keys=True)])
        self.con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, task["n_train"], task["n_test"], task["n_outputs"], task["fingerprint"],
             json.dumps(task.get("statistics")), json.dumps(manifest["runner_info"]),
             prov["ibdb_version"], prov["torch_version"], prov["duckdb_version"],
             prov["device"], prov["host"], prov["started_at"],
             prov.get("finished_at"), prov.get("wall_seconds")])
        report.runs.append(run_id)
        spectrum = folder / shardfiles.SPECTRUM
        if spectrum.is_file():
            self._ingest_file(spectrum, run_id, "spectrum", report)
        for path in shardfiles.loss_shards(folder):
            self._ingest_file(path, run_id, "losses", report)

    def _ingest_file(self, path: Path, run_id: str, kind: str, report: IngestReport) -> None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if self.con.execute("SELECT 1 FROM shards WHERE sha256 = ?", [digest]).fetchone():
            report.shards_skipped += 1
            return
        src = f"read_parquet('{_sql_str(path)}')"
        try:
            meta = self._shard_metadata(path)
            foreign = self.con.execute(
                f"SELECT count(*) FILTER (run_id IS DISTINCT FROM ?), count(*) FROM {src}",
                [run_id]).fetchone()
        except duckdb.Error as exc:
            raise ShardError(f"{path}: unreadable shard ({str(exc).splitlines()[0]}); nothing "
                             "was ingested. Delete the file and re-run to rewrite it.") from None
        if foreign[0]:
            raise ShardError(f"{path}: {foreign[0]} rows belong to another run than {run_id}; "
                             "nothing was ingested. Move the file to its own run folder.")
        first = last = None
        if kind == "spectrum":
            before = self._count("spectra", run_id)
            self.con.execute(f"INSERT INTO spectra SELECT run_id, component, eigenvalue, "
                             f"residuals FROM {src} ON CONFLICT DO NOTHING")
            inserted = self._count("spectra", run_id) - before
        else:
            first, last = meta.get("first_hypothesis"), meta.get("last_hypothesis")
            span = self.con.execute(f"SELECT min(hypothesis_id), max(hypothesis_id) FROM {src}"
                                    ).fetchone()
            if (first, last) != span or foreign[1] != last - first + 1:
                raise ShardError(f"{path}: holds hypotheses {span} in {foreign[1]} rows, but its "
                                 f"metadata says {first}..{last}; nothing was ingested.")
            present = {r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
            optional = ", ".join(c if c in present else f"NULL AS {c}" for c in OPTIONAL_COLUMNS)
            before = self._count("losses", run_id)
            self.con.execute(
                f"INSERT INTO losses (run_id, hypothesis_id, seed, test_mse, test_error, "
                f"{', '.join(OPTIONAL_COLUMNS)}, shard_sha256) SELECT run_id, hypothesis_id, "
                f"seed, test_mse, test_error, {optional}, ? FROM {src} ON CONFLICT DO NOTHING",
                [digest])
            inserted = self._count("losses", run_id) - before
        self.con.execute(
            "INSERT INTO shards (sha256, run_id, kind, path, n_rows, first_hypothesis, "
            "last_hypothesis, provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [digest, run_id, kind, str(path.resolve()), foreign[1], first, last,
             json.dumps(meta)])
        report.shards_ingested += 1
        if kind == "losses":
            report.hypotheses_inserted += inserted

    def _shard_metadata(self, path: Path) -> dict[str, Any]:
        rows = self.con.execute(
            "SELECT value FROM parquet_kv_metadata(?) WHERE key = 'ibdb'", [str(path)]
        ).fetchall()
        if not rows:
            raise ShardError(f"{path}: no ibdb metadata; not a shard ibdb wrote. Nothing was "
                             "ingested.")
        return json.loads(rows[0][0])

    def _count(self, table: str, run_id: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?",
                                [run_id]).fetchone()[0]

    def replace_estimates(self, rows: list[dict[str, Any]]) -> None:
        """Insert estimate rows, replacing any with the same (run, loss, method, eps)."""
        if not rows:
            return
        self.con.execute("BEGIN")
        try:
            self.con.executemany(
                "INSERT OR REPLACE INTO estimates (run_id, loss, method, method_version, eps, "
                "bits, lower_bits, upper_bits, bound, n, params, diagnostics, loss_set_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[r["run_id"], r["loss"], r["method"], r["method_version"], r["eps"], r["bits"],
                  r["lower_bits"], r["upper_bits"], r["bound"], r["n"], json.dumps(r["params"]),
                  json.dumps(r["diagnostics"]), r["loss_set_hash"]] for r in rows])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise


def view_definitions() -> list[tuple[str, str]]:
    """(name, SELECT body) for every ``queries/*.sql`` file, in name order."""
    folder = resources.files("ibdb.queries")
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            out.append((entry.name[:-4], entry.read_text(encoding="utf-8")))
    return out


def _schema_files() -> list[tuple[int, str]]:
    folder = resources.files("ibdb.schemas")
    out = []
    for entry in folder.iterdir():
        match = SCHEMA_FILE_RE.match(entry.name)
        if match:
            out.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(out)


def _lock_message(path: str, detail: str) -> str:
    pid = re.search(r"PID (\d+)", detail)
    holder = f"process {pid.group(1)}" if pid else "another process"
    if pid:
        cmdline = Path(f"/proc/{pid.group(1)}/cmdline")
        try:
            words = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            holder += f" ({words[:120]})" if words else ""
        except OSError:
            pass
    return (f"{path}: the store is locked by {holder}. DuckDB allows one process to open a "
            "store while it writes. Wait for that process to finish (or stop it), then retry; "
            "or point --db at another file.")


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")
