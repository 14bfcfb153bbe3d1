"""The ``ibdb`` command line: each command parses options, makes one facade call, renders it.

One rule for every command: expected failures (ibdb's own errors, :class:`ibdb.errors.IbdbError`,
and the environment's: files, disk, memory, a damaged store) become one short paragraph and exit
code 2; anything else is a bug, reported in one line naming the exception, exit code 1. With
``--verbose`` the traceback is printed too.
"""

from __future__ import annotations

import csv
import decimal
import io
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import click

from ibdb.api import DEFAULT_DB, Ibdb
from ibdb.columns import LOSS_NAMES
from ibdb.errors import shorten
from ibdb.failures import fail
from ibdb.methods import METHODS

UNITS = {
    "test_mse": "inductive bias in bits = -log2 P[test MSE <= eps]; test MSE is the mean squared "
                "error over test points and outputs against one-hot targets",
    "test_error": "inductive bias in bits = -log2 P[test 0-1 error <= eps]",
}


class _MethodChoice(click.ParamType):
    """A registered estimation method, checked against the registry when the option is parsed
    (so a method registered after this module loaded is accepted too)."""

    name = "method"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(METHODS.names()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> str:
        if value in METHODS:
            return value
        self.fail(f"{value!r} is not one of {', '.join(METHODS.names())}.", param, ctx)


def _method_help() -> str:
    defaults = [m.name for m in METHODS.defaults()]
    asked = [m.name for m in METHODS if not m.default]
    return (f"Repeatable [default: {', '.join(defaults)} where they apply"
            + (f"; {', '.join(asked)} only when asked" if asked else "") + "].")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 -- the one handler: every failure ends here
            fail(ctx, exc)



@click.group(cls=_Group)
@click.option("--db", envvar="IBDB_DB", default=DEFAULT_DB, show_default=True,
              help="DuckDB store file (env IBDB_DB).")
@click.option("--shards", envvar="IBDB_SHARDS", default=None,
              help="Folder for shard files (env IBDB_SHARDS) [default: <db name>.shards next to "
                   "the store].")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present, else CPU), cpu, or cuda[:N].")
@click.option("-v", "--verbose", is_flag=True,
              help="Log progress details to stderr, and print the traceback of any error.")
