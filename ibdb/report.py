"""`ibdb report`: figures and a Markdown summary of stored runs, read from the store.

Two stages, so the store is open only while it is read: :func:`collect` reads everything a
report shows (losses, stored estimates, fitted parameters, spectra) into plain arrays, and
:func:`write_report` draws the figures (:mod:`ibdb.plots`) and writes ``report.md``. The data
each figure plots are kept on the returned :class:`Report`, so a test (or a user) can check them
against SQL over the store. Nothing here resamples or re-estimates: curves are stored estimate
rows, and densities come from stored fit parameters or the stored gp spectrum. A gp run recorded
as not interpolating its training data is marked wherever it is shown (runs table, every
estimates row, figure titles and legends, sweep points): its estimates are not of the definition.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ibdb.columns import LOSS_NAMES, LOSS_UNITS
from ibdb.errors import IbdbError
from ibdb.methods import METHODS, Method
from ibdb.spectrum import gp_loss_distribution
from ibdb.store import Store

LOSS_TEXT = LOSS_UNITS
LOSS_SHORT = {"test_mse": "test MSE", "test_error": "test 0-1 error"}
# Spec fields that do not change what a run measures: a sweep is a difference in any other one.
_IGNORED_SPEC_KEYS = ("name", "experiment", "description", "eps", "chunk_size")
N_DENSITY_POINTS = 400
# How a gp run whose posterior mean misses a training target (runs.runner_info 'interpolates'
# false) is marked wherever the report shows it: its hypotheses do not fit the training set, so
# its bits are not -log2 P[loss <= eps | fits the training data].
NOT_INTERPOLATING = "does not interpolate"
NOT_OF_DEFINITION = "estimates are not of the definition"


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


@dataclass(frozen=True)
class SweepSeries:
    """One space's runs along the swept field: IB at each shared eps against the field."""

    space: str  # the space's name ('' when the runs share one space)
    run_ids: list[str]
    x: np.ndarray  # the field's value per run, ascending
    bits: dict[tuple[str, float], np.ndarray]  # (method, eps) -> bits per run
    bound: dict[tuple[str, float], tuple[str, ...]]
    flags: tuple[str | None, ...] = ()  # per run: RunInfo.flag (marked on the figure)


@dataclass(frozen=True)
class Sweep:
    """Runs that differ in one numeric spec field (within each space, when they differ in the
    space too): e.g. IB against n_train, or against a task's dimension, per space."""

    field: str  # dotted path in the spec, e.g. 'task.n_train'
    series: list[SweepSeries]


@dataclass
class ReportData:
    """Everything a report shows, read from the store by :func:`collect`."""

    loss: str
    runs: list[RunInfo]
    curves: dict[str, list[Curve]]
    panels: dict[str, LossPanel]
    sweep: Sweep | None
    notes: list[str] = field(default_factory=list)


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
            bins: int = 50) -> ReportData:
    """Read what a report of ``run_ids`` (default: every run) on ``loss`` shows."""
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
    for info in data.runs:
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
                              f"{_misses(info)}: its hypotheses do not fit the training set, so "
                              f"its {NOT_OF_DEFINITION}. Lower the jitter, or change the "
                              "bandwidth or amplitude (e.g. marginal_likelihood).")
        panel = _loss_panel(store, info, loss, curves, bins)
        if panel is None:
            data.notes.append(f"run {info.run_id} holds no {loss} values of hypotheses that fit "
                              "the training data: no histogram.")
        else:
            data.panels[info.run_id] = panel
    data.sweep = _sweep(data.runs, data.curves)
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


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k not in _IGNORED_SPEC_KEYS:
                out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def _sweep(runs: list[RunInfo], curves: dict[str, list[Curve]]) -> Sweep | None:
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


# -- writing ------------------------------------------------------------------------------------


