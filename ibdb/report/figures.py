"""The report's figures, drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas.

No pyplot: pyplot keeps global figure state and picks a backend from the environment, and a
library must do neither. Each public function draws one figure from data that
:mod:`ibdb.report.collect` collected and returns the :class:`~matplotlib.figure.Figure` (so that its
title and legend can be read before it is written); :func:`save` writes it as PNG. Import
this module only after :func:`ibdb.report.collect.require_matplotlib` (matplotlib is an
optional dependency).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ibdb.core.methods import METHODS

if TYPE_CHECKING:
    from ibdb.report.model import Curve, LossPanel, Sweep

FIGSIZE = (6.4, 4.2)
DPI = 100  # ~40 KB per PNG: small enough to keep in the repository's docs
_LINE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}
# Beyond this ratio of the bound to the other methods' largest value, drawing the bound would
# flatten every estimate against the axis; the report's table carries it instead.
BOUND_RATIO_SHOWN = 100.0
FLAG_COLOR = "red"  # runs that do not interpolate their training data: titles, sweep markers
_CROSS = {"marker": "x", "ms": 10, "mew": 2, "color": FLAG_COLOR, "zorder": 4}


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg canvas: no backend chosen from the environment
    return fig, fig.add_subplot()


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG; returns ``path``."""
    # No 'Software' metadata: the same data give the same bytes across matplotlib patch versions.
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _style(method: str) -> tuple[str, str]:
    """(marker, line style) of a method, from the registry (rows of a method no longer
    registered still draw)."""
    return METHODS.get(method).style if method in METHODS else ("x", "-")


def _is_comparison(method: str) -> bool:
    """A method that does not estimate the sampled space (the 2023 bound): drawn apart."""
    return method in METHODS and METHODS.get(method).role == "comparison"


def _compared(method: str) -> bool:
    """Drawn when several runs share one axis: the default methods that estimate the space."""
    return method in METHODS and METHODS.get(method).default and not _is_comparison(method)


def _loss_label(loss: str) -> str:
    return "test MSE" if loss == "test_mse" else "test 0-1 error"


def _title(ax: object, title: str, flag: str | None) -> None:
    """The title; with ``flag`` (a run that does not interpolate its training data) a second
    line that says so, and the whole title in red."""
    if flag is None:
        ax.set_title(title, fontsize=9)
    else:
        ax.set_title(f"{title}\n{flag}", fontsize=9, color=FLAG_COLOR)


def loss_histogram(panel: LossPanel, title: str, *, flag: str | None = None) -> Figure:
    """Histogram of the run's losses as a density, its fitted densities, and eps marked;
    ``flag`` marks the title of a run that does not interpolate its training data."""
    fig, ax = _figure()
    widths = np.diff(panel.edges)
    n = panel.values.size
    ax.bar(panel.edges[:-1], panel.counts / (n * widths), width=widths, align="edge",
           color="0.8", edgecolor="0.6", linewidth=0.5, label=f"{n} sampled hypotheses")
    # Fits dashed and wide, exact thin and solid on top, so that both show where they agree.
    for density, color in zip(panel.densities, ("C0", "C2", "C3"), strict=False):
        exact = density.closed_form
        ax.plot(density.x, density.y, color=color, lw=1.0 if exact else 2.0,
                ls="-" if exact else "--", zorder=3 if exact else 2, label=density.name)
    x_lo, x_hi = ax.get_xlim()
    shown = [e for e in panel.eps if x_lo <= e <= x_hi]
    hidden = [e for e in panel.eps if not x_lo <= e <= x_hi]
    for i, e in enumerate(shown):
        ax.axvline(e, color="C1", lw=0.8, ls="--", label="eps" if i == 0 else None)
    if hidden:
        ax.text(0.02, 0.97, "eps off the axis: " + ", ".join(f"{e:g}" for e in hidden),
                transform=ax.transAxes, va="top", fontsize=7)
    ax.set_xlabel(f"{_loss_label(panel.loss)} of a hypothesis that fits the training data")
    ax.set_ylabel("density (per unit loss)")
    _title(ax, title, flag)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def _eps_axis(ax: object, eps: np.ndarray) -> None:
    # A log axis when eps spans a decade or more (the paper's curves are over orders of eps).
    eps = eps[eps > 0]
    if eps.size and eps.max() / eps.min() >= 10:
        _log_axis(ax.xaxis, ax.set_xscale)


def _log_axis(axis: object, set_scale: object) -> None:
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    set_scale("log")
    # Ticks at 1, 2, 5 x 10^k labelled as plain numbers: over a decade or two the default
    # labels every minor tick in scientific notation, and the labels overlap.
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def _bits_axis(ax: object, top: float) -> None:
    # Estimates run from 0 bits (every hypothesis good enough) to thousands: symlog keeps 0.
    if top > 100:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0.0)  # bits are never negative; symlog would show a negative half


def _draw_curve(ax: object, curve: Curve, color: str, label: str) -> None:
    marker, ls = _style(curve.method)
    ok = np.isfinite(curve.bits)
    point = ok & (np.array(curve.bound) == "point")
    ax.plot(curve.eps[ok], curve.bits[ok], ls=ls, color=color, lw=1.0, alpha=0.6)
    has_ci = point & np.isfinite(curve.lower) & np.isfinite(curve.upper)
    if point.any():
        ax.errorbar(curve.eps[point], curve.bits[point], fmt=marker, color=color, ms=4,
                    yerr=None if not has_ci.any() else np.where(
                        has_ci[point], [curve.bits[point] - curve.lower[point],
                                        curve.upper[point] - curve.bits[point]], 0.0),
                    capsize=2, lw=0.8, label=label)
    # Bounds are drawn as open triangles pointing where the true value lies.
    for kind, mk, text in (("lower", "^", "lower bound"), ("upper", "v", "upper bound")):
        sel = ok & (np.array(curve.bound) == kind)
        if sel.any():
            ax.plot(curve.eps[sel], curve.bits[sel], ls="none", marker=mk, mfc="none", ms=8,
                    color=color, label=f"{label}: {text}")


