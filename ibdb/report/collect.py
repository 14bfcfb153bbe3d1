"""Reading a report's data from the store: :func:`collect` reads everything a report shows
(losses, stored estimates, fitted parameters, spectra) into the plain arrays of
:mod:`ibdb.report.model`, so that the store is open only while it is read.

Nothing here resamples or re-estimates: curves are stored estimate rows, and densities come from
stored fit parameters or the stored gp spectrum. A gp run recorded as not interpolating its
training data is noted (its estimates are not of the definition).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ibdb.core.columns import LOSS_NAMES
from ibdb.core.methods import METHODS, Method
from ibdb.report.model import (
    NOT_INTERPOLATING,
    NOT_OF_DEFINITION,
    Curve,
    Density,
    LossPanel,
    ReportData,
    ReportError,
    RunInfo,
    missed_by,
)
from ibdb.report.sweep import find_sweep
from ibdb.stats.spectrum import gp_loss_distribution
from ibdb.store.database import Store

if TYPE_CHECKING:
    from ibdb.progress import Progress  # progress(label, done, total)

N_DENSITY_POINTS = 400



def collect(store: Store, run_ids: list[str] | None = None, *, loss: str = "test_mse",
            bins: int = 50, progress: Progress | None = None) -> ReportData:
    """Read what a report of ``run_ids`` (default: every run) on ``loss`` shows.

    ``progress(name, done, total)`` is called after each run is read (its name as
    :func:`run_names` gives it; the last call has done == total)."""
    if loss not in LOSS_NAMES:
        raise ReportError(f"unknown loss {loss!r}; choose one of {', '.join(LOSS_NAMES)}.")
    known = store.run_ids()
    if not known:
        raise ReportError(f"{store.path} holds no runs; run a spec first (`ibdb run SPEC`).")
    wanted = list(dict.fromkeys(run_ids)) if run_ids else known
    missing = [r for r in wanted if r not in known]
    if missing:
        raise ReportError(f"run {missing[0]!r} is not in {store.path}. List the runs with "
                          "`ibdb sql \"SELECT run_id, experiment, task_name, space_name FROM "
                          "run_summary\"`.")
    data = ReportData(loss=loss, runs=[_run_info(store, r, loss) for r in wanted], curves={},
                      panels={}, sweep=None)
    names = data.names
    for done, info in enumerate(data.runs, 1):
        curves = _curves(store, info.run_id, loss)
        if curves:
            data.curves[info.run_id] = curves
        else:
            data.notes.append(f"run {info.run_id} has no stored estimates of the {loss}; make "
                              f"them with `ibdb estimate --run {info.run_id} --loss {loss}`.")
        if any(c.stale.any() for c in curves):
            data.notes.append(f"run {info.run_id}: some estimates are stale (its losses changed "
                              f"after they were computed); recompute with `ibdb estimate --run "
                              f"{info.run_id}`.")
        if info.flag is not None:
            data.notes.append(f"run {info.run_id} {NOT_INTERPOLATING} its training data"
                              f"{missed_by(info)}: its hypotheses do not fit the training set, so "
                              f"its {NOT_OF_DEFINITION}. Lower the jitter, or change the "
                              "bandwidth or amplitude (e.g. marginal_likelihood).")
        panel = _loss_panel(store, info, loss, curves, bins)
        if panel is None:
            data.notes.append(f"run {info.run_id} holds no {loss} values of hypotheses that fit "
                              "the training data: no histogram.")
        else:
            data.panels[info.run_id] = panel
        if progress is not None:
            progress(names[info.run_id], done, len(data.runs))
    data.sweep = find_sweep(data.runs, data.curves)
    return data


def _run_info(store: Store, run_id: str, loss: str) -> RunInfo:
    _, (row,) = store.query(
        f"SELECT rs.experiment || '/' || rs.task_name || '/' || rs.space_name, s.space_kind, "
        f"rs.n_train, rs.n_test, rs.n_outputs, rs.n_stored, rs.n_not_fitted, rs.wall_seconds, "
        f"s.spec, (SELECT avg({loss}) FROM losses WHERE run_id = ? AND fitted IS NOT FALSE), "
        f"(SELECT min({loss}) FROM losses WHERE run_id = ? AND fitted IS NOT FALSE), "
        f"rs.test_mse_of_mean, rs.test_mse_spread, rs.interpolates, rs.interp_error "
        f"FROM run_summary rs JOIN specs s USING (run_id) WHERE run_id = ?",
        [run_id, run_id, run_id])
    return RunInfo(run_id=run_id, label=row[0], space_kind=row[1], n_train=row[2],
                   n_test=row[3], n_outputs=row[4], n_stored=row[5], n_not_fitted=row[6],
                   wall_seconds=row[7], spec=json.loads(row[8]), mean_loss=row[9],
                   min_loss=row[10], test_mse_of_mean=row[11], test_mse_spread=row[12],
                   interpolates=row[13], interp_error=row[14])


def _curves(store: Store, run_id: str, loss: str) -> list[Curve]:
    _, rows = store.query(
        "SELECT method, eps, bits, lower_bits, upper_bits, bound, stale FROM ib_estimates "
        "WHERE run_id = ? AND loss = ? ORDER BY method, eps", [run_id, loss])
    by_method: dict[str, list[tuple]] = {}
    for r in rows:
        by_method.setdefault(r[0], []).append(r)
    known = METHODS.names()
    order = [m for m in known if m in by_method] + sorted(set(by_method) - set(known))

    def col(rs: list[tuple], i: int) -> np.ndarray:
        return np.array([np.nan if r[i] is None else r[i] for r in rs], dtype=np.float64)

    return [Curve(run_id=run_id, method=m, eps=col(by_method[m], 1), bits=col(by_method[m], 2),
                  lower=col(by_method[m], 3), upper=col(by_method[m], 4),
                  bound=tuple(r[5] for r in by_method[m]),
                  stale=np.array([bool(r[6]) for r in by_method[m]]))
            for m in order]


def _fit_params(store: Store, run_id: str, loss: str, method: str) -> dict[str, Any] | None:
    # Every eps of one fit stores the same parameters; prefer a fresh, recent row.
    _, rows = store.query(
        "SELECT params FROM ib_estimates WHERE run_id = ? AND loss = ? AND method = ? "
        "ORDER BY stale, computed_at DESC, eps LIMIT 1", [run_id, loss, method])
    row = rows[0] if rows else None
    return json.loads(row[0]) if row and row[0] else None


def _loss_panel(store: Store, info: RunInfo, loss: str, curves: list[Curve], bins: int
                ) -> LossPanel | None:
    values = store.losses(info.run_id, loss)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    eps = np.unique(np.concatenate([c.eps for c in curves])) if curves else \
        np.asarray(info.spec["task"].get("eps", []), dtype=np.float64)
    counts, edges = np.histogram(values, bins=bins)
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    # The axis reaches down to eps within one sample range below the samples (the tail the
    # estimates extrapolate into); eps further away are listed on the figure instead.
    near = eps[(eps >= lo - span) & (eps < lo)]
    x_lo = float(near.min()) - 0.05 * span if near.size else lo - 0.05 * span
    grid = np.linspace(max(x_lo, 0.0), hi + 0.05 * span, N_DENSITY_POINTS)
    grid = grid[grid > 0]
    densities = []
    # fitted densities under the closed form, which is drawn last (on top)
    for method in sorted((m for m in METHODS if m.density), key=lambda m: m.density == "spectrum"):
        density = _DENSITIES[method.density](store, info, loss, grid, method)
        if density is not None:
            densities.append(density)
    return LossPanel(run_id=info.run_id, loss=loss, values=values, counts=counts, edges=edges,
                     densities=densities, eps=eps)


def _ncx2_density(store: Store, info: RunInfo, loss: str, grid: np.ndarray, method: Method
                  ) -> Density | None:
    """A scaled ncx2 density from a method's stored fit parameters (df, nc, scale)."""
    p = _fit_params(store, info.run_id, loss, method.name)
    if p is None:
        return None
    y = stats.ncx2.pdf(grid, p["df"], p["nc"], scale=p["scale"]) if p["nc"] > 0 else \
        stats.chi2.pdf(grid, p["df"], scale=p["scale"])
    return Density(name=f"{method.density_label}: df={p['df']:.4g}, nc={p['nc']:.4g}, "
                        f"scale={p['scale']:.3g}", x=grid, y=np.asarray(y, dtype=np.float64))


def _spectrum_density(store: Store, info: RunInfo, loss: str, grid: np.ndarray,
                      method: Method) -> Density | None:
    """The gp run's exact (generalized chi-squared) density, as the numerical derivative of its
    saddlepoint CDF: ~0.1 s for 400 points. The saddlepoint alone, not the inversion `exact`
    falls back to where few components dominate: that costs up to ~0.2 s a point (minutes for
    a figure), while the saddlepoint's error there (<= ~0.2 bits in log P) cannot be seen in a
    plotted density."""
    spectrum = store.spectrum(info.run_id) if loss == "test_mse" else None
    if spectrum is None or not info.n_test or not info.n_outputs:
        return None
    dist = gp_loss_distribution(*spectrum, n_test=info.n_test, n_outputs=info.n_outputs)
    cdf = np.exp([dist.logcdf_with_method(float(v), saddlepoint_only=True)[0] for v in grid])
    return Density(name=method.density_label, x=grid, y=np.gradient(cdf, grid),
                   closed_form=True)


_DENSITIES = {"ncx2": _ncx2_density, "spectrum": _spectrum_density}
