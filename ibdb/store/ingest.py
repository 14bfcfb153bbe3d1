"""Ingest: load shard folders into the store, validated, in one transaction per call.

A collaborator of :class:`ibdb.store.database.Store`, which calls it inside a transaction on its
connection (so any failure stores nothing) and then refreshes the loss-set digests. Every
shard is checked against the sha256 in its name, its metadata, schema, run and hypothesis
range (read from the footers of all of a run's shards at once, :mod:`ibdb.store.footers`)
before any row goes in; any failure aborts the whole call, naming the file
(docs/decisions/0065-ingest-all-or-nothing.md says why).
A ledger of shard hashes (the ``shards`` table) makes re-ingesting a no-op.
"""

from __future__ import annotations

import bisect
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from ibdb.core.columns import LOSS_COLUMNS, LOSS_KEY_COLUMNS, OPTIONAL_LOSSES, REQUIRED_LOSSES
from ibdb.core.errors import ShardError, shorten
from ibdb.run import shards as shardfiles
from ibdb.store.footers import Footer, UnreadableShard, read_footers, sql_file_list

# Per-hypothesis columns a loss shard may carry besides the required losses; a shard without
# one of them (a gp run has no training loss) stores NULL there.
OPTIONAL_COLUMNS = OPTIONAL_LOSSES
REQUIRED_COLUMNS = {
    "losses": {**LOSS_KEY_COLUMNS, **{n: LOSS_COLUMNS[n].sql_type for n in REQUIRED_LOSSES}},
    "spectrum": {"run_id": "VARCHAR", "component": "INTEGER", "eigenvalue": "DOUBLE",
                 "residuals": "DOUBLE[]"},
    "levels": {"run_id": "VARCHAR", "repeat": "INTEGER", "level": "INTEGER",
               "particle": "BIGINT", "threshold": "DOUBLE", "rho": "DOUBLE", "loss": "DOUBLE",
               "fitted": "BOOLEAN", "chain": "BIGINT", "parent": "BIGINT", "step": "INTEGER",
               "accepted": "BOOLEAN", "n_evaluations": "BIGINT"},
}
_LEVEL_COLUMNS = ", ".join(REQUIRED_COLUMNS["levels"])
_ROW_KEY = {"losses": "hypothesis_id", "spectrum": "component", "levels": "particle"}


@dataclass(frozen=True)
class _Shard:
    """A validated shard (a loss shard, or a spectrum with no range) on its way in."""

    path: Path
    sha256: str
    rows: int
    first: int | None
    last: int | None
    meta: dict[str, Any]
    present: frozenset[str]  # its columns


@dataclass
class IngestReport:
    runs: list[str] = field(default_factory=list)
    shards_ingested: int = 0
    shards_skipped: int = 0
    hypotheses_inserted: int = 0