@click.version_option(package_name="ibdb")
@click.pass_context
def main(ctx: click.Context, db: str, shards: str | None, device: str, verbose: bool) -> None:
    """Measure the inductive bias a task requires, relative to a hypothesis space.

    Write a spec (YAML), `ibdb run` it, and query the store with `ibdb sql`. Inductive bias is
    reported in bits: -log2 of the probability that a hypothesis fitting the training data has
    test MSE at most eps.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Ibdb(db, shards=shards, device=device)


@main.command()
@click.pass_obj
def init(api: Ibdb) -> None:
    """Create an empty store (or upgrade an existing one)."""
    click.echo(f"store ready: {api.init()}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.pass_obj
def validate(api: Ibdb, spec: str) -> None:
    """Check SPEC and its data without running anything."""
    experiment, runs = api.validate(spec)
    click.echo(f"{spec}: valid; experiment {experiment.name!r} has {len(runs)} run(s)")
    for label, run_id in runs:
        click.echo(f"  {run_id}  {label}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.pass_obj
def plan(api: Ibdb, spec: str) -> None:
    """Show what `ibdb run SPEC` would sample (nothing for runs already stored)."""
    planned = api.plan(spec)
    todo = [p for p in planned if len(p.missing_ids)]
    for p in planned:
        n_missing = len(p.missing_ids)
        state = f"{n_missing} of {p.spec.budget.n_hypotheses} hypotheses to sample" \
            if n_missing else "stored, nothing to do"
        click.echo(f"  {p.run_id}  {p.spec.label}: {state}")
    click.echo(f"{len(todo)} of {len(planned)} run(s) to sample.")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--no-estimate", is_flag=True, help="Only sample and ingest.")
@click.option("--no-ingest", is_flag=True,
              help="Only write shards (to --shards); load them later with `ibdb ingest`. "
                   "Lets several processes sample into one shared shard folder.")
@click.option("--executor", default="local", show_default=True,
              type=click.Choice(["local", "ray", "slurm"]),
              help="Where chunks are sampled: this process; one Ray task per chunk (ibdb[ray]); "
                   "or a Slurm job array through submitit (ibdb[slurm]). Shards go to --shards, "
                   "which workers must share; this process ingests them after.")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (e.g. auto or ray://host:10001) [default: start a local "
                   "one].")
@click.pass_obj
def run(api: Ibdb, spec: str, no_estimate: bool, no_ingest: bool, executor: str,
        ray_address: str | None) -> None:
    """Sample SPEC's missing hypotheses, ingest them, and estimate at the spec's eps."""
    with _ProgressBars() as bars:
        report = api.run(spec, progress=bars.update, estimate=not no_estimate,
                         ingest=not no_ingest, executor=executor, ray_address=ray_address)
    if no_ingest:
        click.echo(f"{len(report.executed)} run(s) sampled into {api.shard_root}; load them "
                   f"with `ibdb ingest {api.shard_root}`")
    else:
        _echo_run_report(api, report)
    if report.failed:  # after what did run: its work is stored and shown
        click.echo(f"Error: {len(report.failed)} of {len(report.planned)} run(s) failed; the "
                   "others were sampled" + ("" if no_ingest else ", stored and estimated")
                   + ". Fix these and run the spec again (stored runs are not resampled):",
                   err=True)
        for run_id, label, message in report.failed:
            click.echo(f"  {run_id}  {label}: {shorten(message, 1000)}", err=True)
        sys.exit(2)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.pass_obj
def ingest(api: Ibdb, paths: tuple[str, ...]) -> None:
    """Load shard folders (a run folder, or a root holding run folders) into the store."""
    report = api.ingest(list(paths))
    click.echo(f"ingested {report.hypotheses_inserted} hypotheses from "
               f"{report.shards_ingested} shard file(s); skipped {report.shards_skipped} "
               f"already ingested; runs: "
               f"{', '.join(report.runs) or 'none'}")


@main.command()
@click.option("--method", "methods", multiple=True, type=_MethodChoice(), help=_method_help())
@click.option("--eps", "eps", multiple=True, type=float,
              help="Target test MSE (repeatable) [default: the spec's eps].")
@click.option("--run", "run_ids", multiple=True, help="Run id (repeatable) [default: all].")
@click.option("--loss", default="test_mse", show_default=True,
              type=click.Choice(LOSS_NAMES),
              help="Which recorded loss: test MSE against one-hot targets, or the 0-1 error.")
@click.option("--check-exact", is_flag=True,
              help="Check each exact value by importance sampling; stores its standard error.")
@click.pass_obj
def estimate(api: Ibdb, methods: tuple[str, ...], eps: tuple[float, ...],
             run_ids: tuple[str, ...], loss: str, check_exact: bool) -> None:
    """Recompute estimates from stored samples (never resamples) and store them."""
    report = api.estimate(run_ids=list(run_ids) or None, methods=list(methods) or None,
                          eps=list(eps) or None, loss=loss, check_exact=check_exact)
    for line in report.skipped:
        click.echo(f"skipped: {line}", err=True)
    click.echo(f"stored {len(report.rows)} estimate(s)")
    _echo_ib_tables(api, sorted({r["run_id"] for r in report.rows}), loss)


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--write", is_flag=True, help="Open the store for writing (default: read-only).")
@click.pass_obj
def sql(api: Ibdb, query: str, fmt: str, write: bool) -> None:
    """Run QUERY on the store and print the last statement's rows.

    QUERY may hold several statements separated by ';'; with --write they run in one
    transaction, so an error writes nothing. Tables: specs, runs, shards, losses, spectra,
    estimates, loss_set_digests, splitting_particles. Views: run_summary, ib_estimates,
    method_agreement, stale_estimates, loss_sets, loss_set_contents, gp_components,
    splitting_levels, mean_network. Functions: ib_fit(losses,
    eps, method), ib_exact(eigenvalues, residual_sq, n_test, n_outputs, eps),
    ib_bound(task_statistics, eps), ib_splitting(list of splitting_particles rows, eps); each
    returns a struct with bits.
    'DESCRIBE <name>' shows a table's or view's columns. The SQL reaches only the store: no
    files (COPY, EXPORT DATABASE, ATTACH, read_parquet) and no settings; `ibdb export` writes
    files."""
    from ibdb.store import require_statements

    require_statements(query)  # (before the store is opened: a mistake writes nothing)
    columns, rows = api.sql(query, write=write)
    if fmt == "json":
        # NaN and +-inf are not JSON: they become null, so that every JSON parser reads it
        click.echo(json.dumps([dict(zip(columns, _finite(r), strict=True)) for r in rows],
                              default=_json_value, indent=1, allow_nan=False))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        click.echo(buf.getvalue(), nl=False)
    elif columns:
        numeric = [all(isinstance(r[i], int | float | decimal.Decimal) or r[i] is None
                       for r in rows) for i in range(len(columns))]
        cells = [[_cell(v) for v in r] for r in rows]
        cut = any(len(c) > MAX_CELL_CHARS for r in cells for c in r)
        cells = [[c if len(c) <= MAX_CELL_CHARS else c[:MAX_CELL_CHARS - 3] + "..." for c in r]
                 for r in cells]
        click.echo(_table(columns, cells, numeric=numeric))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
                   + (f"; cells over {MAX_CELL_CHARS} characters are cut: --format csv or json "
                      "shows them whole" if cut else "") + ")")


@main.command()
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (replaced if it exists).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "json"]), default=None,
              help="Default: from the file's suffix (.parquet, .csv, .json).")
@click.pass_obj
def export(api: Ibdb, source: str, out: Path, fmt: str | None) -> None:
    """Write SOURCE's rows to a file: a table or view name (e.g. losses, ib_estimates) or one
    SELECT query, as Parquet, CSV or JSON (one array of objects). The store is read only."""
    n = api.export(source, out, fmt=fmt)
    click.echo(f"wrote {n} row{'s' if n != 1 else ''} to {out}")


@main.command()
@click.option("--fix", is_flag=True,
              help="First repair what is safe to repair, and say what was done: write the "
                   "store's views back, and remove temporary stores left by killed processes. "
                   "Shards are never touched.")
@click.pass_obj
def check(api: Ibdb, fix: bool) -> None:
    """List incomplete runs, orphaned shards and left-over files, stale estimates and
    duplicate rows.

    Exit code 0 when every check is clean, 1 when any found a problem."""
    if fix:
        from ibdb.checks import fix_store

        for line in fix_store(api.db, api.shard_root):
            click.echo(f"fixed    {line}")
    results = api.check()
    for result in results:
        if result.ok:
            click.echo(f"ok       {result.name}")
            continue
        click.echo(f"PROBLEM  {result.name}: {len(result.rows)} row(s). {result.about}")
        click.echo(_table(result.columns, [[_cell(v) for v in r] for r in result.rows],
                          numeric=[False] * len(result.columns)))
    missing_views = getattr(results, "missing_views", [])
    if missing_views:
        click.echo(f"PROBLEM  the store file lacks the view(s) {', '.join(missing_views)}. "
                   "ibdb re-creates its views each time it opens the store, but other DuckDB "
                   "clients miss them: `ibdb check --fix` writes them back.")
    bad = [r.name for r in results if not r.ok]
    click.echo(f"{len(bad)} of {len(results)} check(s) found problems"
               + (f": {', '.join(bad)}" if bad else "")
               + (f"; the store lacks {len(missing_views)} view(s)" if missing_views else ""))
    if bad or missing_views:
        sys.exit(1)


@main.command()
@click.pass_obj
def quickstart(api: Ibdb) -> None:
    """Run the bundled digits example (writes examples/quickstart.yaml if missing)."""
    with _ProgressBars() as bars:
        spec_path, written, report = api.quickstart(progress=bars.update)
    if written:
        click.echo(f"wrote {spec_path}")
    _echo_run_report(api, report)


@main.command()
@click.option("--run", "run_ids", multiple=True, help="Run id (repeatable) [default: all].")
@click.option("--out", default="report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for report.md and the PNG figures.")
@click.option("--loss", default="test_mse", show_default=True,
              type=click.Choice(LOSS_NAMES),
              help="Which recorded loss the figures and tables show.")
@click.pass_obj
def report(api: Ibdb, run_ids: tuple[str, ...], out: str, loss: str) -> None:
    """Write PNG figures and a Markdown summary of stored runs (needs matplotlib).

    Per run: the loss histogram with fitted densities and eps marked, and inductive bias (bits)
    against eps per method; for several runs, a comparison, and IB against the one spec field
    they differ in (e.g. n_train). Reads stored estimates; run `ibdb estimate` first to change
    methods or eps.
    """
    result = api.report(run_ids=list(run_ids) or None, out=out, loss=loss)
    for note in result.data.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {len(result.files)} file(s) to {result.out_dir}:")
    for path in result.files:
        click.echo(f"  {path}")


@main.command()
@click.option("--out", default="schemas/experiment.schema.json", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the JSON Schema.")
def schema(out: str) -> None:
    """Write the JSON Schema of spec files."""
    from ibdb.specs import experiment_json_schema

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(experiment_json_schema(), indent=2, sort_keys=True) + "\n")
    click.echo(f"wrote {path}")


# -- rendering ---------------------------------------------------------------------------------


class _ProgressBars:
    """Renders the facade's progress callbacks: a bar per run on a terminal, else one line."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._label: str | None = None
        self._done = 0
        self._interactive = sys.stderr.isatty()

    def update(self, label: str, done: int, total: int) -> None:
        if not self._interactive:
            if done == total:
                click.echo(f"sampled {label}: {total} hypotheses", err=True)
            return
        if label != self._label:
            self.close()
            self._label, self._done = label, 0
            self._bar = click.progressbar(length=total, label=label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> _ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _echo_run_report(api: Ibdb, report: Any) -> None:
    n_new = len(report.executed)
    click.echo(f"{len(report.planned)} run(s): {n_new} sampled, "
               f"{len(report.planned) - n_new} already stored; store: {api.db}")
    if report.ingest is not None:
        click.echo(f"ingested {report.ingest.hypotheses_inserted} hypotheses from "
                   f"{report.ingest.shards_ingested} shard file(s)")
    for line in report.skipped_estimates:
        click.echo(f"skipped: {line}", err=True)
    _echo_ib_tables(api, [p.run_id for p in report.planned])


def _echo_ib_tables(api: Ibdb, run_ids: list[str], loss: str = "test_mse") -> None:
    if not run_ids:
        return
    rows = api.ib_table(run_ids, loss)
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
        for eps in grid:
            line = [f"{eps:.4g}"]
            for m in methods:
                r = cell.get((m, eps))
                line.append("-" if r is None else _bits(r[4], r[5], r[6], r[7]))
            body.append(line)
        n_stored, n_not_fitted = counts.get(run_id, (0, 0))
        fit_note = (f"; {n_not_fitted} did not fit the training data and are excluded"
                    if n_not_fitted else "")
        if run_id in facts:
            of_mean, spread, interpolates, residual, mean_of = facts[run_id]
            if loss == "test_mse":
                fit_note += (f"; expected test MSE {of_mean + spread:.3g} = {mean_of}'s "
                             f"{of_mean:.3g} + spread {spread:.3g}")
            if interpolates is False:
                fit_note += (f"; WARNING: does not interpolate its training data (a residual "
                             f"of {residual:.3g}), so these are not bits of the space")
        click.echo(f"\nrun {run_id}  {run_rows[0][1]}  ({n_stored} hypotheses{fit_note})")
        eps_label = "eps (test MSE)" if loss == "test_mse" else "eps (0-1 error)"
        click.echo(_table([eps_label, *[f"{m} (bits)" for m in methods]], body))


def _bits(bits: float | None, lower: float | None, upper: float | None, bound: str) -> str:
    if bits is None or math.isnan(bits):
        return "n/a"
    text = f"{bits:.3g}" if bits < 1e4 else f"{bits:.4e}"
    if bound == "lower":
        return ">= " + text
    if bound == "upper":
        return "<= " + text
    if lower is not None and upper is not None:
        return f"{text} [{lower:.3g}, {upper:.3g}]"
    return text


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float in it (nested in lists, structs, maps)
    replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _json_value(value: Any) -> Any:
    # DuckDB hands back Decimal for numeric literals, and dates/UUIDs as objects.
    return float(value) if isinstance(value, decimal.Decimal) else str(value)


MAX_CELL_CHARS = 60  # a table cell of `ibdb sql` (JSON columns would make rows ~1000 wide)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "NULL" if value is None else str(value)


def _table(header: list[str], rows: list[list[str]], numeric: list[bool] | None = None) -> str:
    """Plain-text table; numeric columns align right, others left."""
    numeric = numeric or [True] * len(header)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join((str(c).rjust(w) if num else str(c).ljust(w))
                        for c, w, num in zip(r, widths, numeric, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)
