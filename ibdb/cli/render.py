"""How the CLI shows things: progress (bars on a terminal, throttled lines elsewhere), the
tables of inductive bias that `ibdb run` and `ibdb estimate` print, and plain-text tables.

Only the CLI imports this module; it writes through click.
"""

from __future__ import annotations

import decimal
import math
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from ibdb.core.methods import METHODS
from ibdb.progress import INTERVAL_ENV, ProgressLines, interval_from
from ibdb.report.format import format_bits

if TYPE_CHECKING:
    from ibdb.api import Ibdb

UNITS = {
    "test_mse": "inductive bias in bits = -log2 P[test MSE <= eps]; test MSE is the mean squared "
                "error over test points and outputs against one-hot targets",
    "test_error": "inductive bias in bits = -log2 P[test 0-1 error <= eps]",
}
STALE_MARK = "*"
MAX_CELL_CHARS = 60  # a table cell of `ibdb sql` (JSON columns would make rows ~1000 wide)


class ProgressBars:
    """Renders the facade's progress callbacks to stderr: on a terminal a click progress bar
    per label; otherwise (a log file, a pipe, a notebook) :class:`ibdb.progress.ProgressLines`,
    one line at most every ``IBDB_PROGRESS_INTERVAL`` seconds (default 10; 0: every update)
    and a final line per label. A context manager: leaving it ends the bar or writes the
    pending final lines."""

    def __init__(self, *, interactive: bool | None = None) -> None:
        self._bar: Any = None
        self._label: str | None = None
        self._done = 0
        self._interactive = sys.stderr.isatty() if interactive is None else interactive
        self._lines = None if self._interactive else ProgressLines(
            lambda line: click.echo(line, err=True),
            interval=interval_from(os.environ.get(INTERVAL_ENV)))

    def update(self, label: str, done: int, total: int) -> None:
        if self._lines is not None:
            self._lines(label, done, total)
            return
        if label != self._label:
            self.close()
            self._label, self._done = label, 0
            self._bar = click.progressbar(length=total, label=label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar, self._label = None, None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo_run_report(api: Ibdb, report: Any) -> None:
    n_new, n_failed = len(report.executed), len(report.failed)
    failed = f", {n_failed} failed" if n_failed else ""
    click.echo(f"{len(report.planned)} run(s): {n_new} sampled, "
               f"{len(report.planned) - n_new - n_failed} already stored{failed}; "
               f"store: {api.db}")
    if report.ingest is not None:
        click.echo(f"ingested {report.ingest.hypotheses_inserted} hypotheses from "
                   f"{report.ingest.shards_ingested} shard file(s)")
    if report.refreshed_estimates:
        click.echo(f"recomputed {report.refreshed_estimates} stale estimate(s) (their run's "
                   "samples changed after they were computed)")
    for line in report.skipped_estimates:
        click.echo(f"skipped: {line}", err=True)
    echo_ib_tables(api, [p.run_id for p in report.planned])


def echo_ib_tables(api: Ibdb, run_ids: list[str], loss: str = "test_mse") -> None:
    """Print each run's stored estimates of ``loss`` as a table of eps against method.

    A stale estimate (computed before the run's samples changed, e.g. before the run was
    extended from 4000 to 5000 hypotheses; the ``stale`` column of ``ib_estimates``) is never
    shown silently under the new count: `run` and `estimate` recompute stale estimates first
    (their ``refresh``), and any that remain (``estimate --no-refresh``, or a method that failed
    on the new samples) get a trailing ``*`` and a line under the table saying what it means
    and how to recompute them."""
    if not run_ids:
        return
    rows = api.ib_table(run_ids, loss)
    if not rows:
        return
    counts = api.fit_counts(run_ids)
    facts = api.loss_decomposition(run_ids)
    by_run: dict[str, list[tuple]] = {}
    for row in rows:
        by_run.setdefault(row[0], []).append(row)
    shown = sorted({r[2] for r in rows})
    click.echo(f"\n{UNITS[loss]}; '>=' marks a lower bound (no sample at or below eps), '<=' the "
               f"2023 upper bound; [a, b]: 95% interval ({METHODS.interval_legend(shown)}).")
    for run_id, run_rows in by_run.items():
        found = {r[2] for r in run_rows}
        methods = [m for m in METHODS.names() if m in found] + sorted(found - set(METHODS.names()))
        grid = sorted({r[3] for r in run_rows}, reverse=True)
        cell = {(r[2], r[3]): r for r in run_rows}
        body = []
        n_stale = 0
        for eps in grid:
            line = [f"{eps:.4g}"]
            for m in methods:
                r = cell.get((m, eps))
                text = "-" if r is None else format_bits(r[4], r[5], r[6], r[7])
                if r is not None and r[8]:  # stale
                    text += " " + STALE_MARK
                    n_stale += 1
                line.append(text)
            body.append(line)
        click.echo(f"\nrun {run_id}  {run_rows[0][1]}  "
                   f"({_run_note(run_id, counts, facts, loss)})")
        eps_label = "eps (test MSE)" if loss == "test_mse" else "eps (0-1 error)"
        click.echo(table([eps_label, *[f"{m} (bits)" for m in methods]], body))
        if n_stale:
            click.echo(f"{STALE_MARK} stale ({n_stale} value(s)): computed before this run's "
                       "samples changed (e.g. it gained hypotheses), so not of the count above; "
                       f"`ibdb estimate --run {run_id}` recomputes them.")


def _run_note(run_id: str, counts: dict[str, tuple[int, int]], facts: dict[str, tuple],
              loss: str) -> str:
    n_stored, n_not_fitted = counts.get(run_id, (0, 0))
    note = (f"{n_stored} hypotheses; {n_not_fitted} did not fit the training data and are "
            "excluded" if n_not_fitted else f"{n_stored} hypotheses")
    if run_id in facts:
        of_mean, spread, interpolates, residual, mean_of = facts[run_id]
        if loss == "test_mse":
            note += (f"; expected test MSE {of_mean + spread:.3g} = {mean_of}'s "
                     f"{of_mean:.3g} + spread {spread:.3g}")
        if interpolates is False:
            note += (f"; WARNING: does not interpolate its training data (a residual "
                     f"of {residual:.3g}), so these are not bits of the space")
    return note


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float in it (nested in lists, structs, maps)
    replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def json_value(value: Any) -> Any:
    # DuckDB hands back Decimal for numeric literals, and dates/UUIDs as objects.
    return float(value) if isinstance(value, decimal.Decimal) else str(value)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "NULL" if value is None else str(value)


def table(header: list[str], rows: list[list[str]], numeric: list[bool] | None = None) -> str:
    """Plain-text table; numeric columns align right, others left."""
    numeric = numeric or [True] * len(header)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join((str(c).rjust(w) if num else str(c).ljust(w))
                        for c, w, num in zip(r, widths, numeric, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)
