"""The Markdown of ``ibdb report`` (report.md) from the data :func:`ibdb.report.collect` read.

Pure text: no store, no matplotlib. Tables of the runs and of each run's stored estimates, the
figures with their captions, the sweep and the notes.
"""

from __future__ import annotations

from ibdb.core.methods import METHODS
from ibdb.report.format import format_bits
from ibdb.report.model import (
    LOSS_SHORT,
    LOSS_TEXT,
    NOT_INTERPOLATING,
    NOT_OF_DEFINITION,
    ReportData,
    RunInfo,
    missed_by,
)


def _escape(text: str) -> str:
    """Text shown as written in Markdown (a label may hold '_' or '*'): its markup escaped."""
    return "".join("\\" + c if c in "\\`*_[]<>" else c for c in text)


def _interpolation_cell(info: RunInfo) -> str:
    if info.flag is not None:
        return f"**{info.flag}**"
    if info.interpolates:
        return "yes" if info.interp_error is None else f"yes (residual {info.interp_error:.3g})"
    return "not recorded" if info.space_kind == "gp" and info.test_mse_of_mean is not None \
        else "-"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _num(value: float | int | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def render_markdown(data: ReportData, figures: dict[str, str],
                    captions: dict[str, str] | None = None) -> str:
    """The report's Markdown: units, the run summary, estimates per run, figures and notes.

    ``figures`` maps a figure's key to its file name, ``captions`` its key to the caption shown
    under it (:attr:`ibdb.report.collect.PlannedFigure.caption`: what it shows, of which runs by
    label).
    """
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
                    f"{missed_by(info)}: its hypotheses do not fit the training set, so these "
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
                line.append("-" if cell is None else format_bits(*cell[:4], exponent_digits=3)
                            + (" (stale)" if cell[4] else ""))
            if flag is not None:  # on every row, so that no row is read without it
                line.append(f"{NOT_INTERPOLATING}: {NOT_OF_DEFINITION}")
            body.append(line)
        header = [f"eps ({short})", *[f"{c.method} (bits)" for c in curves]]
        out += [_md_table(header + (["note"] if flag is not None else []), body), ""]
    if figures:
        out += ["## Figures", ""]
        for key, name in figures.items():
            caption = (captions or {}).get(key, key)
            out += [f"![{_escape(caption)}]({name})", "", f"*Figure: {_escape(caption)}.*", ""]
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