class ShardIngest:
    """Loads shards through a store's connection; the caller owns the transaction."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def ingest(self, folders: list[Path]) -> IngestReport:
        """Load run folders' shards; shards already ingested are skipped. Raises on the first
        invalid shard, naming the file (the caller's rollback then stores nothing)."""
        report = IngestReport()
        for folder in folders:
            try:
                self._ingest_run(Path(folder), report)
            except duckdb.Error as exc:
                # a shard whose footer reads but whose data pages do not (damage under a
                # checksum that matches, e.g. a file rewritten and renamed by hand): name it
                unreadable = shardfiles.first_unreadable(Path(folder))
                if unreadable is None:
                    raise  # (the store's failure: the caller's transaction says so)
                path, detail = unreadable
                raise ShardError(f"{path}: unreadable shard ({detail}); nothing was ingested. "
                                 "Delete the file and re-run to rewrite it.") from exc
        return report

    def _ingest_run(self, folder: Path, report: IngestReport) -> None:
        manifest = shardfiles.read_manifest(folder)
        run_id = manifest["run_id"]
        spec, task, prov = manifest["spec"], manifest["task"], manifest["provenance"]
        self.con.execute(
            "INSERT INTO specs (run_id, experiment, task_name, space_name, budget_name, "
            "space_kind, runner, n_hypotheses, eps, spec, identity) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
            "experiment = excluded.experiment, task_name = excluded.task_name, "
            "space_name = excluded.space_name, budget_name = excluded.budget_name, "
            "n_hypotheses = greatest(specs.n_hypotheses, excluded.n_hypotheses), "
            "eps = excluded.eps, spec = excluded.spec",
            [run_id, spec["experiment"], spec["task"]["name"], spec["space"]["name"],
             spec["budget"]["name"], spec["space"]["kind"], manifest["runner"],
             spec["budget"]["n_hypotheses"], spec["task"]["eps"], json.dumps(spec),
             json.dumps(manifest["identity"], sort_keys=True)])
        self.con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, task["n_train"], task["n_test"], task["n_outputs"], task["fingerprint"],
             json.dumps(task.get("statistics")), json.dumps(manifest["runner_info"]),
             prov["ibdb_version"], prov["torch_version"], prov["duckdb_version"],
             prov["device"], prov["host"], prov["started_at"],
             prov.get("finished_at"), prov.get("wall_seconds")])
        report.runs.append(run_id)
        for stray in shardfiles.unexpected_files(folder):
            raise ShardError(f"{stray}: not a shard name ibdb writes (expected "
                             "losses-<first>-<last>-<sha>.parquet or spectrum-<sha>.parquet); "
                             "nothing was ingested. Move the file out of the run folder.")
        spectra, paths = shardfiles.spectrum_shards(folder), shardfiles.loss_shards(folder)
        levels = shardfiles.level_shards(folder)
        for path in spectra + paths + levels:
            if not path.is_file():
                raise ShardError(_not_a_file(path))
        digests = shardfiles.file_sha256s(spectra + paths + levels)
        known = self._ledger_entries(list(digests.values()))
        spectra = [p for p in spectra if not self._is_ingested(p, digests[p], run_id, known)]
        paths = [p for p in paths if not self._is_ingested(p, digests[p], run_id, known)]
        levels = [p for p in levels if not self._is_ingested(p, digests[p], run_id, known)]
        report.shards_skipped += len(digests) - len(spectra) - len(paths) - len(levels)
        for spectrum in spectra:
            self._ingest_spectrum(spectrum, digests[spectrum], run_id, report)
        self._ingest_levels(levels, digests, run_id, report)
        shards = self._validate_losses(paths, digests, run_id,
                                       budget=spec["budget"]["n_hypotheses"])
        alone = _overlapping(paths)
        stored = _Ranges(self.con.execute(
            "SELECT first_hypothesis, last_hypothesis FROM shards WHERE run_id = ? AND "
            "kind = 'losses'", [run_id]).fetchall())
        batch = []
        for shard in shards:
            if shard.path in alone or stored.overlaps(shard.first, shard.last):
                # a chunk written twice: one by one, each checked against the rows stored
                inserted = self._insert_overlapping(shard, run_id)
                self._add_to_ledger(run_id, "losses", [shard])
                report.shards_ingested += 1
                report.hypotheses_inserted += inserted
            else:
                batch.append(shard)
        self._insert_batch(run_id, batch, report)

    # -- validation ----------------------------------------------------------------------------

    def _ledger_entries(self, digests: list[str]) -> dict[str, tuple]:
        """sha256 -> (run, first, last, path) of the given contents the ledger holds."""
        rows = self.con.execute(
            "SELECT sha256, run_id, first_hypothesis, last_hypothesis, path FROM shards "
            "WHERE sha256 IN (SELECT unnest($digests))", {"digests": digests}).fetchall()
        return {row[0]: row[1:] for row in rows}

    def _is_ingested(self, path: Path, digest: str, run_id: str,
                     known: dict[str, tuple]) -> bool:
        """Whether ``path`` is in the ledger already (a no-op); raises when its content does
        not match its name, or when its bytes are ledgered under another run or range."""
        if not digest.startswith(shardfiles.name_digest(path)):
            raise ShardError(f"{path}: its content (sha256 {digest[:16]}) does not match the "
                             "checksum in its name; the file is truncated, corrupt or was "
                             "altered. Nothing was ingested. Delete it and re-run the spec to "
                             "rewrite that chunk.")
        if digest not in known:
            return False
        # the same bytes again: a no-op when it is the same shard (re-ingest, or the folder
        # was moved), an error when the copy sits under another run or range
        entry = known[digest]
        if entry[:3] != (run_id, *(shardfiles.shard_range(path) or (None, None))):
            raise ShardError(f"{path}: a byte-for-byte copy of {entry[3]} (run {entry[0]}, "
                             f"hypotheses {entry[1]}..{entry[2]}) under another run or "
                             "range; nothing was ingested. Delete the copy.")
        return True

    def _footers(self, paths: list[Path], run_id: str, key: str) -> dict[Path, Footer]:
        try:
            return read_footers(self.con, paths, run_id=run_id, key=key)
        except UnreadableShard as exc:
            raise ShardError(f"{exc.path}: unreadable shard ({exc.detail}); nothing was "
                             "ingested. Delete the file and re-run to rewrite it.") from None
        except ValueError:  # a footer's ibdb metadata is not JSON: read them alone to name it
            for path in paths:
                try:
                    read_footers(self.con, [path], run_id=run_id, key=key)
                except (ValueError, UnreadableShard) as exc:
                    raise ShardError(f"{path}: its ibdb metadata is not JSON "
                                     f"({shorten(str(exc), 120)}); not a shard ibdb wrote. "
                                     "Nothing was ingested. Delete it and re-run the spec to "
                                     "rewrite it.") from None
            raise

    def _checked(self, path: Path, footer: Footer, run_id: str, kind: str
                 ) -> tuple[dict[str, Any], tuple[int, int | None, int | None]]:
        """A shard's metadata and (rows, min key, max key), after the checks every kind of
        shard passes: ibdb metadata present, the required columns and types, no foreign rows."""
        if footer.meta is None:
            raise ShardError(f"{path}: no ibdb metadata; not a shard ibdb wrote. Nothing was "
                             "ingested.")
        problem = shardfiles.metadata_problem(footer.meta)
        if problem:
            raise ShardError(f"{path}: its ibdb metadata {problem}; not a shard ibdb wrote. "
                             "Nothing was ingested. Delete it and re-run the spec to rewrite "
                             "it.")
        want = REQUIRED_COLUMNS[kind]
        wrong = {c: footer.columns.get(c) for c, t in want.items() if footer.columns.get(c) != t}
        if wrong:
            found = ", ".join(f"{c} {t or 'missing'}" for c, t in wrong.items())
            expected = ", ".join(f"{c} {want[c]}" for c in wrong)
            raise ShardError(f"{path}: wrong schema for a {kind} shard ({found}; expected "
                             f"{expected}); nothing was ingested. It was not written by this "
                             "ibdb: move it out of the run folder.")
        key = _ROW_KEY[kind]
        # The sha256 in its name vouches for the file, so the footer's statistics are trusted
        # (the insert re-checks the run and the rows); without them the data are scanned.
        n_foreign, n_rows, low, high = footer.stats or self.con.execute(
            f"SELECT count(*) FILTER (run_id IS DISTINCT FROM ?), count(*), min({key}), "
            f"max({key}) FROM read_parquet({sql_file_list([path])})", [run_id]).fetchone()
        if n_foreign:
            raise ShardError(f"{path}: {n_foreign} rows belong to another run than {run_id}; "
                             "nothing was ingested. Move the file to its own run folder.")
        return footer.meta, (n_rows, low, high)

    def _validate_losses(self, paths: list[Path], digests: dict[Path, str],
                         run_id: str, *, budget: int) -> list[_Shard]:
        footers = self._footers(paths, run_id, "hypothesis_id")
        shards = []
        for path in paths:
            meta, (n_rows, low, high) = self._checked(path, footers[path], run_id, "losses")
            first, last = meta.get("first_hypothesis"), meta.get("last_hypothesis")
            if type(first) is not int or type(last) is not int:
                raise ShardError(f"{path}: its ibdb metadata gives first_hypothesis "
                                 f"{shorten(repr(first), 40)} and last_hypothesis "
                                 f"{shorten(repr(last), 40)}, where ibdb writes integers; "
                                 "nothing was ingested. Delete it and re-run the spec to "
                                 "rewrite that chunk.")
            named = shardfiles.shard_range(path)
            if (first, last) != (low, high) or named != (low, high) or \
                    n_rows != last - first + 1:
                raise ShardError(f"{path}: holds hypotheses {low}..{high} in {n_rows} rows, but "
                                 f"its name says {named[0]}..{named[1]} and its metadata "
                                 f"{first}..{last}; nothing was ingested. Delete it and re-run "
                                 "the spec to rewrite that chunk.")
            if last >= budget:
                raise ShardError(
                    f"{path}: holds hypotheses {first}..{last}, beyond the run's budget of "
                    f"{budget} (ids 0..{budget - 1}: n_hypotheses in {path.parent}/"
                    f"{shardfiles.MANIFEST}); nothing was ingested. A run with a larger "
                    f"budget wrote it: re-run the spec with n_hypotheses of at least "
                    f"{last + 1} (which rewrites run.json), or delete the shard.")
            shards.append(_Shard(path, digests[path], n_rows, first, last, meta,
                                 frozenset(footers[path].columns)))
        return shards

    # -- inserting -----------------------------------------------------------------------------

    def _ingest_spectrum(self, path: Path, digest: str, run_id: str,
                         report: IngestReport) -> None:
        footer = self._footers([path], run_id, "component")[path]
        meta, (n_rows, _, _) = self._checked(path, footer, run_id, "spectrum")
        self._check_same_spectrum(path, run_id)
        self.con.execute(
            f"INSERT INTO spectra SELECT run_id, component, eigenvalue, residuals FROM "
            f"read_parquet({sql_file_list([path])}) ON CONFLICT DO NOTHING")
        self._add_to_ledger(run_id, "spectrum",
                            [_Shard(path, digest, n_rows, None, None, meta, frozenset())])
        report.shards_ingested += 1

    def _check_same_spectrum(self, path: Path, run_id: str) -> None:
        """A run has one spectrum (a function of its task and space): a second spectrum file
        (another execution, another shard folder) must describe the same one. Compared per
        component as eigenvalue and squared residual norm, to 1e-6 relative: another device or
        library may flip an eigenvector's sign (negating its residuals) or round differently,
        neither of which changes the loss distribution."""
        stored = self.con.execute("SELECT count(*) FROM spectra WHERE run_id = ?",
                                  [run_id]).fetchone()[0]
        if not stored:
            return
        n_file, n_differ = self.con.execute(
            f"WITH f AS (SELECT component, eigenvalue, list_inner_product(residuals, "
            f"residuals) AS rsq FROM read_parquet({sql_file_list([path])})), "
            "p AS (SELECT component, eigenvalue, list_inner_product(residuals, residuals) AS "
            "rsq FROM spectra WHERE run_id = $run), "
            "scale AS (SELECT max(abs(eigenvalue)) AS eig, max(abs(rsq)) AS rsq FROM p) "
            "SELECT (SELECT count(*) FROM f), count(*) FILTER (f.component IS NULL OR "
            "p.component IS NULL OR abs(f.eigenvalue - p.eigenvalue) > 1e-6 * "
            "greatest(abs(f.eigenvalue), abs(p.eigenvalue)) + 1e-12 * s.eig OR "
            "abs(f.rsq - p.rsq) > 1e-6 * greatest(abs(f.rsq), abs(p.rsq)) + 1e-12 * s.rsq "
            "OR (f.eigenvalue IS DISTINCT FROM p.eigenvalue AND (isnan(f.eigenvalue) OR "
            "isnan(p.eigenvalue)))) FROM f FULL JOIN p USING (component), scale s",
            {"run": run_id}).fetchone()
        if n_differ:
            where = self.con.execute("SELECT any_value(path) FROM shards WHERE run_id = ? AND "
                                     "kind = 'spectrum'", [run_id]).fetchone()[0]
            raise ShardError(
                f"{path}: a second spectrum of run {run_id} that differs from the one stored "
                f"(from {where or 'an earlier shard'}): {n_differ} of its components differ "
                f"({n_file} here, {stored} stored); nothing was ingested. A run's spectrum is a "
                "function of its task and space, so two executions disagree or a file is "
                "foreign: delete the wrong spectrum file.")

    def _ingest_levels(self, paths: list[Path], digests: dict[Path, str], run_id: str,
                       report: IngestReport) -> None:
        """Level shards of splitting repeats, in one statement. A level recomputed by a
        resumed run holds the same rows (ibdb.run.splitting is seeded per level): rows already
        stored are skipped after a check that they agree."""
        if not paths:
            return
        footers = self._footers(paths, run_id, "particle")
        shards = []
        for path in paths:
            meta, (n_rows, _, _) = self._checked(path, footers[path], run_id, "levels")
            shards.append(_Shard(path, digests[path], n_rows, None, None, meta, frozenset()))
        files = {"files": [str(p) for p in paths], "sha": [digests[p] for p in paths],
                 "run": run_id}
        src = (f"(SELECT r.*, m.sha FROM read_parquet({sql_file_list(paths)}, filename = true) "
               "r JOIN (SELECT unnest($files) AS filename, unnest($sha) AS sha) m "
               "USING (filename) WHERE r.run_id = $run)")
        differ = self.con.execute(
            f"SELECT any_value(s.filename), count(*) FROM {src} s JOIN splitting_particles p "
            "USING (run_id, repeat, level, particle) WHERE (s.loss, s.fitted, s.parent, s.step, "
            "s.accepted) IS DISTINCT FROM (p.loss, p.fitted, p.parent, p.step, p.accepted)",
            files).fetchone()
        if differ[1]:
            raise ShardError(f"{differ[0]}: {differ[1]} particles are already stored with other "
                             "values; nothing was ingested. Two executions of the splitting "
                             f"repeat of run {run_id} disagree: delete the wrong level shard.")
        self.con.execute(f"INSERT INTO splitting_particles SELECT {_LEVEL_COLUMNS}, sha FROM "
                         f"{src} ON CONFLICT DO NOTHING", files)
        self._add_to_ledger(run_id, "levels", shards)
        report.shards_ingested += len(shards)

    def _add_to_ledger(self, run_id: str, kind: str, shards: list[_Shard]) -> None:
        # one statement over lists: executemany is one round trip per row (~1 ms each)
        self.con.execute(
            "INSERT INTO shards (sha256, run_id, kind, path, n_rows, first_hypothesis, "
            "last_hypothesis, provenance) SELECT unnest($sha), $run, $kind, unnest($path), "
            "unnest($rows), unnest($first), unnest($last), unnest($meta)",
            {"sha": [s.sha256 for s in shards], "run": run_id, "kind": kind,
             "path": [str(s.path.resolve()) for s in shards], "rows": [s.rows for s in shards],
             "first": [s.first for s in shards], "last": [s.last for s in shards],
             "meta": [json.dumps(s.meta) for s in shards]})

    def _insert_overlapping(self, shard: _Shard, run_id: str) -> int:
        """Insert the rows of a loss shard whose range overlaps a stored shard or another in
        the call (a chunk written twice) that the store lacks; return how many went in. The
        stored values must agree with the shard's."""
        path, first = shard.path, shard.first
        src = _ordered_scan([path])
        misplaced = self.con.execute(
            f"SELECT min(file_row_number), arg_min(hypothesis_id, file_row_number) FROM {src} "
            "WHERE hypothesis_id IS DISTINCT FROM ? + file_row_number", [first]).fetchone()
        if misplaced[0] is not None:
            raise ShardError(_misplaced_message(path, first, *misplaced))
        self._check_agrees(path, src, run_id)
        return self.con.execute(
            f"INSERT INTO losses ({_LOSS_ROW}, shard_sha256) SELECT {_required('')}, "
            f"{_optional_columns(shard.present, '')}, ? FROM {src} s "
            "WHERE NOT EXISTS (SELECT 1 FROM losses l WHERE l.run_id = s.run_id AND "
            "l.hypothesis_id = s.hypothesis_id)", [shard.sha256]).fetchone()[0]

    def _insert_batch(self, run_id: str, batch: list[_Shard],
                      report: IngestReport) -> None:
        """Insert validated loss shards of one run, none overlapping, in one statement: one
        INSERT over many files is about twice as fast as one per file (benchmarks/)."""
        if not batch:
            return
        present = set().union(*(b.present for b in batch))
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE ingest_batch AS SELECT unnest($file) AS filename, "
            "unnest($sha) AS sha256, unnest($first)::BIGINT AS first_id, "
            "unnest($rows)::BIGINT AS n_rows",
            {"file": [str(b.path) for b in batch], "sha": [b.sha256 for b in batch],
             "first": [b.first for b in batch], "rows": [b.rows for b in batch]})
        src = _ordered_scan([b.path for b in batch])
        # The row filter proves, at no measurable cost, that each file holds first..last once
        # each and in order; with no two ranges overlapping, no id can repeat (the losses table
        # has no key index: schemas/002_losses_without_key.sql says why).
        inserted = self.con.execute(
            f"INSERT INTO losses ({_LOSS_ROW}, shard_sha256) SELECT {_required('r.')}, "
            f"{_optional_columns(present, 'r.')}, m.sha256 "
            f"FROM {src} r JOIN ingest_batch m USING (filename) WHERE r.run_id = ? AND "
            "r.hypothesis_id = m.first_id + r.file_row_number", [run_id]).fetchone()[0]
        if inserted != sum(b.rows for b in batch):
            self._name_bad_shard(src, run_id, len(batch))
        self.con.execute("DROP TABLE ingest_batch")  # (after a failure, the rollback drops it)
        self._add_to_ledger(run_id, "losses", batch)
        report.shards_ingested += len(batch)
        report.hypotheses_inserted += inserted

    def _name_bad_shard(self, src: str, run_id: str, n_shards: int) -> None:
        """Raise naming the first shard of a batch whose rows are not what its footer and
        metadata promise: rows of another run, or ids not first..last in order."""
        bad = self.con.execute(
            f"SELECT filename, any_value(m.first_id), count(*), any_value(m.n_rows), "
            "count(*) FILTER (r.run_id IS DISTINCT FROM $run), "
            "min(r.file_row_number) FILTER (r.hypothesis_id IS DISTINCT FROM m.first_id + "
            "r.file_row_number), arg_min(r.hypothesis_id, r.file_row_number) FILTER "
            "(r.hypothesis_id IS DISTINCT FROM m.first_id + r.file_row_number) "
            f"FROM {src} r JOIN ingest_batch m USING (filename) GROUP BY filename "
            "HAVING count(*) <> any_value(m.n_rows) OR count(*) FILTER (r.run_id IS DISTINCT "
            "FROM $run OR r.hypothesis_id IS DISTINCT FROM m.first_id + r.file_row_number) > 0 "
            "ORDER BY filename LIMIT 1", {"run": run_id}).fetchone()
        if bad is None:
            raise ShardError(f"the {n_shards} loss shards of run {run_id} hold other rows than "
                             "their metadata promise; nothing was ingested. Check the run folder.")
        name, first, n, promised, foreign, row, hid = bad
        if row is not None:
            raise ShardError(_misplaced_message(name, first, row, hid))
        raise ShardError(f"{name}: {n} rows, {foreign} of them of another run than {run_id}, "
                         f"where its metadata promise {promised} of that run; nothing was "
                         "ingested. Delete it and re-run the spec to rewrite that chunk.")

    def _check_agrees(self, path: Path, src: str, run_id: str) -> None:
        # A chunk can be written twice (two processes ran one spec into one folder); the copy
        # adds no rows, but values that differ mean a nondeterministic runner or a damaged file.
        differ = self.con.execute(
            f"SELECT count(*) FROM {src} s JOIN losses l USING (run_id, hypothesis_id) "
            "WHERE l.run_id = ? AND (s.seed IS DISTINCT FROM l.seed OR s.test_mse IS DISTINCT "
            "FROM l.test_mse OR s.test_error IS DISTINCT FROM l.test_error)", [run_id]
        ).fetchone()[0]
        if differ:
            raise ShardError(f"{path}: {differ} hypotheses are already stored with other values "
                             "(seed or losses); nothing was ingested. Two executions of run "
                             f"{run_id} disagree: check that its runner is deterministic, and "
                             "delete the shard that is wrong.")


