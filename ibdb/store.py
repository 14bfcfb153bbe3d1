"""The DuckDB store: one embedded file holding every raw sample, its provenance, and estimates.

Opening a store applies the table definitions in ``schemas/`` (once, in one transaction),
re-creates the views in ``queries/`` and registers the estimator functions, so SQL over the store
can call ``ib_fit`` and ``ib_exact``. DuckDB lets one process write a file at a time; a
second opener gets :class:`StoreLockedError` naming the process that holds it. Loading shards
(``Store.ingest``) lives in :mod:`ibdb.ingest`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ibdb.errors import StoreError, StoreLockedError
from ibdb.ingest import OPTIONAL_COLUMNS, IngestReport, ShardIngest  # noqa: F401 (re-exported)
from ibdb.sqlfunctions import register_functions

log = logging.getLogger(__name__)
SCHEMA_FILE_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
LOSS_NAMES = ("test_mse", "test_error")  # the losses estimates can be asked for


class Store(ShardIngest):
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
            elif not read_only and create and not Path(path).exists():
                cls._create(Path(path))
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

    @classmethod
    def _create(cls, path: Path) -> None:
        """Create a store under a temporary name and link it into place, so a process killed
        while creating it leaves no half-made store (which a later read-only open would refuse);
        a link, unlike a rename, never replaces a store another process created meanwhile."""
        tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        try:
            con = duckdb.connect(str(tmp))
            try:
                cls(con, str(tmp), read_only=False)._prepare()
                con.execute("CHECKPOINT")
            finally:
                con.close()
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first: use theirs
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                leftover.unlink(missing_ok=True)

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
                if version:  # (a new store's tables are made in no time; say nothing then)
                    log.info("%s: upgrading the store from schema version %d to %d, in one "
                             "transaction", self.path, version, pending[-1][0])
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

    def loss_set_digests(self, run_ids: list[str]) -> dict[tuple[str, str], str]:
        """{(run_id, loss set): digest} for the given runs; loss sets are 'test_mse',
        'test_error' and 'spectrum' (see queries/loss_sets.sql). One query for all runs: the
        view aggregates every run, so asking run by run would cost quadratic time."""
        rows = self.con.execute("SELECT run_id, loss, digest FROM loss_sets WHERE run_id IN "
                                "(SELECT unnest(?))", [run_ids]).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

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

    def replace_estimates(self, rows: list[dict[str, Any]]) -> None:
        """Insert estimate rows, replacing any with the same (run, loss, method, eps)."""
        if not rows:
            return
        # One set-based statement: executemany costs ~10 ms a row here.
        names = ["run_id", "loss", "method", "method_version", "eps", "bits", "lower_bits",
                 "upper_bits", "bound", "n", "params", "diagnostics", "loss_set_hash"]
        jsonish = {"params", "diagnostics"}
        new_rows = {  # noqa: F841 -- read by DuckDB's replacement scan below
            name: np.array([json.dumps(r[name]) if name in jsonish else r[name] for r in rows],
                           dtype=object if name not in {"eps", "n"} else None)
            for name in names}
        self.con.execute("BEGIN")
        try:
            self.con.execute(
                f"INSERT OR REPLACE INTO estimates ({', '.join(names)}) SELECT run_id, loss, "
                "method, method_version, eps, bits::DOUBLE, lower_bits::DOUBLE, "
                "upper_bits::DOUBLE, bound, n, params::JSON, diagnostics::JSON, loss_set_hash "
                "FROM new_rows")
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
