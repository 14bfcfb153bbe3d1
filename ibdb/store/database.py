"""The DuckDB store: one embedded file holding every raw sample, its provenance, and estimates.

Opening a store applies the table definitions in ``schemas/`` (once, in one transaction),
re-creates the views in ``queries/`` and registers the estimator functions, so SQL over the store
can call ``ib_fit`` and ``ib_exact``. DuckDB lets one process write a file at a time; a
second opener gets :class:`StoreLockedError` naming the process that holds it. Loading shards
(``Store.ingest``) lives in :mod:`ibdb.store.ingest`; the check that a store's tables are those the
schema files make, in :mod:`ibdb.store.catalog`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ibdb.core.columns import LOSS_NAMES
from ibdb.core.errors import IbdbError, StoreError, StoreLockedError, shorten
from ibdb.core.estimate import ESTIMATE_COLUMNS
from ibdb.core.methods import INPUTS
from ibdb.store.catalog import schema_files, verify_catalog
from ibdb.store.files import (
    TEMPORARY_STORE_PREFIX,
    check_not_truncated,
    check_store_path,
    lock_message,
    store_failure,
)
from ibdb.store.functions import register_functions
from ibdb.store.views import create_views, view_definitions  # noqa: F401 (view_definitions re-exported)

if TYPE_CHECKING:  # numpy and the ingest machinery load only when a call needs them
    import numpy as np

    from ibdb.store.ingest import IngestReport

log = logging.getLogger(__name__)
DIGESTS_STORED_SINCE = 3  # the schema version that stores loss-set digests
# A store being created is written under ".<name>.new-<pid>" beside it (Store._create).


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
            check_store_path(path, read_only=read_only, create=create)
            if not read_only and create and not Path(path).exists():
                cls._create(Path(path))
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                con = duckdb.connect(path, read_only=read_only and path != ":memory:")
                break
            except duckdb.IOException as exc:
                if "could not set lock" not in str(exc).lower():
                    raise store_failure(path, exc, opening=True) from None
                if time.monotonic() >= deadline:
                    raise StoreLockedError(lock_message(path, str(exc))) from None
                time.sleep(0.1)
            except duckdb.Error as exc:
                raise store_failure(path, exc, opening=True) from None
        return cls.over(con, path, read_only=read_only and path != ":memory:",
                        functions=functions)

    @classmethod
    def over(cls, con: duckdb.DuckDBPyConnection, path: str, *, read_only: bool,
             functions: bool) -> Store:
        """The store on an open connection whose default catalog is the store: its schema
        checked (and, unless read-only, created or upgraded), its views and ``functions``
        ready. The connection is closed if that fails."""
        store = cls(con, path, read_only=read_only)
        try:
            store._prepare(functions=functions)
        except duckdb.Error as exc:
            con.close()
            raise store_failure(path, exc, opening=True) from None
        except BaseException:
            con.close()
            raise
        return store

    @classmethod
    def _create(cls, path: Path) -> None:
        """Create a store under a temporary name and link it into place, so a process killed
        while creating it leaves no half-made store (which a later read-only open would refuse);
        a link, unlike a rename, never replaces a store another process created meanwhile."""
        tmp = path.with_name(f"{TEMPORARY_STORE_PREFIX.format(name=path.name)}{os.getpid()}")
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
        except duckdb.Error as exc:
            raise store_failure(str(path), exc, opening=True) from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the store ({shorten(exc.strerror or exc)}"
                             f" at {shorten(exc.filename or tmp)}). Point --db at a file in a "
                             "folder you can write, or free space there.") from None
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
        # A failure shows itself, never a failed ROLLBACK after it: DuckDB ends a transaction
        # whose COMMIT failed (disk full) on its own, and a later ROLLBACK would then fail with
        # "no transaction is active", hiding why. Failures of the file (disk full, damage,
        # memory) become StoreErrors; SQL errors pass unchanged.
        try:
            self.con.execute("BEGIN")
        except duckdb.Error as exc:
            raise store_failure(self.path, exc) or exc from None
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException as exc:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error as rollback:
                log.debug("%s: ROLLBACK after a failure failed too: %s", self.path, rollback)
            failure = store_failure(self.path, exc) if isinstance(exc, duckdb.Error) else None
            if failure is None:
                raise
            raise failure from exc

    def _prepare(self, *, functions: bool) -> None:
        if self.path != ":memory:":
            check_not_truncated(self.con, self.path)
        version = self.schema_version()
        files = schema_files()
        latest = files[-1][0]
        if version == 0:
            others = self._table_names()
            if others:  # (a new store, or an empty DuckDB file, has none)
                listed = shorten(", ".join(others), 120)
                raise StoreError(f"{self.path}: a DuckDB database without ibdb's ibdb_meta table "
                                 f"(it holds {listed}): another program's database, or an ibdb "
                                 "store whose ibdb_meta was dropped. ibdb neither reads it nor "
                                 "adds its tables to it: point --db at an ibdb store, or at a "
                                 "new file.")
        if version > latest:
            raise StoreError(f"{self.path}: store schema version {version} is newer than this "
                             f"ibdb understands ({latest}): upgrade ibdb, "
                             "or point --db at another store.")
        if self.read_only:
            if version == 0:
                raise StoreError(f"{self.path}: not an ibdb store (an empty DuckDB file). Run "
                                 "`ibdb init` on it, or pick the right --db.")
            if version < latest:  # its views would name columns it lacks
                raise StoreError(f"{self.path}: store schema version {version} is older than "
                                 f"this ibdb's ({latest}) and a read-only open cannot "
                                 "upgrade it. Run `ibdb --db FILE init` once (it upgrades in "
                                 "place, in one transaction), then retry.")
        else:
            pending = [(n, text) for n, text in files if n > version]
            if pending:
                if version:  # (a new store's tables are made in no time; say nothing then)
                    log.info("%s: upgrading the store from schema version %d to %d, in one "
                             "transaction", self.path, version, pending[-1][0])
                    # (a store altered by hand would fail half-way through its upgrade)
                    verify_catalog(self.con, self.path, version)
                with self.transaction():
                    for _, text in pending:
                        self.con.execute(text)
                    self.con.execute("INSERT OR REPLACE INTO ibdb_meta VALUES "
                                     "('schema_version', ?)", [str(pending[-1][0])])
                    if version < DIGESTS_STORED_SINCE:
                        create_views(self.con, temporary=False)
                        self._carry_over_digests()
        verify_catalog(self.con, self.path, latest)
        try:
            create_views(self.con, temporary=self.read_only)
        except duckdb.CatalogException as exc:
            raise StoreError(f"{self.path}: cannot create ibdb's views "
                             f"({shorten(str(exc).splitlines()[0])}); an object of the store "
                             "has a view's name. Drop or rename it (`ibdb sql --write`).") \
                from None
        if functions:
            register_functions(self.con)

    def _table_names(self) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' ORDER BY table_name").fetchall()]

    def missing_views(self) -> list[str]:
        """Views of queries/*.sql that the store file itself lacks (dropped outside ibdb).
        ibdb re-creates its views whenever it opens a store (a read-only open as temporary
        ones), so only other DuckDB clients miss them; a writable open writes them back."""
        have = {r[0] for r in self.con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() "
            "AND schema_name = 'main'").fetchall()}
        return [name for name, _ in view_definitions() if name not in have]

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
        try:
            return int(row[0]) if row else 0
        except (TypeError, ValueError):
            raise StoreError(f"{self.path}: its ibdb_meta holds schema_version "
                             f"{shorten(row[0], 40)!r}, not a number; it was edited outside "
                             "ibdb. Set it back (`ibdb sql --write \"UPDATE ibdb_meta SET value "
                             "= '<n>' WHERE key = 'schema_version'\"`, n the number of the last "
                             "schemas/ file the store has) or restore a backup.") from None

    def query(self, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of the last statement of ``sql`` over the store."""
        cursor = self.con.execute(sql, params)
        if cursor is None or cursor.description is None:
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
        """The input that methods reading ``source`` (a key of ibdb.core.methods.SOURCES) take for
        ``run_id`` and ``loss``, or None when the run has none (e.g. the spectrum of a network
        run). ``facts``: the run's :meth:`run_facts`, when the caller has them already."""
        if source not in _SOURCE_READERS:
            raise StoreError(f"the store cannot read a source named {source!r}; known sources: "
                             f"{', '.join(_SOURCE_READERS)}.")
        if loss not in INPUTS[source].losses:
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
        """The levels of each splitting repeat of the run (lists of ibdb.run.splitting records)."""
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
        from ibdb.stats.levels import LevelRecord

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
        # (TRY_CAST: a runner_info edited by hand to hold text is skipped, not an error)
        rows = self.con.execute(
            "SELECT * FROM (SELECT run_id, "
            "TRY_CAST(info->>'$.test_mse_of_mean' AS DOUBLE) AS of_mean, "
            "TRY_CAST(info->>'$.test_mse_spread' AS DOUBLE) AS spread, "
            "TRY_CAST(info->>'$.interpolates' AS BOOLEAN), "
            "TRY_CAST(info->>'$.train_interp_max_abs_error' AS DOUBLE) FROM (SELECT "
            "run_id, runner_info AS info FROM runs WHERE run_id IN (SELECT unnest(?)))) "
            "WHERE of_mean IS NOT NULL AND spread IS NOT NULL", [run_ids]).fetchall()
        facts = {r[0]: (r[1], r[2], r[3], r[4], "posterior mean") for r in rows}
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
        bound, stale) rows, by run, method and descending eps."""
        where = "" if run_ids is None else "AND run_id IN (SELECT unnest(?))"
        return self.con.execute(
            "SELECT run_id, experiment || '/' || task_name || '/' || space_name, method, "
            f"eps, bits, lower_bits, upper_bits, bound, stale FROM ib_estimates WHERE loss = ? "
            f"{where} ORDER BY run_id, method, eps DESC",
            [loss] if run_ids is None else [loss, run_ids]).fetchall()

    # -- writing -------------------------------------------------------------------------------

    def ingest(self, folders: list[Path]) -> IngestReport:
        """Load run folders' shards in one transaction (shards already ingested are skipped)
        and store the digests of the loss sets of the runs they belong to.

        Any invalid shard aborts the whole call with nothing stored, naming the file.
        """
        from ibdb.store.ingest import ShardIngest

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
        require_statements(query)
        self._seal()
        if not write:
            try:
                return self.query(query)
            except duckdb.Error as exc:  # a damaged block shows when a query reads it
                failure = store_failure(self.path, exc)
                if failure is None:
                    raise
                raise failure from None
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


def require_statements(query: str) -> None:
    """Raise unless ``query`` holds an SQL statement (not only blanks or comments). A query
    that does not parse passes: running it reports DuckDB's parser error."""
    try:
        empty = not duckdb.extract_statements(query)
    except duckdb.Error:
        return
    if empty:
        raise IbdbError(f"SQL error: the query ({shorten(repr(query), 80)}) holds no "
                        "statement: it is empty or only comments. Pass one, e.g. `ibdb sql "
                        "\"SELECT * FROM run_summary\"`.")
