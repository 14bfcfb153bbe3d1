"""`ibdb report`'s files: the figures (:mod:`ibdb.report.figures`, planned by
:func:`figure_plan`) and ``report.md`` (:mod:`ibdb.report.markdown`), from the data
:func:`ibdb.report.collect.collect` read. Figures and captions name runs by label
(``experiment/task/space``), with a short id where two runs share one
(:func:`ibdb.report.model.run_names`). The data each figure plots are kept on the returned
:class:`ibdb.report.model.Report`, so a test (or a user) can check them against SQL over the
store. A gp run recorded as not interpolating its training data is marked wherever it is shown
(runs table, every estimates row, figure titles and legends, sweep points).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibdb.report.model import NOT_OF_DEFINITION, Report, ReportData, ReportError

if TYPE_CHECKING:
    from ibdb.progress import Progress  # progress(label, done, total)


def require_matplotlib() -> None:
    """Raise :class:`ReportError` with the install command unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError("ibdb report draws its figures with matplotlib, which is not "
                          "installed. Install it with `pip install 'ibdb[report]'` (or "
                          "`pip install matplotlib`).") from None


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
    from ibdb.report import figures as plots

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
    from ibdb.report import figures as plots
    from ibdb.report.markdown import render_markdown

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
