"""Sweeps: runs of a report that differ in one numeric spec field, with IB against that field.

:func:`find_sweep` finds the field (e.g. ``task.n_train``, or ``space.bandwidth``) over all the
runs or, failing that, within each group of runs that share a space (a task sweep run on several
spaces), and collects the stored IB of each run at the eps they share. :mod:`ibdb.report.collect`
keeps
the result on its data (:class:`ibdb.report.model.Sweep`); :func:`ibdb.report.figures.sweep` draws
it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ibdb.core.methods import METHODS
from ibdb.report.model import Curve, RunInfo, Sweep, SweepSeries

# Spec fields that do not change what a run measures: a sweep is a difference in any other one.
_IGNORED_SPEC_KEYS = ("name", "experiment", "description", "eps", "chunk_size")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A stored spec as dotted fields. A gp space's kernel fields read as the space's own
    (``space.bandwidth``, and ``space.kernel`` its kind), as runs stored before kernels had
    their own models wrote them, so that old and new runs of one sweep line up."""
    if isinstance(value, dict):
        if prefix == "space.kernel." and "kind" in value:
            value = {"kernel": value["kind"], **{k: v for k, v in value.items() if k != "kind"}}
            prefix = "space."
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k not in _IGNORED_SPEC_KEYS:
                out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def find_sweep(runs: list[RunInfo], curves: dict[str, list[Curve]]) -> Sweep | None:
    """The one numeric spec field in which the runs differ, with IB at their shared eps.

    First over all runs (a sweep of a task or a space field); failing that, within groups of
    runs that share a space (a task sweep run on several spaces, e.g. dimension x kernel).
    """
    if len(runs) < 2:
        return None
    flat = [_flatten(r.spec) for r in runs]
    key = _single_numeric_difference(flat)
    if key is not None:
        series = _series("", runs, flat, key, curves)
        return Sweep(field=key, series=[series]) if series else None
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(flat):
        space = json.dumps({k: v for k, v in f.items() if k.startswith("space.")}, sort_keys=True)
        groups.setdefault(space, []).append(i)
    members = [g for g in groups.values() if len(g) > 1]
    keys = {_single_numeric_difference([flat[i] for i in g]) for g in members}
    if len(members) < 2 or len(keys) != 1 or None in keys:
        return None
    key = keys.pop()
    found = [_series(runs[g[0]].spec["space"].get("name", ""), [runs[i] for i in g],
                     [flat[i] for i in g], key, curves) for g in members]
    found = sorted((s for s in found if s is not None), key=lambda s: s.space)
    return Sweep(field=key, series=found) if found else None


def _single_numeric_difference(flat: list[dict[str, Any]]) -> str | None:
    keys = set().union(*flat)
    differing = [k for k in sorted(keys) if len({json.dumps(f.get(k)) for f in flat}) > 1]
    if len(differing) != 1:
        return None
    values = [f.get(differing[0]) for f in flat]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return differing[0]


def _series(space: str, runs: list[RunInfo], flat: list[dict[str, Any]], key: str,
            curves: dict[str, list[Curve]]) -> SweepSeries | None:
    values = [f[key] for f in flat]
    order = np.argsort(values, kind="stable")
    ordered = [runs[i].run_id for i in order]
    bits: dict[tuple[str, float], np.ndarray] = {}
    bounds: dict[tuple[str, float], tuple[str, ...]] = {}
    for method in (m.name for m in METHODS if m.role != "comparison"):
        per_run = [{float(e): (float(b), s) for c in curves.get(r, []) if c.method == method
                    for e, b, s in zip(c.eps, c.bits, c.bound, strict=True)} for r in ordered]
        shared = set.intersection(*(set(p) for p in per_run))
        for e in sorted(shared, reverse=True):
            bits[(method, e)] = np.array([p[e][0] for p in per_run])
            bounds[(method, e)] = tuple(p[e][1] for p in per_run)
    if not bits:
        return None
    return SweepSeries(space=space, run_ids=ordered,
                       x=np.asarray([values[i] for i in order], dtype=np.float64),
                       bits=bits, bound=bounds, flags=tuple(runs[i].flag for i in order))
