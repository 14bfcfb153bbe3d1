"""Estimators as SQL functions, registered on every store connection.

DuckDB has no Python aggregate functions, so a function receives a whole loss set as a list::

    SELECT run_id, ib_fit(list(test_mse ORDER BY hypothesis_id), 0.05, 'ncx2') AS est
    FROM losses WHERE fitted IS NOT FALSE GROUP BY run_id;      -- any method reading losses

    SELECT run_id, ib_exact(list(eigenvalue ORDER BY component),
                            list(residual_sq ORDER BY component),
                            any_value(n_test), any_value(dof), 0.05) AS est
    FROM gp_components JOIN runs USING (run_id) GROUP BY run_id;

    SELECT run_id, ib_bound(task_statistics::VARCHAR, 0.05) AS est FROM runs;

    SELECT run_id, ib_splitting(list(struct_pack(repeat, level, particle, threshold, rho, loss,
                                                 fitted, chain, parent, step, accepted,
                                                 n_evaluations)), 0.05) AS est
    FROM splitting_particles GROUP BY run_id;

There is one function per kind of input (:data:`ibdb.core.methods.SOURCES`); ``ib_fit`` takes the
method by name from the registry, while ``ib_exact``, ``ib_bound`` and ``ib_splitting`` run the
registered method that reads their input. All return the same STRUCT as a row of the
``estimates`` table (params and diagnostics as JSON text) and call the very functions ``ibdb
estimate`` uses, so the numbers are identical. Registering them imports no estimator: that
happens on the first call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import duckdb
from duckdb import sqltypes

from ibdb.core.errors import EstimateError
from ibdb.core.estimate import ESTIMATE_FIELDS
from ibdb.core.methods import METHODS

if TYPE_CHECKING:
    from ibdb.core.estimate import Estimate

# The functions' STRUCT: an Estimate's fields (params and diagnostics as JSON text)
ESTIMATE_STRUCT = {name: getattr(sqltypes, "VARCHAR" if sql == "JSON" else sql)
                   for name, sql in ESTIMATE_FIELDS.items()}


def estimate_struct(est: Estimate) -> dict[str, Any]:
    out = {name: getattr(est, name) for name in ESTIMATE_STRUCT}
    out["params"] = json.dumps(est.params, sort_keys=True)
    out["diagnostics"] = json.dumps(est.diagnostics, sort_keys=True)
    return out


def _one(source_name: str, source: Any, eps: float, method: str | None = None
         ) -> dict[str, Any]:
    if method is None:  # the function of a source without a method argument
        readers = METHODS.reading(source_name)
        if not readers:
            raise EstimateError(f"no registered method reads the {source_name}.")
        chosen = readers[0]
    else:
        chosen = METHODS.get(method)
        if chosen.reads != source_name:
            raise EstimateError(
                f"method {method!r} reads the {chosen.reads.replace('_', ' ')}; ib_fit takes "
                f"the methods that read losses: "
                f"{', '.join(m.name for m in METHODS.reading(source_name))}.")
    (est,) = chosen.estimate(source, [float(eps)])
    return estimate_struct(est)


def _ib_fit(losses: list[float], eps: float, method: str) -> dict[str, Any]:
    import numpy as np

    return _one("losses", np.asarray(losses, dtype=np.float64), eps, method)


def _ib_exact(eigenvalues: list[float], residual_sq: list[float], n_test: int, n_outputs: int,
              eps: float) -> dict[str, Any]:
    spectrum = {"eigenvalues": eigenvalues, "residual_sq": residual_sq, "n_test": n_test,
                "n_outputs": n_outputs}
    return _one("spectrum", spectrum, eps)


def _ib_bound(task_statistics: str, eps: float) -> dict[str, Any]:
    return _one("task_statistics", json.loads(task_statistics), eps)


def _ib_splitting(particles: list[dict[str, Any]], eps: float) -> dict[str, Any]:
    from ibdb.stats.levels import LevelRecord

    by_repeat: dict[int, list[dict[str, Any]]] = {}
    for p in particles:
        by_repeat.setdefault(int(p["repeat"]), []).append({**p, "index": p["particle"]})
    repeats = [LevelRecord.from_rows(rows) for _, rows in sorted(by_repeat.items())]
    return _one("levels", repeats, eps)


# name -> (function, argument types) per source; the STRUCT result is shared.
_DOUBLES = duckdb.list_type(sqltypes.DOUBLE)
FUNCTIONS: dict[str, tuple[Callable[..., dict[str, Any]], list[Any]]] = {
    "ib_fit": (_ib_fit, [_DOUBLES, sqltypes.DOUBLE, sqltypes.VARCHAR]),
    "ib_exact": (_ib_exact, [_DOUBLES, _DOUBLES, sqltypes.BIGINT, sqltypes.BIGINT,
                             sqltypes.DOUBLE]),
    "ib_bound": (_ib_bound, [sqltypes.VARCHAR, sqltypes.DOUBLE]),
    # a list of splitting_particles rows (the table's columns as a STRUCT), any order
    "ib_splitting": (_ib_splitting, [duckdb.list_type(duckdb.struct_type({
        "repeat": sqltypes.INTEGER, "level": sqltypes.INTEGER, "particle": sqltypes.BIGINT,
        "threshold": sqltypes.DOUBLE, "rho": sqltypes.DOUBLE, "loss": sqltypes.DOUBLE,
        "fitted": sqltypes.BOOLEAN, "chain": sqltypes.BIGINT, "parent": sqltypes.BIGINT,
        "step": sqltypes.INTEGER, "accepted": sqltypes.BOOLEAN,
        "n_evaluations": sqltypes.BIGINT})), sqltypes.DOUBLE]),
}


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Make ``ib_fit``, ``ib_exact``, ``ib_bound`` and ``ib_splitting`` callable from SQL."""
    result = duckdb.struct_type(ESTIMATE_STRUCT)
    for name, (function, arguments) in FUNCTIONS.items():
        con.create_function(name, function, arguments, result, side_effects=False)
