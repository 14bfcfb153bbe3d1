"""The estimate row, defined once: what an estimator returns, what the ``ib_*`` SQL functions
return as a STRUCT, and what the ``estimates`` table stores.

An estimator returns :class:`Estimate` values (a method's own fields); a stored row adds the run
context around them (:func:`estimate_row`). The SQL types of both come from here:
``ESTIMATE_FIELDS`` is the functions' STRUCT, ``ESTIMATE_COLUMNS`` the table (a test checks it
against ``DESCRIBE estimates`` of the table ``schemas/`` creates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ibdb.core.errors import EstimateError


@dataclass(frozen=True)
class Estimate:
    """One estimate of inductive bias at one eps."""

    method: str  # a name in ibdb.core.methods.METHODS (stamped by Method.estimate)
    method_version: str
    eps: float
    bits: float  # point estimate in bits; for bound == 'lower', the lower bound itself
    lower_bits: float | None  # interval in bits (None where not available)
    upper_bits: float | None
    bound: str  # 'point', 'lower' when bits is only a lower bound, 'upper' for an upper one
    n: int  # number of losses used (0 for exact)
    params: dict[str, Any] = field(default_factory=dict)  # JSON-able fit parameters
    diagnostics: dict[str, Any] = field(default_factory=dict)  # JSON-able


_SQL_TYPES = {"str": "VARCHAR", "float": "DOUBLE", "float | None": "DOUBLE", "int": "BIGINT",
              "dict[str, Any]": "JSON"}

# The SQL type of each field of an Estimate, in field order (JSON: stored as JSON text).
ESTIMATE_FIELDS: dict[str, str] = {f.name: _SQL_TYPES[str(f.type)] for f in fields(Estimate)}

# One row of the `estimates` table, in table order: the run context, the Estimate's fields, the
# digest of the loss set it was computed from (computed_at is filled by the store).
ESTIMATE_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR",
    "loss": "VARCHAR",
    **ESTIMATE_FIELDS,
    "loss_set_hash": "VARCHAR",
    "computed_at": "TIMESTAMP WITH TIME ZONE",
    "loss_set": "VARCHAR",
}


def estimate_row(est: Estimate, *, run_id: str, loss: str, loss_set: str | None,
                 loss_set_hash: str) -> dict[str, Any]:
    """The stored row of ``est`` (every column but computed_at)."""
    return {"run_id": run_id, "loss": loss,
            **{name: getattr(est, name) for name in ESTIMATE_FIELDS},
            "loss_set_hash": loss_set_hash, "loss_set": loss_set}


def check_eps(eps: Sequence[float] | float) -> list[float]:
    """``eps`` as a list of floats: one number or a non-empty list of them, each finite and > 0
    (a target error). The one check of eps, at every way in: the CLI and the Python API (through
    the facade), the estimators and the SQL functions."""
    import numpy as np  # (not at import: `ibdb sql` reads this module's columns)

    try:
        values = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    except (TypeError, ValueError):
        values = np.empty((0, 0))
    if values.ndim != 1 or values.size == 0:
        raise EstimateError(
            f"eps must be one number or a non-empty list of numbers, got {eps!r}; e.g. "
            "eps=[0.01, 0.05, 0.1] (target test MSEs)."
        )
    bad = [float(v) for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise EstimateError(
            f"eps must be finite and > 0 (a target test MSE), got {bad[0]!r}; pass positive "
            "targets such as eps=[0.01, 0.05]."
        )
    return [float(v) for v in values]