def _not_a_file(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        what = f"a broken symbolic link (to {shorten(str(path.readlink()), 120)})"
    elif path.is_dir():
        what = "a folder"
    else:
        what = "not a regular file"
    return (f"{path}: {what} under a shard's name; nothing was ingested. Remove it (or put "
            "the shard it should be in its place), then ingest again.")


def _overlapping(paths: list[Path]) -> set[Path]:
    """Loss shards whose hypothesis range overlaps another shard's in the same list."""
    spans = sorted((shardfiles.shard_range(p), p) for p in paths)
    out: set[Path] = set()
    reach, holder = -1, None  # the furthest last id so far, and the shard that reaches it
    for (first, last), path in spans:
        if first <= reach:
            out.update((path, holder))
        if last > reach:
            reach, holder = last, path
    return out


class _Ranges:
    """Hypothesis ranges (first, last) stored for a run, asked whether a range overlaps one."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.firsts = sorted(f for f, _ in ranges)
        self.reach = list(itertools.accumulate((last for _, last in sorted(ranges)), max))

    def overlaps(self, first: int, last: int) -> bool:
        # the stored ranges starting at or before `last` overlap iff one reaches `first`
        k = bisect.bisect_right(self.firsts, last)
        return k > 0 and self.reach[k - 1] >= first


def _ordered_scan(paths: list[Path]) -> str:
    """A scan of loss shards with each row's file and its position in that file."""
    return (f"read_parquet({sql_file_list(paths)}, filename = true, file_row_number = true, "
            "union_by_name = true)")


def _misplaced_message(path: Path | str, first: int, row: int, hypothesis: int | None) -> str:
    return (f"{path}: row {row} holds hypothesis {hypothesis} where hypothesis {first + row} "
            "belongs (every shard ibdb writes holds its range once each, in order: an id is "
            "repeated or missing); nothing was ingested. Delete it and re-run the spec to "
            "rewrite that chunk.")


# A loss row's columns, in the order the inserts above list them.
_LOSS_ROW = ", ".join([*LOSS_KEY_COLUMNS, *REQUIRED_LOSSES, *OPTIONAL_COLUMNS])


def _required(prefix: str) -> str:
    return ", ".join(f"{prefix}{c}" for c in [*LOSS_KEY_COLUMNS, *REQUIRED_LOSSES])


def _optional_columns(present: set[str], prefix: str) -> str:
    """The optional loss columns, NULL where no shard of the insert carries one."""
    return ", ".join(f"{prefix}{c}" if c in present else f"NULL AS {c}"
                     for c in OPTIONAL_COLUMNS)
