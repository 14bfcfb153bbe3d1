"""The ``ibdb`` command line: each command parses options, makes one facade call, renders it.

One rule for every command: expected failures (ibdb's own errors,
:class:`ibdb.core.errors.IbdbError`,
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
import sys
from pathlib import Path
from typing import Any

import click

from ibdb.api import DEFAULT_DB, Ibdb
from ibdb.cli.failures import fail
from ibdb.cli.render import (
    MAX_CELL_CHARS,
    ProgressBars,
    cell,
    echo_ib_tables,
    echo_run_report,
    finite,
    json_value,
    table,
)
from ibdb.core.columns import LOSS_NAMES
from ibdb.core.errors import shorten
from ibdb.core.methods import METHODS


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
    with ProgressBars() as bars:
        report = api.run(spec, progress=bars.update, estimate=not no_estimate,
                         ingest=not no_ingest, executor=executor, ray_address=ray_address)
    if no_ingest:
        click.echo(f"{len(report.executed)} run(s) sampled into {api.shard_root}; load them "
                   f"with `ibdb ingest {api.shard_root}`")
    else:
        echo_run_report(api, report)
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
@click.option("--refresh/--no-refresh", default=True, show_default=True,
              help="Also recompute every stale estimate of these runs (any eps, method and "
                   "loss stored before the run's samples changed, e.g. before it gained "
                   "hypotheses), so that `ibdb check` finds none.")
@click.pass_obj
def estimate(api: Ibdb, methods: tuple[str, ...], eps: tuple[float, ...],
             run_ids: tuple[str, ...], loss: str, check_exact: bool, refresh: bool) -> None:
    """Recompute estimates from stored samples (never resamples) and store them.

    `ibdb estimate --run ID` after a run gained hypotheses brings every estimate stored for
    it up to date; values still stale are marked '*' in the printed table."""
    with ProgressBars() as bars:
        report = api.estimate(run_ids=list(run_ids) or None, methods=list(methods) or None,
                              eps=list(eps) or None, loss=loss, check_exact=check_exact,
                              refresh=refresh, progress=bars.update)
    for line in report.skipped:
        click.echo(f"skipped: {line}", err=True)
    click.echo(f"stored {len(report.rows)} estimate(s)"
               + (f", {report.refreshed} of them recomputing stale ones" if report.refreshed
                  else ""))
    echo_ib_tables(api, sorted({r["run_id"] for r in report.rows} | set(run_ids)), loss)


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
    from ibdb.store.database import require_statements

    require_statements(query)  # (before the store is opened: a mistake writes nothing)
    columns, rows = api.sql(query, write=write)
    if fmt == "json":
        # NaN and +-inf are not JSON: they become null, so that every JSON parser reads it
        click.echo(json.dumps([dict(zip(columns, finite(r), strict=True)) for r in rows],
                              default=json_value, indent=1, allow_nan=False))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        click.echo(buf.getvalue(), nl=False)
    elif columns:
        numeric = [all(isinstance(r[i], int | float | decimal.Decimal) or r[i] is None
                       for r in rows) for i in range(len(columns))]
        cells = [[cell(v) for v in r] for r in rows]
        cut = any(len(c) > MAX_CELL_CHARS for r in cells for c in r)
        cells = [[c if len(c) <= MAX_CELL_CHARS else c[:MAX_CELL_CHARS - 3] + "..." for c in r]
                 for r in cells]
        click.echo(table(columns, cells, numeric=numeric))
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
        from ibdb.store.checks import fix_store

        for line in fix_store(api.db, api.shard_root):
            click.echo(f"fixed    {line}")
    results = api.check()
    for result in results:
        if result.ok:
            click.echo(f"ok       {result.name}")
            continue
        click.echo(f"PROBLEM  {result.name}: {len(result.rows)} row(s). {result.about}")
        click.echo(table(result.columns, [[cell(v) for v in r] for r in result.rows],
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
    with ProgressBars() as bars:
        spec_path, written, report = api.quickstart(progress=bars.update)
    if written:
        click.echo(f"wrote {spec_path}")
    echo_run_report(api, report)


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
    with ProgressBars() as bars:
        result = api.report(run_ids=list(run_ids) or None, out=out, loss=loss,
                            progress=bars.update)
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
    from ibdb.spec.file import experiment_json_schema

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(experiment_json_schema(), indent=2, sort_keys=True) + "\n")
    click.echo(f"wrote {path}")
