"""`ibdb report`: figures and a Markdown summary of stored runs, read from the store.

Two stages, so the store is open only while it is read: :func:`collect` reads everything a
report shows (losses, stored estimates, fitted parameters, spectra) into plain arrays, and
:func:`write_report` draws the figures (:mod:`ibdb.plots`, planned by :func:`figure_plan`) and
writes ``report.md`` (:mod:`ibdb.report_markdown`). Both take a ``progress(label, done, total)``
callback. Runs that differ in one spec field make a sweep (:mod:`ibdb.sweep`). Figures and
captions name runs by label (``experiment/task/space``), with a short id where two runs share
one (:func:`run_names`). The data each figure plots are kept on the returned :class:`Report`,
so a test (or a user) can check them against SQL over the store. Nothing here resamples or
re-estimates: curves are stored estimate rows, and densities come from stored fit parameters or
the stored gp spectrum. A gp run recorded as not interpolating its training data is marked
wherever it is shown (runs table, every estimates row, figure titles and legends, sweep points):
its estimates are not of the definition.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ibdb.columns import LOSS_NAMES, LOSS_UNITS
from ibdb.errors import IbdbError
from ibdb.methods import METHODS, Method
from ibdb.spectrum import gp_loss_distribution
from ibdb.store import Store
from ibdb.sweep import Sweep, find_sweep

if TYPE_CHECKING:
    from ibdb.progress import Progress  # progress(label, done, total)

LOSS_TEXT = LOSS_UNITS
LOSS_SHORT = {"test_mse": "test MSE", "test_error": "test 0-1 error"}
N_DENSITY_POINTS = 400
# How a gp run whose posterior mean misses a training target (runs.runner_info 'interpolates'
# false) is marked wherever the report shows it: its hypotheses do not fit the training set, so
# its bits are not -log2 P[loss <= eps | fits the training data].
NOT_INTERPOLATING = "does not interpolate"
NOT_OF_DEFINITION = "estimates are not of the definition"
SHORT_ID_LENGTH = 8  # hex digits of a run id shown beside a label that two runs share


class ReportError(IbdbError):
    """A report cannot be made (no such run, nothing stored, matplotlib missing)."""


@dataclass(frozen=True)
class RunInfo:
    """One row of the run summary table."""

    run_id: str
    label: str
    space_kind: str
    n_train: int | None
    n_test: int | None
    n_outputs: int | None
    n_stored: int
    n_not_fitted: int
    mean_loss: float | None
    min_loss: float | None
    wall_seconds: float | None
    spec: dict[str, Any]
    # gp and network runs (None for others): the expected test MSE of a hypothesis = the mean's
    # test MSE + the spread around it; whether the posterior mean interpolates the training
    # targets and its largest training residual. None where not recorded (runs older than the
    # check): such a run is not reported as one that does not interpolate.
    test_mse_of_mean: float | None = None
    test_mse_spread: float | None = None
    interpolates: bool | None = None
    interp_error: float | None = None

    @property
    def flag(self) -> str | None:
        """'does not interpolate, residual 0.667' for a gp run recorded as not interpolating its
        training data; None otherwise (interpolating, not recorded, or not a gp run)."""
        if self.interpolates is not False:
            return None
        if self.interp_error is None:
            return NOT_INTERPOLATING
        return f"{NOT_INTERPOLATING}, residual {self.interp_error:.3g}"


@dataclass(frozen=True)
class Curve:
    """One method's stored IB-vs-eps points for one run (bits; NaN where a row has none)."""

    run_id: str
    method: str
    eps: np.ndarray
    bits: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    bound: tuple[str, ...]  # per point: 'point', 'lower' or 'upper'
    stale: np.ndarray


@dataclass(frozen=True)
class Density:
    """A density of the loss drawn over the histogram: ``y`` (per unit loss) at ``x``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    closed_form: bool = False  # the exact law (drawn thin, on top), not a fitted model


@dataclass(frozen=True)
class LossPanel:
    """What the loss histogram of one run shows."""

    run_id: str
    loss: str
    values: np.ndarray  # the losses of hypotheses that fit, by hypothesis id
    counts: np.ndarray  # histogram counts over `edges`
    edges: np.ndarray
    densities: list[Density]
    eps: np.ndarray  # the eps of the run's stored estimates (else the spec's)


@dataclass
class ReportData:
    """Everything a report shows, read from the store by :func:`collect`."""

    loss: str
    runs: list[RunInfo]
    curves: dict[str, list[Curve]]
    panels: dict[str, LossPanel]
    sweep: Sweep | None
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> dict[str, str]:
        """run_id -> the name figures and captions show (:func:`run_names`)."""
        return run_names(self.runs)

    def info(self, run_id: str) -> RunInfo:
        return next(r for r in self.runs if r.run_id == run_id)


def run_names(runs: list[RunInfo]) -> dict[str, str]:
    """run_id -> its label, e.g. 'quickstart/digits-300/rbf-gp'; where several runs share a
    label, each with the short id that tells them apart: 'quickstart/digits-300/rbf-gp
    (1a2b3c4d)' (longer where the first digits of two ids agree)."""
    by_label: dict[str, list[str]] = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r.run_id)
    names = {}
    for label, ids in by_label.items():
        if len(set(ids)) == 1:
            names[ids[0]] = label
            continue
        n = SHORT_ID_LENGTH
        while n < max(map(len, ids)) and len({i[:n] for i in ids}) < len(set(ids)):
            n += 1
        names.update({i: f"{label} ({i[:n]})" for i in ids})
    return names