def write_report(data: ReportData, out_dir: str | Path) -> Report:
    """Draw the figures into ``out_dir`` and write ``report.md`` beside them."""
    require_matplotlib()
    from ibdb import plots

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file; name a folder for the report.")
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    for run_id, panel in data.panels.items():
        figures[f"loss_hist_{run_id}"] = plots.loss_histogram(
            panel, _label(data, run_id), out / f"loss_hist_{run_id}.png",
            flag=_figure_flag(data, run_id))
    for run_id, curves in data.curves.items():
        figures[f"ib_vs_eps_{run_id}"] = plots.ib_vs_eps(
            curves, data.loss, _label(data, run_id), out / f"ib_vs_eps_{run_id}.png",
            flag=_figure_flag(data, run_id))
    if len(data.curves) > 1:
        labels = {r.run_id: r.label if r.flag is None else f"{r.label} ({r.flag})"
                  for r in data.runs}
        figures["compare_ib_vs_eps"] = plots.compare_runs(
            data.curves, labels, data.loss, out / "compare_ib_vs_eps.png")
    if data.sweep is not None:
        name = "sweep_" + data.sweep.field.replace(".", "_")
        figures[name] = plots.sweep(data.sweep, data.loss, out / f"{name}.png")
    markdown = out / "report.md"
    markdown.write_text(render_markdown(data, {k: p.name for k, p in figures.items()}),
                        encoding="utf-8")
    return Report(out_dir=out, markdown=markdown, figures=figures, data=data)


def _label(data: ReportData, run_id: str) -> str:
    return next(f"{r.label} ({run_id})" for r in data.runs if r.run_id == run_id)


def _figure_flag(data: ReportData, run_id: str) -> str | None:
    """The line under a figure's title for a run that does not interpolate, else None."""
    flag = next(r.flag for r in data.runs if r.run_id == run_id)
    return None if flag is None else f"({flag}: {NOT_OF_DEFINITION})"


def _misses(info: RunInfo) -> str:
    if info.interp_error is None:
        return ""
    return f" (its posterior mean misses a training target by {info.interp_error:.3g})"


def _interpolation_cell(info: RunInfo) -> str:
    if info.flag is not None:
        return f"**{info.flag}**"
    if info.interpolates:
        return "yes" if info.interp_error is None else f"yes (residual {info.interp_error:.3g})"
    return "not recorded" if info.space_kind == "gp" and info.test_mse_of_mean is not None \
        else "-"


