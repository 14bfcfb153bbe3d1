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

from ibdb.core.columns import LOSS_NAMES
from ibdb.core.errors import EstimateError, IbdbError, ShardError, StoreError
from ibdb.core.estimate import check_eps
from ibdb.core.methods import METHODS

# Each command imports what it needs when it runs, so that `ibdb --help`, `sql`, `check`,
# `validate` and `plan` never load torch or scipy.stats (see docs/decisions/0088-lazy-imports.md).
if TYPE_CHECKING:
    from ibdb.progress import Progress
    from ibdb.report.model import Report
    from ibdb.run.plan import PlannedRun
    from ibdb.spec.experiment import Experiment
    from ibdb.store.checks import CheckResult
    from ibdb.store.database import Store
    from ibdb.store.ingest import IngestReport

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
    # runs that failed with an expected error (IbdbError): (run id, label, message); the other
    # runs were still sampled, ingested and estimated
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    refreshed_estimates: int = 0  # stale estimates recomputed (see Ibdb.estimate's refresh)


@dataclass
class EstimateReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refreshed: int = 0  # rows that recomputed a stale estimate (Ibdb.estimate's ``refresh``)


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
        from ibdb.run.plan import load_runs
        from ibdb.spec.file import load_experiment

        experiment = load_experiment(spec_path)
        runs = load_runs(experiment.runs(), spec_dir=Path(spec_path).parent)
        return experiment, [(spec.label, run_id) for spec, run_id, _, _ in runs]

    def plan(self, spec_path: str | Path) -> list[PlannedRun]:
        """Every run of the spec with the hypotheses the store does not hold yet."""
        from ibdb.run.plan import PlannedRun, load_runs
        from ibdb.spec.file import load_experiment

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

        ``executor`` is local, ray or slurm (see :mod:`ibdb.run.executors`; ``executor_options``
        go to :func:`ibdb.run.executors.make_mapper`). ``ingest=False`` only writes shards (and
        never opens the store for writing), so several processes can sample into one shared
        shard folder; one `ibdb ingest` loads them after.

        Estimating computes the default methods at the spec's eps and recomputes every stale
        estimate of the spec's runs (as :meth:`estimate` with ``refresh``): a run extended from
        4000 to 5000 hypotheses gets fresh values at the eps and methods added earlier too, so
        no table shows numbers of the old sample under the new count. ``progress`` follows the
        sampling and the estimating (see :mod:`ibdb.progress`).
        """
        from ibdb.run.execute import execute_run
        from ibdb.run.executors import make_mapper

        mapper = make_mapper(executor, shard_root=self.shard_root, device_name=self.device,
                             ray_address=ray_address, **(executor_options or {}))
        planned = self.plan(spec_path)
        report = RunReport(planned=planned)
        folders = []
        from ibdb.runners.base import resolve_device

        # (a splitting block resumes from its level shards, or finds it done)
        to_run = [r for r in planned
                  if len(r.missing_ids) or r.spec.budget.splitting is not None]
        if to_run:  # a device this machine lacks would fail every run: say so once, first
            resolve_device(self.device)
        failed_ids: set[str] = set()
        for run in to_run:
            try:
                folders.append(execute_run(run, shard_root=self.shard_root,
                                           device_name=self.device, progress=progress,
                                           mapper=mapper))
            except (ShardError, StoreError):
                raise  # the files or the disk, not the run: every later run would fail too
            except IbdbError as exc:
                # one space that cannot run (a kernel that cannot be conditioned, a task too
                # large for it) must not strand the others' work: they go on, and the failure
                # is reported with the rest (the CLI exits 2 after printing what did run)
                log.warning("run %s failed: %s", run.run_id, exc)
                report.failed.append((run.run_id, run.spec.label, str(exc)))
                failed_ids.add(run.run_id)
                continue
            report.executed.append(run.run_id)
        if not ingest:
            return report
        with self._open() as store:
            if folders:
                report.ingest = store.ingest(folders)
            if estimate:
                just_digested = set(report.ingest.runs) if report.ingest else set()
                est = self._estimate(store, [r.run_id for r in planned
                                             if r.run_id not in failed_ids], None, None,
                                     "test_mse", digested=just_digested, progress=progress)
                report.estimates, report.skipped_estimates = est.rows, est.skipped
                report.refreshed_estimates = est.refreshed
        return report

    def ingest(self, paths: list[str | Path]) -> IngestReport:
        from ibdb.run.shards import list_run_folders

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
                 check_exact: bool = False, refresh: bool = True,
                 progress: Progress | None = None) -> EstimateReport:
        """Recompute estimates from stored samples (no resampling) and store them.

        ``methods`` defaults to every default method that applies to the run and loss;
        ``check_exact`` adds an importance-sampling check (with standard error) to ``exact``.
        ``refresh`` (the default) also recomputes every stale estimate of these runs (any loss,
        method and eps stored before their samples changed, e.g. before the run gained
        hypotheses), so that afterwards none of them is stale; ``report.refreshed`` counts
        those rows. ``progress("estimate", done, total)`` follows the (run, loss, method)
        estimates (see :mod:`ibdb.progress`).
        """
        # a store that does not exist has nothing to estimate: an error, not a new empty store
        with self._open(create=False) as store:
            return self._estimate(store, run_ids, methods, eps, loss, check_exact,
                                  refresh=refresh, progress=progress)

    def _estimate(self, store: Store, run_ids: list[str] | None, methods: list[str] | None,
                  eps: list[float] | None, loss: str, check_exact: bool = False, *,
                  digested: set[str] | None = None, refresh: bool = True,
                  progress: Progress | None = None) -> EstimateReport:
        from ibdb.estimate.recompute import estimate_runs

        if loss not in LOSS_NAMES:
            raise EstimateError(f"unknown loss {loss!r}; choose one of {', '.join(LOSS_NAMES)}.")
        unknown = sorted(set(methods or ()) - set(METHODS.names()))
        if unknown:
            raise EstimateError(f"unknown method(s) {', '.join(unknown)}; choose from "
                                f"{', '.join(METHODS.names())}.")
        if eps is not None:
            eps = check_eps(eps)
        run_ids = run_ids or store.run_ids()
        with store.transaction():  # (reads every loss of these runs, as estimating does)
            # so that edits outside ibdb are seen; not again for runs whose digests the
            # ingest of this same call has just stored
            store.refresh_loss_sets([r for r in run_ids if r not in (digested or set())])
        rows, skipped, refreshed = estimate_runs(
            store, run_ids, methods, eps, loss, check_exact=check_exact, refresh=refresh,
            progress=progress)
        store.replace_estimates(rows)
        return EstimateReport(rows=rows, skipped=skipped, refreshed=refreshed)

    def fit_counts(self, run_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(hypotheses stored, hypotheses that did not fit the training data) per run."""
        with self._open(read_only=True) as store:
            return store.fit_counts(run_ids)

    def loss_decomposition(self, run_ids: list[str]) -> dict[str, tuple]:
        """Per run that has them: (mean hypothesis's test MSE, expected spread around it,
        whether it interpolates its training data, its largest training residual, "posterior
        mean" or "mean network"). The first
        two sum to a fitted hypothesis's expected test MSE, so they say whether bias or variance
        drives IB: a gp run's posterior mean, a network run's mean network. The last two are a
        gp run's (None for networks): one that does not interpolate does not sample the space
        the definition conditions on."""
        with self._open(read_only=True) as store:
            return store.loss_decomposition(run_ids)

    def ib_table(self, run_ids: list[str] | None = None, loss: str = "test_mse") -> list[tuple]:
        """Stored estimates of one loss as (run_id, label, method, eps, bits, lower, upper,
        bound, stale) rows; stale: computed before the run's samples changed."""
        with self._open(read_only=True) as store:
            return store.ib_rows(run_ids, loss)

    # -- frames (the Python API for notebooks; see ibdb/store/frames.py)
    # -----------------------------
    # Each returns a pyarrow Table by default, or a pandas / polars DataFrame with
    # ``frame="pandas"`` / ``frame="polars"``; the store is open only during the call.

    def runs(self, *, frame: str = "arrow") -> Any:
        """Every run, one row each: the ``run_summary`` view (what the run is, hypotheses
        requested and stored, how many did not fit, loss statistics)."""
        from ibdb.store import frames

        return self._frame(frames.RUNS_SQL, {}, frame)

    def losses(self, run_ids: str | list[str] | None = None, *, fitted_only: bool = False,
               frame: str = "arrow") -> Any:
        """The ``losses`` rows (one per hypothesis: test_mse, test_error, train_*, fitted,
        seed, shard) of ``run_ids`` (one id, a list, or None for every run), by run and
        hypothesis id. ``fitted_only`` keeps the hypotheses the estimates use (``fitted IS NOT
        FALSE``: NULL means fit by construction)."""
        from ibdb.store import frames

        ids = frames.run_ids_list(run_ids)
        clause, params = frames.where(ids)
        if fitted_only:
            clause += " AND fitted IS NOT FALSE"
        return self._frame(frames.LOSSES_SQL.format(where=clause), params, frame, ids)

    def estimates(self, run_ids: str | list[str] | None = None, *, loss: str | None = None,
                  methods: list[str] | None = None, frame: str = "arrow") -> Any:
        """Stored estimates with every column of the ``ib_estimates`` view (bits, interval,
        bound, stale, params, diagnostics, ...), optionally of some runs, one loss, methods."""
        from ibdb.store import frames

        frames.check_loss(loss)
        ids = frames.run_ids_list(run_ids)
        clause, params = frames.where(ids, loss=loss, method=methods)
        return self._frame(frames.ESTIMATES_SQL.format(where=clause), params, frame, ids)

    def ib_curve(self, run_ids: str | list[str] | None = None, *, loss: str = "test_mse",
                 methods: list[str] | None = None, frame: str = "arrow") -> Any:
        """The IB-vs-eps curve: per run, method and eps (descending) the bits with their 95 %
        interval (``lower_bits``, ``upper_bits``), ``bound`` (point, lower or upper), the
        sample count ``n`` and ``stale``. Curves at other eps: :meth:`recompute`."""
        from ibdb.store import frames

        frames.check_loss(loss)
        ids = frames.run_ids_list(run_ids)
        clause, params = frames.where(ids, loss=loss, method=methods)
        return self._frame(frames.CURVE_SQL.format(where=clause), params, frame, ids)

    def provenance(self, run_ids: str | list[str] | None = None, *, frame: str = "arrow"
                   ) -> Any:
        """Where each run came from: its spec and identity (JSON), data fingerprint, task
        statistics, runner info, versions (ibdb, torch, duckdb), device, host and times."""
        from ibdb.store import frames

        ids = frames.run_ids_list(run_ids)
        clause, params = frames.where(ids, column="s.run_id")
        return self._frame(frames.PROVENANCE_SQL.format(where=clause), params, frame, ids)

    def recompute(self, eps: float | list[float], *, run_ids: str | list[str] | None = None,
                  methods: list[str] | None = None, loss: str = "test_mse",
                  frame: str = "arrow", progress: Progress | None = None) -> Any:
        """Estimate again at ``eps`` from the stored samples (no resampling), store the rows
        (as :meth:`estimate` does, stale estimates of these runs refreshed too) and return them
        as an :meth:`ib_curve` frame restricted to those eps. ``methods`` defaults to every
        default method that applies; ``progress`` as for :meth:`estimate`."""
        from ibdb.store import frames

        frames.check_frame(frame)
        grid = [eps] if isinstance(eps, int | float) else list(eps)
        ids = frames.run_ids_list(run_ids)
        report = self.estimate(run_ids=ids, methods=methods, eps=grid, loss=loss,
                               progress=progress)
        done = sorted({r["run_id"] for r in report.rows})
        clause, params = frames.where(done, loss=loss, method=methods)
        clause += " AND eps IN (SELECT unnest($eps)::DOUBLE)"
        params["eps"] = [float(e) for e in grid]
        return self._frame(frames.CURVE_SQL.format(where=clause), params, frame)

    def connect(self) -> Any:
        """A read-only DuckDB connection to the store with its views and the ``ib_*`` SQL
        functions: ``con.sql("SELECT ... ib_fit(list(test_mse), 0.2, 'ncx2') ...")``, then
        ``.arrow()``, ``.df()`` or ``.pl()``. Close it before writing to the store from this
        process (see :func:`ibdb.store.frames.connect`)."""
        from ibdb.store import frames

        return frames.connect(self.db)

    def _frame(self, sql: str, params: dict[str, Any], frame: str,
               run_ids: list[str] | None = None) -> Any:
        from ibdb.store import frames

        frames.check_frame(frame)
        with self._open(read_only=True) as store:
            frames.check_runs(store.con, self.db, run_ids)
            return frames.to_frame(store.con.sql(sql, params=params), frame)

    # -- reports -------------------------------------------------------------------------------

    def report(self, *, run_ids: list[str] | None = None, out: str | Path = "report",
               loss: str = "test_mse", progress: Progress | None = None) -> Report:
        """Figures and report.md for ``run_ids`` (default: every run) from stored data only.

        Returns an :class:`ibdb.report.collect.Report` (files written, and the data each figure
        plots).
        ``progress`` gets ``"report: read runs"`` (runs read), then ``"report: write files"``
        (figures, then report.md); see :mod:`ibdb.progress`.
        """
        from ibdb.report.collect import collect
        from ibdb.report.writer import require_matplotlib, write_report

        require_matplotlib()  # before the store is opened or a folder is made
        with self._open(read_only=True) as store:
            data = collect(store, run_ids, loss=loss,
                                     progress=_relabel(progress, "report: read runs"))
        return write_report(data, out,
                                      progress=_relabel(progress, "report: write files"))

    # -- health --------------------------------------------------------------------------------

    def check(self) -> list[CheckResult]:
        """Run every health check (queries/checks/*.sql) on the store and its shard folder.

        Without a store file (a first run interrupted before it ingested, or `run --no-ingest`)
        but with run folders in the shard folder, the one result names them and how to load
        them; with neither, it is an error (no such store)."""
        from ibdb.store.checks import run_checks, shards_without_store

        if not Path(self.db).exists():
            found = shards_without_store(self.db, self.shard_root)
            if found is not None:
                return found
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
        from ibdb.store.functions import FUNCTIONS

        calls_functions = any(name in query.lower() for name in FUNCTIONS)
        with self._open(read_only=not write, functions=calls_functions) as store:
            try:
                return store.run_sql(query, write=write)
            except duckdb.Error as exc:
                detail = str(exc).strip()
                hint = _sql_hint(detail, write)
                if hint and not detail.endswith((".", "!", "?")):
                    detail += "."
                raise IbdbError(f"SQL error: {detail}{hint}") from None

    def export(self, source: str, out: str | Path, *, fmt: str | None = None) -> int:
        """Write the rows of a table or view (by name) or of one SELECT query to ``out`` as
        Parquet, CSV or JSON (``fmt``, else the file's suffix); return the rows written."""
        from ibdb.store.export import export_format, export_rows
        from ibdb.store.functions import FUNCTIONS

        out = Path(out)
        fmt = export_format(out, fmt)
        calls_functions = any(name in source.lower() for name in FUNCTIONS)
        with self._open(read_only=True, functions=calls_functions) as store:
            return export_rows(store.con, source, out, fmt)

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

    def _open(self, *, read_only: bool = False, functions: bool = False,
              create: bool = True) -> Store:
        from ibdb.store.database import Store

        return Store.open(self.db, read_only=read_only, functions=functions, create=create,
                          retry_seconds=READ_RETRY_SECONDS if read_only else 0.0)


def _relabel(progress: Progress | None, label: str) -> Progress | None:
    """``progress`` with every call's label replaced by ``label`` (one line of work for
    steps that each name their item)."""
    if progress is None:
        return None
    return lambda _item, done, total: progress(label, done, total)


def _default_shard_root(db: str) -> Path:
    path = Path(db)
    return path.with_name(path.stem + ".shards")


def _sql_hint(text: str, write: bool) -> str:
    """What to do about an SQL error ibdb's own rules cause ("" for others)."""
    hint = ""
    if "file system operations are disabled" in text or "configuration has been locked" in text:
        hint = (" `ibdb sql` reaches only the store (no files, no settings); write results "
                "to a file with `ibdb export`.")
    elif "read-only" in text.lower() and not write:
        hint = " The store is open read-only: pass --write to change it."
    if write:
        hint += " Nothing was written: the statements run in one transaction."
    return hint