def ib_vs_eps(curves: list[Curve], loss: str, title: str, *, flag: str | None = None
              ) -> Figure:
    """One run's IB-vs-eps curve per method, with intervals; lower bounds as open triangles;
    ``flag`` marks the title of a run that does not interpolate its training data."""
    fig, ax = _figure()
    others = [c for c in curves if not _is_comparison(c.method)]
    top = max([float(np.nanmax(c.bits[np.isfinite(c.bits)], initial=0.0)) for c in others],
              default=0.0)
    skipped = []
    for i, curve in enumerate(curves):
        if _is_comparison(curve.method) and others and \
                np.nanmin(curve.bits) > BOUND_RATIO_SHOWN * max(top, 1.0):
            skipped.append(curve)
            continue
        top = max(top, float(np.nanmax(np.where(np.isfinite(curve.bits), curve.bits, 0.0))))
        _draw_curve(ax, curve, f"C{i}", curve.method)
    if skipped:
        ax.text(0.02, 0.03, f"2023 upper bound not drawn: >= {np.nanmin(skipped[0].bits):.3g} "
                "bits (see report.md)", transform=ax.transAxes, fontsize=7)
    _eps_axis(ax, np.concatenate([c.eps for c in curves]))
    _bits_axis(ax, top)
    ax.set_xlabel(f"eps (target {_loss_label(loss)})")
    ax.set_ylabel(f"inductive bias (bits) = -log2 P[{_loss_label(loss)} <= eps]")
    _title(ax, title, flag)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def compare_runs(curves: dict[str, list[Curve]], labels: dict[str, str], loss: str) -> Figure:
    """IB vs eps of several runs on one axis: each run's model fit (ncx2) and exact value,
    and its empirical lower bounds; one colour per run, named in the legend by ``labels``
    (run_id -> the run's name)."""
    fig, ax = _figure()
    top = 0.0
    all_eps = []
    for i, (run_id, run_curves) in enumerate(curves.items()):
        for curve in run_curves:
            if not _compared(curve.method):
                continue
            finite = curve.bits[np.isfinite(curve.bits)]
            top = max(top, float(finite.max(initial=0.0)))
            all_eps.append(curve.eps)
            _draw_curve(ax, curve, f"C{i % 10}", f"{labels[run_id]} {curve.method}")
    if all_eps:
        _eps_axis(ax, np.concatenate(all_eps))
    _bits_axis(ax, top)
    ax.set_xlabel(f"eps (target {_loss_label(loss)})")
    ax.set_ylabel("inductive bias (bits)")
    shown = ", ".join(f"{m.name}: {m.style[0]} {_LINE_NAMES.get(m.style[1], m.style[1])}"
                      for m in METHODS if _compared(m.name))
    ax.set_title(f"runs compared ({shown})", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return fig


def sweep(data: Sweep, loss: str) -> Figure:
    """IB against the one spec field the runs differ in: colour per eps, line style per method
    (one space) or per space (several spaces, each with its first method of exact, ncx2,
    paper, empirical, so that the figure stays readable; report.md has every method). Points
    of runs that do not interpolate their training data are crossed out in red."""
    fig, ax = _figure()
    eps_values = sorted({e for s in data.series for _, e in s.bits}, reverse=True)
    space_styles = ("-", "--", ":", "-.")
    top = 0.0
    any_flagged = False
    for k, series in enumerate(data.series):
        methods = [m.name for m in METHODS if any(m.name == mm for mm, _ in series.bits)]
        if len(data.series) > 1:
            methods = methods[:1]
        for (method, e), bits in series.bits.items():
            if method not in methods:
                continue
            marker, ls = _style(method)
            if len(data.series) > 1:
                ls = space_styles[k % len(space_styles)]
            color = f"C{eps_values.index(e) % 10}"
            lower = np.array(series.bound[(method, e)]) == "lower"
            ok = np.isfinite(bits)
            top = max(top, float(bits[ok].max(initial=0.0)))
            where = f"{series.space}, " if series.space else ""
            ax.plot(series.x[ok], bits[ok], ls=ls, marker=marker, color=color, ms=4,
                    label=f"{where}{method}, eps={e:g}")
            if (lower & ok).any():
                ax.plot(series.x[lower & ok], bits[lower & ok], ls="none", marker="^",
                        mfc="none", ms=8, color=color)
            flagged = np.array([f is not None for f in series.flags], dtype=bool)
            if flagged.size == ok.size and (flagged & ok).any():
                ax.plot(series.x[flagged & ok], bits[flagged & ok], ls="none", **_CROSS)
                any_flagged = True
    if any_flagged:  # one legend entry, last
        ax.plot([], [], ls="none", label="does not interpolate (not of the definition)", **_CROSS)
    x = np.concatenate([s.x for s in data.series])
    if x.min() > 0 and x.max() / x.min() >= 10:
        _log_axis(ax.xaxis, ax.set_xscale)
    _bits_axis(ax, top)
    ax.set_xlabel(data.field)
    ax.set_ylabel(f"inductive bias (bits), {_loss_label(loss)} <= eps")
    title = f"IB against {data.field} (open triangles: empirical lower bounds)"
    _title(ax, title, "(red crosses: runs that do not interpolate their training data)"
           if any_flagged else None)
    ax.legend(fontsize=6, ncols=2 if len(ax.get_lines()) > 24 else 1)
    ax.grid(alpha=0.3)
    return fig