def format_bits(bits: float, lower: float, upper: float, bound: str) -> str:
    """A table cell: '8.24 [7.14, 8.55]', '>= 10.1' (lower bound), '<= 1.1e+09' (upper)."""
    if math.isnan(bits):
        return "n/a"
    text = "inf" if math.isinf(bits) else f"{bits:.3g}" if bits < 1e4 else f"{bits:.3e}"
    if bound == "lower":
        return ">= " + text
    if bound == "upper":
        return "<= " + text
    if not (math.isnan(lower) or math.isnan(upper)):
        return f"{text} [{lower:.3g}, {upper:.3g}]"
    return text


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _num(value: float | int | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def render_markdown(data: ReportData, figures: dict[str, str]) -> str:
    """The report's Markdown: units, the run summary, estimates per run, figures and notes."""
    short = LOSS_SHORT[data.loss]
    out = ["# ibdb report", "",
           f"Loss: **{LOSS_TEXT[data.loss]}**. Inductive bias in **bits** = "
           f"-log2 P[{short} <= eps] among hypotheses that fit the training data. "
           "`>=` marks a lower bound (no sample at or below eps), `<=` the 2023 upper bound; "
           "[a, b] is the stored 95 % interval ("
           + METHODS.interval_legend(sorted({c.method for cs in data.curves.values()
                                              for c in cs})) + ").", "", "## Runs", ""]
    header = ["run", "label", "space", "n_train", "n_test", "outputs", "hypotheses",
              "not fitted (excluded)", f"mean {short}", f"min {short}", "wall (s)"]
    rows = [[f"`{r.run_id}`", r.label, r.space_kind, _num(r.n_train, "d"), _num(r.n_test, "d"),
             _num(r.n_outputs, "d"), str(r.n_stored), str(r.n_not_fitted), _num(r.mean_loss),
             _num(r.min_loss), _num(r.wall_seconds, ".1f")] for r in data.runs]
    gp = [r for r in data.runs if r.space_kind == "gp"
          and (r.test_mse_of_mean is not None or r.interpolates is not None)]
    if gp:  # a column only where some run records it (gp runs)
        header.append("interpolates training data")
        for row, r in zip(rows, data.runs, strict=True):
            row.append(_interpolation_cell(r))
    out += [_md_table(header, rows), ""]
    if any(r.flag is not None for r in data.runs):
        out += [f"A gp run that **{NOT_INTERPOLATING}** its training data has a posterior mean "
                "that misses a training target by the residual shown: its hypotheses do not "
                f"fit the training set, so its {NOT_OF_DEFINITION} (-log2 P[loss <= eps] among "
                "hypotheses that fit the training data). Its rows and figures are marked.", ""]
    parts = [r for r in data.runs
             if r.test_mse_of_mean is not None and r.test_mse_spread is not None]
    if parts:
        out += ["### Expected test MSE: the mean hypothesis and the spread around it", "",
                "The expected test MSE of a fitted hypothesis = the mean hypothesis's test MSE + "
                "the spread of the hypotheses around it: for a gp run the posterior mean, from "
                "the run's spectrum; for a network run the mean network (the average of the "
                "fitted networks' predictions), from the stored networks.",
                "", _md_table(
                    ["run", "label", "mean hypothesis", "its test MSE", "spread",
                     "expected test MSE", "interpolates training data"],
                    [[f"`{r.run_id}`", r.label,
                      "posterior mean" if r.space_kind == "gp" else "mean network",
                      _num(r.test_mse_of_mean), _num(r.test_mse_spread),
                      _num(r.test_mse_of_mean + r.test_mse_spread),
                      _interpolation_cell(r)] for r in parts]), ""]
    for info in data.runs:
        curves = data.curves.get(info.run_id)
        if not curves:
            continue
        flag = info.flag
        if flag is None:
            out += [f"## Estimates: {info.label} (`{info.run_id}`)", ""]
        else:
            out += [f"## Estimates: {info.label} (`{info.run_id}`, {flag})", "",
                    f"**Warning: this gp run {NOT_INTERPOLATING} its training data**"
                    f"{_misses(info)}: its hypotheses do not fit the training set, so these "
                    f"{NOT_OF_DEFINITION}.", ""]
        grid = sorted({float(e) for c in curves for e in c.eps}, reverse=True)
        cells = {(c.method, float(e)): (b, lo, hi, s, st) for c in curves
                 for e, b, lo, hi, s, st in zip(c.eps, c.bits, c.lower, c.upper, c.bound,
                                                c.stale, strict=True)}
        body = []
        for e in grid:
            line = [f"{e:.4g}"]
            for c in curves:
                cell = cells.get((c.method, e))
                line.append("-" if cell is None else
                            format_bits(*cell[:4]) + (" (stale)" if cell[4] else ""))
            if flag is not None:  # on every row, so that no row is read without it
                line.append(f"{NOT_INTERPOLATING}: {NOT_OF_DEFINITION}")
            body.append(line)
        header = [f"eps ({short})", *[f"{c.method} (bits)" for c in curves]]
        out += [_md_table(header + (["note"] if flag is not None else []), body), ""]
    if figures:
        out += ["## Figures", ""]
        for key, name in figures.items():
            out += [f"![{key}]({name})", ""]
    if data.sweep is not None:
        for series in data.sweep.series:
            where = f" on space {series.space}" if series.space else ""
            flagged = [f"`{r}` ({f})" for r, f in zip(series.run_ids, series.flags,
                                                       strict=False) if f is not None]
            marked = (f" Marked on it (crossed out): {', '.join(flagged)}; {NOT_OF_DEFINITION}."
                      if flagged else "")
            out += [f"The runs{where} differ in one spec field, `{data.sweep.field}` "
                    f"({', '.join(f'{v:g}' for v in series.x)}): see the sweep figure.{marked}",
                    ""]
    if data.notes:
        out += ["## Notes", "", *[f"- {n}" for n in data.notes], ""]
    return "\n".join(out)
