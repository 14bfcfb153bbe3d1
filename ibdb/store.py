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
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ibdb.columns import ESTIMATE_COLUMNS, LOSS_NAMES
from ibdb.errors import StoreError, StoreLockedError
from ibdb.methods import SOURCES
from ibdb.sqlfunctions import register_functions
from ibdb.views import create_views, view_definitions  # noqa: F401 (view_definitions re-exported)

if TYPE_CHECKING:  # numpy and the ingest machinery load only when a call needs them
    import numpy as np

    from ibdb.ingest import IngestReport

log = logging.getLogger(__name__)
SCHEMA_FILE_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
DIGESTS_STORED_SINCE = 3  # the schema version that stores loss-set digests


class Store:
    """An open store. Use :meth:`open`; close it (or use ``with``) to release the file lock."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, *, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, retry_seconds: float = 0.0,
             create: bool = True, functions: bool = True) -> Store:
        """Open (and, unless read-only, create or upgrade) the store at ``path``.

        ``:memory:`` gives an in-memory store. Read-only openers retry for ``retry_seconds`` while
        a writer holds the file, then raise :class:`StoreLockedError`. ``functions`` registers
        the ``ib_*`` SQL functions; DuckDB's registration imports numpy (~0.1 s), so callers
        that run no SQL calling them (estimates, checks, a query without ``ib_``) skip it.
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
            store._prepare(functions=functions)
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
                cls(con, str(tmp), read_only=False)._prepare(functions=False)
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

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Everything in the block commits together or not at all."""
        self.con.execute("BEGIN")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def _prepare(self, *, functions: bool) -> None:
        version = self.schema_version()
        files = _schema_files()
        if self.read_only:
            if version == 0:
                raise StoreError(f"{self.path}: not an ibdb store (no ibdb tables). "
                                 "Run `ibdb init` on it, or pick the right --db.")
            if version < files[-1][0]:  # its views would name columns it lacks
                raise StoreError(f"{self.path}: store schema version {version} is older than "
                                 f"this ibdb's ({files[-1][0]}) and a read-only open cannot "
                                 "upgrade it. Run `ibdb --db FILE init` once (it upgrades in "
                                 "place, in one transaction), then retry.")
        else:
            pending = [(n, text) for n, text in files if n > version]
            if pending:
                if version:  # (a new store's tables are made in no time; say nothing then)
                    log.info("%s: upgrading the store from schema version %d to %d, in one "
                             "transaction", self.path, version, pending[-1][0])
                with self.transaction():
                    for _, text in pending:
                        self.con.execute(text)
                    self.con.execute("INSERT OR REPLACE INTO ibdb_meta VALUES "
                                     "('schema_version', ?)", [str(pending[-1][0])])
                    if version < DIGESTS_STORED_SINCE:
                        create_views(self.con, temporary=False)
                        self._carry_over_digests()
        latest = files[-1][0]
        if self.schema_version() > latest:
            raise StoreError(f"{self.path}: store schema version {self.schema_version()} is "
                             f"newer than this ibdb understands ({latest}); upgrade ibdb.")
        create_views(self.con, temporary=self.read_only)
        if functions:
            register_functions(self.con)

    def _carry_over_digests(self) -> None:
        """Store digests of every run, and move each estimate that was fresh under the md5
        digests of schema version 2 (schemas/003_...) onto its set's new digest."""
        self.refresh_loss_sets(None)
        self.con.execute(
            "UPDATE estimates e SET loss_set_hash = d.digest FROM legacy_loss_set_md5 m, "
            "loss_set_digests d WHERE m.run_id = e.run_id AND m.loss = e.loss_set AND "
            "m.digest = e.loss_set_hash AND d.run_id = e.run_id AND d.loss = e.loss_set")
        self.con.execute("DROP TABLE legacy_loss_set_md5")

    def schema_version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ibdb_meta' "
            "AND database_name = current_database()").fetchone()[0]
        if not exists:
            return 0
        row = self.con.execute(
            "SELECT value FROM ibdb_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def query(self, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of the last statement of ``sql`` over the store."""
        cursor = self.con.execute(sql, params)
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()

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
        """{(run_id, loss set): digest} for the given runs; loss sets are the loss columns
        and 'spectrum' (see queries/loss_sets.sql): a look-up of stored rows."""
        rows = self.con.execute("SELECT run_id, loss, digest FROM loss_sets WHERE run_id IN "
                                "(SELECT unnest(?))", [run_ids]).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    def losses(self, run_id: str, loss: str = "test_mse") -> np.ndarray:
        """A run's ``loss`` column, by hypothesis id, for the hypotheses that fit the training
        data (the definition conditions on fitting; ``fitted`` NULL means fit by construction)."""
        import numpy as np

        if loss not in LOSS_NAMES:
            raise StoreError(f"unknown loss {loss!r}; recorded losses: {', '.join(LOSS_NAMES)}.")
        out = self.con.execute(
            f"SELECT {loss} FROM losses WHERE run_id = ? AND fitted IS NOT FALSE "
            "ORDER BY hypothesis_id", [run_id]).fetchnumpy()[loss]
        return np.asarray(out, dtype=np.float64)

    def spectrum(self, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(eigenvalues, residual_sq) of a gp run's loss distribution, or None if not stored."""
        import numpy as np

        got = self.con.execute(
            "SELECT eigenvalue, residual_sq FROM gp_components WHERE run_id = ? "
            "ORDER BY component", [run_id]).fetchnumpy()
        if len(got["eigenvalue"]) == 0:
            return None
        return (np.asarray(got["eigenvalue"], dtype=np.float64),
                np.asarray(got["residual_sq"], dtype=np.float64))

    def method_source(self, source: str, run_id: str, loss: str,
                      facts: dict[str, Any] | None = None) -> Any:
        """The input that methods reading ``source`` (a key of ibdb.methods.SOURCES) take for
        ``run_id`` and ``loss``, or None when the run has none (e.g. the spectrum of a network
        run). ``facts``: the run's :meth:`run_facts`, when the caller has them already."""
        if source not in _SOURCE_READERS:
            raise StoreError(f"the store cannot read a source named {source!r}; known sources: "
                             f"{', '.join(_SOURCE_READERS)}.")
        if loss not in SOURCES[source].losses:
            return None
        return _SOURCE_READERS[source](self, run_id, loss, facts or self.run_facts(run_id))

    def _losses_source(self, run_id: str, loss: str, facts: dict[str, Any]) -> Any:
        # even when empty: the methods then say why they cannot estimate (no losses that fit)
        return self.losses(run_id, loss)

    def _spectrum_source(self, run_id: str, loss: str, facts: dict[str, Any]) -> Any:
        spectrum = self.spectrum(run_id)
        if spectrum is None or not facts["n_test"] or not facts["n_outputs"]:
            return None
        return {"eigenvalues": spectrum[0], "residual_sq": spectrum[1],
                "n_test": facts["n_test"], "n_outputs": facts["n_outputs"]}

    def _levels_source(self, run_id: str, loss: str, facts: dict[str, Any]) -> Any:
        """The levels of each splitting repeat of the run (lists of ibdb.splitting records)."""
        cursor = self.con.execute(
            "SELECT repeat, level, particle AS index, threshold, rho, loss, fitted, chain, "
            "parent, step, accepted, n_evaluations FROM splitting_particles WHERE run_id = ? "
            "ORDER BY repeat, level, particle", [run_id])
        names = [d[0] for d in cursor.description]
        by_repeat: dict[int, list[dict[str, Any]]] = {}
        for row in cursor.fetchall():
            by_repeat.setdefault(row[0], []).append(dict(zip(names, row, strict=True)))
        if not by_repeat:
            return None
        from ibdb.splitting import LevelRecord

        return [LevelRecord.from_rows(rows) for _, rows in sorted(by_repeat.items())]

    def _task_statistics_source(self, run_id: str, loss: str, facts: dict[str, Any]) -> Any:
        return facts["task_statistics"]

    def fit_counts(self, run_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(hypotheses stored, hypotheses that did not fit the training data) per run."""
        rows = self.con.execute("SELECT run_id, n_stored, n_not_fitted FROM run_summary "
                                "WHERE run_id IN (SELECT unnest(?))", [run_ids]).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def loss_decomposition(self, run_ids: list[str]) -> dict[str, tuple]:
        """(mean hypothesis's test MSE, expected spread around it, interpolates, interpolation
        error, what the mean hypothesis is: "posterior mean" or "mean network") per run that
        has them: gp runs from their runner info (the posterior in closed
        form; interpolation for interpolating spaces), network runs from the mean_network view
        (interpolation facts None). See queries/run_summary.sql."""
        # gp facts from runs itself: run_summary would also aggregate every run's losses
        rows = self.con.execute(
            "SELECT run_id, info->>'$.test_mse_of_mean', info->>'$.test_mse_spread', "
            "info->>'$.interpolates', info->>'$.train_interp_max_abs_error' FROM (SELECT "
            "run_id, runner_info AS info FROM runs WHERE run_id IN (SELECT unnest(?))) "
            "WHERE info->>'$.test_mse_of_mean' IS NOT NULL", [run_ids]).fetchall()
        facts = {r[0]: (float(r[1]), float(r[2]), None if r[3] is None else r[3] == "true",
                        None if r[4] is None else float(r[4]), "posterior mean") for r in rows}
        rest = [r for r in run_ids if r not in facts]
        if rest:
            networks = self.con.execute(
                "SELECT m.run_id, m.test_mse_of_mean, avg(l.test_mse) - m.test_mse_of_mean "
                "FROM mean_network m JOIN losses l USING (run_id) WHERE m.run_id IN "
                "(SELECT unnest(?)) AND l.fitted IS NOT FALSE GROUP BY m.run_id, "
                "m.test_mse_of_mean", [rest]).fetchall()
            facts.update({r[0]: (float(r[1]), float(r[2]), None, None, "mean network")
                          for r in networks})
        return facts

    def ib_rows(self, run_ids: list[str] | None, loss: str) -> list[tuple]:
        """Stored estimates of one loss as (run_id, label, method, eps, bits, lower, upper,
        bound) rows, by run, method and descending eps."""
        where = "" if run_ids is None else "AND run_id IN (SELECT unnest(?))"
        return self.con.execute(
            "SELECT run_id, experiment || '/' || task_name || '/' || space_name, method, "
            f"eps, bits, lower_bits, upper_bits, bound FROM ib_estimates WHERE loss = ? "
            f"{where} ORDER BY run_id, method, eps DESC",
            [loss] if run_ids is None else [loss, run_ids]).fetchall()

    # -- writing -------------------------------------------------------------------------------

    def ingest(self, folders: list[Path]) -> IngestReport:
        """Load run folders' shards in one transaction (shards already ingested are skipped)
        and store the digests of the loss sets of the runs they belong to.

        Any invalid shard aborts the whole call with nothing stored, naming the file.
        """
        from ibdb.ingest import ShardIngest

        with self.transaction():
            report = ShardIngest(self.con).ingest(folders)
            self.refresh_loss_sets(report.runs)
        return report

    def refresh_loss_sets(self, run_ids: list[str] | None) -> None:
        """Recompute and store the loss-set digests of ``run_ids`` (None: every run) from the
        stored rows (queries/loss_set_contents.sql); call inside the transaction that changed
        them."""
        if run_ids is not None and not run_ids:
            return
        where = "" if run_ids is None else " WHERE run_id IN (SELECT unnest($runs))"
        params = {} if run_ids is None else {"runs": list(run_ids)}
        self.con.execute(f"DELETE FROM loss_set_digests{where}", params)
        self.con.execute(f"INSERT INTO loss_set_digests SELECT run_id, loss, n, digest FROM "
                         f"loss_set_contents{where}", params)

    def replace_estimates(self, rows: list[dict[str, Any]]) -> None:
        """Insert estimate rows, replacing any with the same (run, loss, method, eps)."""
        if not rows:
            return
        # One set-based statement over lists: executemany costs ~10 ms a row here.
        names = [n for n in ESTIMATE_COLUMNS if n != "computed_at"]
        jsonish = {n for n, t in ESTIMATE_COLUMNS.items() if t == "JSON"}
        values = {n: [json.dumps(r[n]) if n in jsonish else r[n] for r in rows] for n in names}
        select = ", ".join(f"unnest(${n})::{ESTIMATE_COLUMNS[n]} AS {n}" for n in names)
        with self.transaction():
            self.con.execute(f"INSERT OR REPLACE INTO estimates ({', '.join(names)}) "
                             f"SELECT {select}", values)

    def run_sql(self, query: str, *, write: bool) -> tuple[list[str], list[tuple]]:
        """Run ``query`` (one statement or several); return the last one's (columns, rows).

        With ``write`` every statement runs in one transaction together with a refresh of
        the loss-set digests, so that hand-edited losses make the estimates computed from
        them stale, and an error writes nothing."""
        self._seal()
        if not write:
            return self.query(query)
        with self.transaction():
            result = self.query(query)
            self.refresh_loss_sets(None)
        return result


    def _seal(self) -> None:
        """Let the SQL to come reach nothing but this store: no files (COPY TO, EXPORT
        DATABASE, ATTACH, read_parquet, ...) and no settings (log and profiling paths). DuckDB
        cannot undo either on this connection; files come out through ``ibdb export``."""
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")


_SOURCE_READERS = {"losses": Store._losses_source, "spectrum": Store._spectrum_source,
                   "levels": Store._levels_source,
                   "task_statistics": Store._task_statistics_source}


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
