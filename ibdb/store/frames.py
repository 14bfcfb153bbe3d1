"""Tables out of the store for notebooks: the queries behind :class:`ibdb.api.Ibdb`'s frame
methods (``runs``, ``losses``, ``estimates``, ``ib_curve``, ``provenance``), the conversion of
their results to Arrow, pandas or polars, and :func:`connect`, a read-only DuckDB connection
with the store's views and the ``ib_*`` SQL functions.

Frames are Arrow tables unless asked otherwise: DuckDB hands Arrow over without copying and
keeps every type (nullable integers and booleans, time zones, lists), and both pandas
(``table.to_pandas()``) and polars (``polars.from_arrow(table)``) read it. ``frame="pandas"``
and ``frame="polars"`` use DuckDB's own converters (``.df()``, ``.pl()``). pyarrow, pandas and
polars are imported by DuckDB only when a frame of theirs is made, so ``import ibdb`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibdb.core.columns import LOSS_NAMES
from ibdb.core.errors import IbdbError, StoreError

if TYPE_CHECKING:
    import duckdb

FRAMES = ("arrow", "pandas", "polars")
ATTACHED_AS = "ibdb_store"

RUNS_SQL = ("SELECT * FROM run_summary "
            "ORDER BY experiment, task_name, space_name, budget_name, run_id")
LOSSES_SQL = "SELECT * FROM losses WHERE {where} ORDER BY run_id, hypothesis_id"
ESTIMATES_SQL = "SELECT * FROM ib_estimates WHERE {where} ORDER BY run_id, loss, method, eps DESC"
CURVE_SQL = ("SELECT run_id, experiment || '/' || task_name || '/' || space_name AS label, "
             "loss, method, eps, bits, lower_bits, upper_bits, bound, n, stale "
             "FROM ib_estimates WHERE {where} ORDER BY run_id, method, eps DESC")
PROVENANCE_SQL = (
    "SELECT s.run_id, s.experiment, s.task_name, s.space_name, s.budget_name, s.space_kind, "
    "s.runner, s.n_hypotheses, s.eps, s.spec, s.identity, s.created_at, r.n_train, r.n_test, "
    "r.n_outputs, r.data_fingerprint, r.task_statistics, r.runner_info, r.ibdb_version, "
    "r.torch_version, r.duckdb_version, r.device, r.host, r.started_at, r.finished_at, "
    "r.wall_seconds FROM specs s LEFT JOIN runs r USING (run_id) WHERE {where} "
    "ORDER BY s.created_at, s.run_id")


def check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise IbdbError(f"unknown frame {frame!r}; choose one of {', '.join(FRAMES)}.")
    return frame


def to_frame(relation: duckdb.DuckDBPyRelation, frame: str) -> Any:
    """``relation``'s rows as a pyarrow Table, a pandas DataFrame or a polars DataFrame."""
    check_frame(frame)
    try:
        if frame == "arrow":
            return relation.to_arrow_table()
        if frame == "pandas":
            return relation.df()
        return relation.pl()
    except ModuleNotFoundError as exc:
        extra = " (or `pip install 'ibdb[polars]'`)" if frame == "polars" else ""
        raise IbdbError(f"frame={frame!r} needs the {exc.name} package, which is not "
                        f"installed: `pip install {exc.name}`{extra}.") from None


def run_ids_list(run_ids: str | list[str] | None) -> list[str] | None:
    if run_ids is None:
        return None
    return [run_ids] if isinstance(run_ids, str) else list(run_ids)


def check_runs(con: duckdb.DuckDBPyConnection, path: str, run_ids: list[str] | None) -> None:
    """Raise naming the run ids that the store does not hold (an empty frame would hide them)."""
    if not run_ids:
        return
    known = {r[0] for r in con.execute("SELECT run_id FROM specs WHERE run_id IN "
                                       "(SELECT unnest(?))", [run_ids]).fetchall()}
    missing = [r for r in run_ids if r not in known]
    if missing:
        raise StoreError(f"run(s) {', '.join(missing)} not in {path}. List the runs with "
                         "`Ibdb(db).runs()`.")


def where(run_ids: list[str] | None, *, column: str = "run_id", **equal: Any
          ) -> tuple[str, dict[str, Any]]:
    """A WHERE clause (and its parameters) for ``run_ids`` (None: all) and ``column = value``
    or ``column IN values`` filters (None values skipped)."""
    parts, params = ["true"], {}
    if run_ids is not None:
        parts.append(f"{column} IN (SELECT unnest($run_ids))")
        params["run_ids"] = run_ids
    for name, value in equal.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            parts.append(f"{name} IN (SELECT unnest(${name}))")
            params[name] = list(value)
        else:
            parts.append(f"{name} = ${name}")
            params[name] = value
    return " AND ".join(parts), params


def check_loss(loss: str | None) -> None:
    if loss is not None and loss not in LOSS_NAMES:
        raise IbdbError(f"unknown loss {loss!r}; choose one of {', '.join(LOSS_NAMES)}.")


def connect(db: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection to the store at ``db`` with its views (``run_summary``,
    ``ib_estimates``, ...) and the ``ib_*`` functions, for ``con.sql(...)`` in a notebook.

    The store is attached read-only (as ``ibdb_store``, made the default) to a connection of
    its own, so any number of these and ibdb's own reads can be open in one process; a write
    through it fails. Close it (``con.close()``) before writing to the store from the same
    process (``Ibdb.run``, ``Ibdb.estimate``): DuckDB refuses a writer while it is attached.
    """
    import duckdb

    from ibdb.store.database import Store
    from ibdb.store.files import store_failure

    path = str(db)
    if path == ":memory:" or not Path(path).exists():
        raise StoreError(f"{path}: no such store. Create one with `ibdb --db {path} init` "
                         "(or Ibdb(db).run(spec)); connect() only reads.")
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH ? AS {ATTACHED_AS} (READ_ONLY)", [path])
        con.execute(f"USE {ATTACHED_AS}")
    except duckdb.Error as exc:
        con.close()
        raise store_failure(path, exc, opening=True) from None
    return Store.over(con, path, read_only=True, functions=True).con