@dataclass
class Report:
    """The files written and the data behind them."""

    out_dir: Path
    markdown: Path
    figures: dict[str, Path]  # figure key -> PNG path
    data: ReportData

    @property
    def files(self) -> list[Path]:
        return [self.markdown, *self.figures.values()]


def require_matplotlib() -> None:
    """Raise :class:`ReportError` with the install command unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError("ibdb report draws its figures with matplotlib, which is not "
                          "installed. Install it with `pip install 'ibdb[report]'` (or "
                          "`pip install matplotlib`).") from None


# -- collecting ---------------------------------------------------------------------------------


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


# -- writing ------------------------------------------------------------------------------------


def missed_by(info: RunInfo) -> str:
    """' (its posterior mean misses a training target by 0.667)', or '' where not recorded."""
    if info.interp_error is None:
        return ""
    return f" (its posterior mean misses a training target by {info.interp_error:.3g})"


@dataclass(frozen=True)
class PlannedFigure:
    """One figure of a report: its file stem, its caption in report.md, and how to draw it."""

    key: str
    caption: str
    draw: Callable[[], Any]  # -> matplotlib.figure.Figure, not yet saved


def figure_plan(data: ReportData) -> list[PlannedFigure]:
    """The figures of a report, in the order report.md shows them, each drawn only when asked
    (a test can draw one and read its title and legend without saving it). Needs matplotlib."""
    require_matplotlib()
    from ibdb import plots

    names = data.names
    flagged = {r.run_id: names[r.run_id] + ("" if r.flag is None else f" ({r.flag})")
               for r in data.runs}
    plan = []
    for run_id, panel in data.panels.items():
        plan.append(PlannedFigure(
            f"loss_hist_{run_id}", f"Loss histogram and fitted densities: {flagged[run_id]}",
            lambda p=panel, r=run_id: plots.loss_histogram(p, names[r],
                                                           flag=_figure_flag(data, r))))
    for run_id, curves in data.curves.items():
        plan.append(PlannedFigure(
            f"ib_vs_eps_{run_id}", f"Inductive bias against eps: {flagged[run_id]}",
            lambda c=curves, r=run_id: plots.ib_vs_eps(c, data.loss, names[r],
                                                       flag=_figure_flag(data, r))))
    if len(data.curves) > 1:
        plan.append(PlannedFigure(
            "compare_ib_vs_eps", "Inductive bias against eps, runs compared: "
            + "; ".join(flagged[r] for r in data.curves),
            lambda: plots.compare_runs(data.curves, flagged, data.loss)))
    if data.sweep is not None:
        sweep = data.sweep
        runs = [names[r] for s in sweep.series for r in s.run_ids]
        plan.append(PlannedFigure(
            "sweep_" + sweep.field.replace(".", "_"),
            f"Inductive bias against {sweep.field}: {'; '.join(runs)}",
            lambda: plots.sweep(sweep, data.loss)))
    return plan


def write_report(data: ReportData, out_dir: str | Path, *,
                 progress: Progress | None = None) -> Report:
    """Draw the figures into ``out_dir`` and write ``report.md`` beside them.

    ``progress(file name, done, total)`` is called after each figure is written and after
    report.md, the last (done == total, total = the figures + 1)."""
    require_matplotlib()
    from ibdb import plots
    from ibdb.report_markdown import render_markdown

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file; name a folder for the report.")
    out.mkdir(parents=True, exist_ok=True)
    plan = figure_plan(data)
    total = len(plan) + 1
    figures: dict[str, Path] = {}
    for done, planned in enumerate(plan, 1):
        figures[planned.key] = plots.save(planned.draw(), out / f"{planned.key}.png")
        if progress is not None:
            progress(figures[planned.key].name, done, total)
    markdown = out / "report.md"
    markdown.write_text(render_markdown(data, {k: p.name for k, p in figures.items()},
                                        {p.key: p.caption for p in plan}), encoding="utf-8")
    if progress is not None:
        progress(markdown.name, total, total)
    return Report(out_dir=out, markdown=markdown, figures=figures, data=data)


def _figure_flag(data: ReportData, run_id: str) -> str | None:
    """The line under a figure's title for a run that does not interpolate, else None."""
    flag = data.info(run_id).flag
    return None if flag is None else f"({flag}: {NOT_OF_DEFINITION})"
