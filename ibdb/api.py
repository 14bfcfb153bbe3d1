"""The facade: every CLI command is one call on :class:`Ibdb`.

An ``Ibdb`` names a store file, a shard folder and a device; it opens the store only for as long
as a call needs it, so sampling (which can take hours) never holds the store's lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ibdb import estimators
from ibdb.bound import TaskStatistics
from ibdb.checks import CheckResult, run_checks
from ibdb.errors import EstimateError, IbdbError, StoreError
from ibdb.execute import Progress, execute_run
from ibdb.executors import make_mapper
from ibdb.plan import PlannedRun, load_runs
from ibdb.shards import list_run_folders
from ibdb.specs import Experiment, load_experiment
from ibdb.spectrum import gp_loss_distribution
from ibdb.store import LOSS_NAMES, IngestReport, Store

if TYPE_CHECKING:  # ibdb.report is imported by the report command only
    from ibdb.report import Report

log = logging.getLogger(__name__)

DEFAULT_DB = "ibdb.duckdb"
QUICKSTART_SPEC = Path("examples") / "quickstart.yaml"
READ_RETRY_SECONDS = 2.0


@dataclass
class RunReport:
    planned: list[PlannedRun]
    executed: list[str] = field(default_factory=list)
    ingest: IngestReport | None = None
    estimates: list[dict[str, Any]] = field(default_factory=list)
    skipped_estimates: list[str] = field(default_factory=list)


@dataclass
class EstimateReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Ibdb:
    """One store, its shard folder and a device. Cheap to make; opens nothing until asked."""

    def __init__(self, db: str | Path = DEFAULT_DB, *, shards: str | Path | None = None,
                 device: str = "auto") -> None:
        self.db = str(db)
        self.shard_root = Path(shards) if shards else _default_shard_root(self.db)
        self.device = device

    # -- specs ---------------------------------------------------------------------------------

    def validate(self, spec_path: str | Path) -> tuple[Experiment, list[tuple[str, str]]]:
        """Check a spec and its data; return the experiment and its (label, run_id) pairs."""
        experiment = load_experiment(spec_path)
        runs = load_runs(experiment.runs(), spec_dir=Path(spec_path).parent)
        return experiment, [(spec.label, run_id) for spec, run_id, _, _ in runs]

    def plan(self, spec_path: str | Path) -> list[PlannedRun]:
        """Every run of the spec with the hypotheses the store does not hold yet."""
        experiment = load_experiment(spec_path)
        runs = load_runs(experiment.runs(), spec_dir=Path(spec_path).parent)
        stored: dict[str, frozenset[int]] = {}
        if Path(self.db).exists():
            with self._open(read_only=True) as store:
                stored = {run_id: store.stored_hypotheses(run_id) for _, run_id, _, _ in runs}
        return [PlannedRun(spec=spec, run_id=run_id, identity=identity, data=data,
                           stored_ids=stored.get(run_id, frozenset()))
                for spec, run_id, identity, data in runs]

    # -- running -------------------------------------------------------------------------------

    def run(self, spec_path: str | Path, *, progress: Progress | None = None,
            estimate: bool = True, ingest: bool = True, executor: str = "local",
            ray_address: str | None = None,
            executor_options: dict[str, Any] | None = None) -> RunReport:
        """Sample what the store lacks, ingest it, and (by default) estimate at the spec's eps.

        ``executor`` is local, ray or slurm (see :mod:`ibdb.executors`; ``executor_options``
        go to :func:`ibdb.executors.make_mapper`). ``ingest=False`` only writes shards (and
        never opens the store for writing), so several processes can sample into one shared
        shard folder; one `ibdb ingest` loads them after.
        """
        mapper = make_mapper(executor, shard_root=self.shard_root, device_name=self.device,
                             ray_address=ray_address, **(executor_options or {}))
        planned = self.plan(spec_path)
        report = RunReport(planned=planned)
        folders = []
        for run in planned:
            if len(run.missing_ids) == 0:
                continue
            folders.append(execute_run(run, shard_root=self.shard_root,
                                       device_name=self.device, progress=progress,
                                       mapper=mapper))
            report.executed.append(run.run_id)
        if not ingest:
            return report
        with self._open() as store:
            if folders:
                report.ingest = store.ingest(folders)
            if estimate:
                est = self._estimate(store, [r.run_id for r in planned], None, None, "test_mse")
                report.estimates, report.skipped_estimates = est.rows, est.skipped
        return report

    def ingest(self, paths: list[str | Path]) -> IngestReport:
        folders = list_run_folders([Path(p) for p in paths])
        if not folders:
            raise StoreError(f"no run folders (with run.json) under {', '.join(map(str, paths))}.")
        with self._open() as store:
            return store.ingest(folders)

    def init(self) -> str:
        with self._open():
            pass
        return self.db

    # -- estimates -----------------------------------------------------------------------------

    def estimate(self, *, run_ids: list[str] | None = None, methods: list[str] | None = None,
                 eps: list[float] | None = None, loss: str = "test_mse",
                 check_exact: bool = False) -> EstimateReport:
        """Recompute estimates from stored samples (no resampling) and store them.

        ``methods`` defaults to every default method that applies to the run and loss;
        ``check_exact`` adds an importance-sampling check (with standard error) to ``exact``.
        """
        with self._open() as store:
            return self._estimate(store, run_ids, methods, eps, loss, check_exact)

    def _estimate(self, store: Store, run_ids: list[str] | None, methods: list[str] | None,
                  eps: list[float] | None, loss: str, check_exact: bool = False
                  ) -> EstimateReport:
        if loss not in LOSS_NAMES:
            raise EstimateError(f"unknown loss {loss!r}; choose one of {', '.join(LOSS_NAMES)}.")
        unknown = sorted(set(methods or ()) - set(estimators.ALL_METHODS))
        if unknown:
            raise EstimateError(f"unknown method(s) {', '.join(unknown)}; choose from "
                                f"{', '.join(estimators.ALL_METHODS)}.")
        if eps is not None:
            bad = [e for e in eps if not (np.isfinite(e) and e > 0)]
            if bad or not eps:
                raise EstimateError(f"eps must be positive numbers; got {bad or eps}.")
        report = EstimateReport()
        run_ids = run_ids or store.run_ids()
        digests = store.loss_set_digests(run_ids)
        for run_id in run_ids:
            facts = store.run_facts(run_id)
            grid = list(eps) if eps is not None else facts["eps"]
            for method in methods or estimators.DEFAULT_METHODS:
                try:
                    report.rows.extend(self._estimate_one(store, run_id, facts, method, grid,
                                                          loss, check_exact, digests))
                except _NotApplicable as why:
                    if methods:  # asked for explicitly: say why there is none
                        report.skipped.append(f"{run_id} {method}: {why}")
                except EstimateError as exc:
                    report.skipped.append(f"{run_id} {method}: {exc}")
        store.replace_estimates(report.rows)
        return report

    def _estimate_one(self, store: Store, run_id: str, facts: dict[str, Any], method: str,
                      grid: list[float], loss: str, check_exact: bool,
                      digests: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
        if method == "exact":
            spectrum = store.spectrum(run_id) if loss == "test_mse" else None
            if spectrum is None:
                raise _NotApplicable(f"no closed-form law for the {loss} of a "
                                     f"{facts['space_kind']} run")
            dist = gp_loss_distribution(*spectrum, n_test=facts["n_test"],
                                        n_outputs=facts["n_outputs"])
            ests = estimators.estimate_exact(dist, grid, check=check_exact)
            digest = digests.get((run_id, "spectrum"), "")
        elif method == "bound":
            if loss != "test_mse" or facts["task_statistics"] is None:
                raise _NotApplicable("the 2023 bound needs the run's task statistics and "
                                     "applies to test_mse")
            ests = estimators.estimate_bound(TaskStatistics(**facts["task_statistics"]), grid)
            digest = "task-statistics"
        else:
            values = store.losses(run_id, loss)
            ests = estimators.estimate_losses(values, grid, method)
            digest = digests.get((run_id, loss), "")
        return [{"run_id": run_id, "loss": loss, "method": e.method,
                 "method_version": e.method_version, "eps": e.eps, "bits": e.bits,
                 "lower_bits": e.lower_bits, "upper_bits": e.upper_bits, "bound": e.bound,
                 "n": e.n, "params": e.params, "diagnostics": e.diagnostics,
                 "loss_set_hash": digest} for e in ests]

    def fit_counts(self, run_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(hypotheses stored, hypotheses that did not fit the training data) per run."""
        with self._open(read_only=True) as store:
            rows = store.con.execute("SELECT run_id, n_stored, n_not_fitted FROM run_summary "
                                     "WHERE run_id IN (SELECT unnest(?))", [run_ids]).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def ib_table(self, run_ids: list[str] | None = None, loss: str = "test_mse") -> list[tuple]:
        """Stored estimates of one loss as (run_id, label, method, eps, bits, lower, upper,
        bound) rows."""
        with self._open(read_only=True) as store:
            where = "" if run_ids is None else "AND run_id IN (SELECT unnest(?))"
            return store.con.execute(
                "SELECT run_id, experiment || '/' || task_name || '/' || space_name, method, "
                f"eps, bits, lower_bits, upper_bits, bound FROM ib_estimates WHERE loss = ? "
                f"{where} ORDER BY run_id, method, eps DESC",
                [loss] if run_ids is None else [loss, run_ids]).fetchall()

    # -- reports -------------------------------------------------------------------------------

    def report(self, *, run_ids: list[str] | None = None, out: str | Path = "report",
               loss: str = "test_mse") -> Report:
        """Figures and report.md for ``run_ids`` (default: every run) from stored data only.

        Returns an :class:`ibdb.report.Report` (files written, and the data each figure plots).
        """
        from ibdb import report as reporting  # matplotlib is optional: only this command needs it

        reporting.require_matplotlib()  # before the store is opened or a folder is made
        with self._open(read_only=True) as store:
            data = reporting.collect(store, run_ids, loss=loss)
        return reporting.write_report(data, out)

    # -- health --------------------------------------------------------------------------------

    def check(self) -> list[CheckResult]:
        """Run every health check (queries/checks/*.sql) on the store and its shard folder."""
        with self._open(read_only=True) as store:
            return run_checks(store, self.shard_root)

    # -- SQL -----------------------------------------------------------------------------------

    def sql(self, query: str, *, write: bool = False) -> tuple[list[str], list[tuple]]:
        """Run ``query`` (one statement or several, separated by ``;``); read-only unless
        ``write``. Returns the last statement's (column names, rows).

        With ``write`` the statements run in one transaction, so a failing statement leaves
        the store as it was (DuckDB alone would keep the statements before it).
        """
        import duckdb

        if write:  # ibdb owns the transaction; a COMMIT inside would end it half-way
            try:
                kinds = [st.type for st in duckdb.extract_statements(query)]
            except duckdb.Error as exc:
                raise IbdbError(f"SQL error: {str(exc).strip()}") from None
            if duckdb.StatementType.TRANSACTION in kinds:
                raise IbdbError("SQL error: the query holds BEGIN, COMMIT or ROLLBACK; with "
                                "--write ibdb runs all statements in one transaction itself. "
                                "Leave them out.")
        with self._open(read_only=not write) as store:
            try:
                if write:
                    store.con.execute("BEGIN")
                cursor = store.con.execute(query)
                result = ([], []) if cursor.description is None else \
                    ([d[0] for d in cursor.description], cursor.fetchall())
                if write:
                    store.con.execute("COMMIT")
            except duckdb.Error as exc:
                hint = ""
                if write:
                    store.con.execute("ROLLBACK")
                    hint = " Nothing was written: the statements run in one transaction."
                raise IbdbError(f"SQL error: {str(exc).strip()}{hint}") from None
            return result

    # -- quickstart ----------------------------------------------------------------------------

    def quickstart(self, *, workdir: str | Path = ".", progress: Progress | None = None
                   ) -> tuple[Path, bool, RunReport]:
        """Write examples/quickstart.yaml if missing, run it; return (spec, written, report)."""
        spec_path = Path(workdir) / QUICKSTART_SPEC
        written = False
        if not spec_path.exists():
            spec_path.parent.mkdir(parents=True, exist_ok=True)
            bundled = resources.files("ibdb.examples").joinpath("quickstart.yaml")
            spec_path.write_text(bundled.read_text(encoding="utf-8"), encoding="utf-8")
            written = True
        return spec_path, written, self.run(spec_path, progress=progress)

    def _open(self, *, read_only: bool = False) -> Store:
        return Store.open(self.db, read_only=read_only,
                          retry_seconds=READ_RETRY_SECONDS if read_only else 0.0)


class _NotApplicable(Exception):
    """A method that does not apply to a run (e.g. exact for a network space)."""


def _default_shard_root(db: str) -> Path:
    path = Path(db)
    return path.with_name(path.stem + ".shards")
