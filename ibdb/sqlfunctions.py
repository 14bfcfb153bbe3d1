"""Estimators as SQL functions, registered on every store connection.

DuckDB has no Python aggregate functions, so a function receives a whole loss set as a list::

    SELECT run_id, ib_fit(list(test_mse ORDER BY hypothesis_id), 0.05, 'ncx2') AS est
    FROM losses WHERE fitted IS NOT FALSE GROUP BY run_id;      -- also 'empirical', 'paper'

    SELECT run_id, ib_exact(list(eigenvalue ORDER BY component),
                            list(residual_sq ORDER BY component),
                            any_value(n_test), any_value(dof), 0.05) AS est
    FROM gp_components JOIN runs USING (run_id) GROUP BY run_id;

    SELECT run_id, ib_bound(task_statistics::VARCHAR, 0.05) AS est FROM runs;

All return the same STRUCT as a row of the ``estimates`` table (params and diagnostics as JSON
text). They call the very functions ``ibdb estimate`` uses, so the numbers are identical.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import numpy as np
from duckdb import sqltypes

from ibdb.bound import TaskStatistics
from ibdb.estimators import Estimate, estimate_bound, estimate_exact, estimate_losses
from ibdb.spectrum import gp_loss_distribution

ESTIMATE_STRUCT = {
    "method": sqltypes.VARCHAR,
    "method_version": sqltypes.VARCHAR,
    "eps": sqltypes.DOUBLE,
    "bits": sqltypes.DOUBLE,
    "lower_bits": sqltypes.DOUBLE,
    "upper_bits": sqltypes.DOUBLE,
    "bound": sqltypes.VARCHAR,
    "n": sqltypes.BIGINT,
    "params": sqltypes.VARCHAR,
    "diagnostics": sqltypes.VARCHAR,
}


def estimate_struct(est: Estimate) -> dict[str, Any]:
    return {
        "method": est.method,
        "method_version": est.method_version,
        "eps": est.eps,
        "bits": est.bits,
        "lower_bits": est.lower_bits,
        "upper_bits": est.upper_bits,
        "bound": est.bound,
        "n": est.n,
        "params": json.dumps(est.params, sort_keys=True),
        "diagnostics": json.dumps(est.diagnostics, sort_keys=True),
    }


def _ib_fit(losses: list[float], eps: float, method: str) -> dict[str, Any]:
    (est,) = estimate_losses(np.asarray(losses, dtype=np.float64), [eps], method)
    return estimate_struct(est)


def _ib_exact(eigenvalues: list[float], residual_sq: list[float], n_test: int, n_outputs: int,
              eps: float) -> dict[str, Any]:
    dist = gp_loss_distribution(np.asarray(eigenvalues), np.asarray(residual_sq),
                                n_test=int(n_test), n_outputs=int(n_outputs))
    (est,) = estimate_exact(dist, [eps])
    return estimate_struct(est)


def _ib_bound(task_statistics: str, eps: float) -> dict[str, Any]:
    (est,) = estimate_bound(TaskStatistics(**json.loads(task_statistics)), [eps])
    return estimate_struct(est)


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Make ``ib_fit``, ``ib_exact`` and ``ib_bound`` callable from SQL on ``con``."""
    result = duckdb.struct_type(ESTIMATE_STRUCT)
    doubles = duckdb.list_type(sqltypes.DOUBLE)
    con.create_function("ib_fit", _ib_fit, [doubles, sqltypes.DOUBLE, sqltypes.VARCHAR], result,
                        side_effects=False)
    con.create_function("ib_exact", _ib_exact,
                        [doubles, doubles, sqltypes.BIGINT, sqltypes.BIGINT, sqltypes.DOUBLE],
                        result, side_effects=False)
    con.create_function("ib_bound", _ib_bound, [sqltypes.VARCHAR, sqltypes.DOUBLE], result,
                        side_effects=False)
