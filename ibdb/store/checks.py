"""Health checks of a store and its shard folder: each one an SQL file returning offending rows.

The checks live in ``queries/checks/`` (``ibdb.queries.checks`` in the wheel), one file per
check, headed by a comment stating its grain and what to do; an empty result means healthy.
The file system is the one thing SQL cannot see: :func:`run_checks` lists the shard folder and
the ledger's paths into a temporary table ``shard_files(path, present)`` first, every entry of
the shard folder into ``shard_entries(path, kind, depth)`` (so that checks can name folders
without run.json and files ingest would refuse), and the temporary stores killed processes
left beside the store into ``leftover_stores(path, pid)``. :func:`fix_store` repairs what is
safe to repair (``ibdb check --fix``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

from ibdb.core.errors import ShardError, StoreError
from ibdb.store.database import Store
from ibdb.store.files import leftover_temporary_stores, store_failure

ORDER = ("incomplete_runs", "orphaned_shards", "stale_estimates", "changed_loss_sets",
         "duplicate_rows", "outdated_run_ids")


@dataclass
class CheckResult:
    name: str
    about: str  # the SQL file's header comment
    columns: list[str]
    rows: list[tuple]

    @property
    def ok(self) -> bool:
        return not self.rows


class CheckResults(list):
    """The results of every check, in order, plus ``missing_views``: views of queries/ that
    the store file lacks (ibdb re-creates them in each session; `ibdb check --fix` writes them
    back for other DuckDB clients)."""

    def __init__(self, results: list[CheckResult] = (), *,  # type: ignore[assignment]
                 missing_views: list[str] = ()) -> None:  # type: ignore[assignment]
        super().__init__(results)
        self.missing_views = list(missing_views)


def check_definitions() -> list[tuple[str, str]]:
    """(name, SQL) of every check, in the order they are reported."""
    folder = resources.files("ibdb.queries.checks")
    found = {e.name[:-4]: e.read_text(encoding="utf-8") for e in folder.iterdir()
             if e.name.endswith(".sql")}
    return [(n, found[n]) for n in ORDER if n in found] + \
        sorted((n, q) for n, q in found.items() if n not in ORDER)


def run_checks(store: Store, shard_root: Path) -> CheckResults:
    """Run every check on ``store`` (read-only is enough) against ``shard_root``.

    First every column of every table is read once (~0.25 s for 8 million rows), so that a
    damaged block (DuckDB verifies each block's checksum as it reads it) fails here, named
    as damage, rather than passing unseen or failing in some check's SQL."""
    try:
        _read_every_table(store)
        _list_shard_files(store, Path(shard_root))
        _list_stray_files(store, Path(shard_root))
        results = CheckResults(missing_views=store.missing_views())
        for name, sql in check_definitions():
            columns, rows = store.query(sql)
            about = " ".join(line[2:].strip() for line in sql.splitlines()
                             if line.startswith("--"))
            results.append(CheckResult(name, about, columns, rows))
    except duckdb.Error as exc:
        failure = store_failure(store.path, exc)
        if failure is None:
            raise
        raise failure from None
    return results


UNLOADED_SHARDS = "unloaded_shards"
UNLOADED_COLUMNS = ["run_folder", "label", "loss_shards", "hypotheses", "other_shards"]


def shards_without_store(db: str | Path, shard_root: Path) -> CheckResults | None:
    """What ``ibdb check`` reports when the store file ``db`` does not exist but the shard
    folder holds run folders (a first run interrupted before it ingested, or `run
    --no-ingest`): one failed check, ``unloaded_shards``, one row per run folder (its label
    from run.json, its loss shards, the hypotheses they hold out of those the spec asked for,
    its spectrum and splitting-level shards), saying that `ibdb ingest` loads them. None when
    the shard folder holds no run folder (then there is nothing to check)."""
    from ibdb.run import shards as shardfiles  # (numpy: not at `ibdb check`'s start)

    root = Path(shard_root)
    if not root.is_dir():
        return None
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        losses = shardfiles.loss_shards(folder)
        ranges = [r for r in map(shardfiles.shard_range, losses) if r is not None]
        written = sum(last - first + 1 for first, last in ranges)
        label, asked = _manifest_label(folder)
        others = len(shardfiles.spectrum_shards(folder)) + len(shardfiles.level_shards(folder))
        rows.append((str(folder), label, len(losses),
                     f"{written} of {asked}" if asked is not None else str(written), others))
    if not rows:
        return None
    about = (f"there is no store at {db}, but the shard folder {root} holds {len(rows)} run "
             f"folder(s) that no store has loaded (a first run stopped before it ingested, or "
             f"`ibdb run --no-ingest`). `ibdb ingest {root}` loads them into {db} (add --db "
             "to load them elsewhere); running the spec again also resumes and ingests.")
    return CheckResults([CheckResult(UNLOADED_SHARDS, about, UNLOADED_COLUMNS, rows)])


def _manifest_label(folder: Path) -> tuple[str, int | None]:
    """(label, hypotheses asked for) from a run folder's run.json, or what is wrong with it."""
    from ibdb.run import shards as shardfiles

    if not (folder / shardfiles.MANIFEST).is_file():
        return "(no run.json: not a run folder ibdb wrote; ingest skips it)", None
    try:
        spec = shardfiles.read_manifest(folder)["spec"]
    except ShardError:
        return "(run.json unreadable: `ibdb ingest` names the problem)", None
    label = "/".join(str(spec[k]["name"]) if k != "experiment" else str(spec[k])
                     for k in ("experiment", "task", "space", "budget"))
    return label, int(spec["budget"]["n_hypotheses"])


def _read_every_table(store: Store) -> None:
    tables = [r[0] for r in store.query(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' ORDER BY table_name")[1]]
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        store.query(f"SELECT count(*), max(hash(COLUMNS(*))) FROM {quoted}")


def fix_store(db: str | Path, shard_root: Path) -> list[str]:
    """Repair what ``ibdb check`` finds that is safe to repair, and say what was done: remove
    the temporary stores that killed processes left beside the store, and write the store's
    views back (opening it for writing re-creates them; it also upgrades an older schema).
    Shards are never touched: they may be the only copy of sampled work."""
    done = []
    for path, pid in leftover_temporary_stores(db):
        path.unlink(missing_ok=True)
        done.append(f"removed {path}: a temporary store left by process {pid}, which is gone")
    if not Path(db).exists():  # (a first run stopped before it ingested: check lists shards)
        done.append(f"no store at {db}, so no views to re-create")
        return done
    try:
        with Store.open(db, read_only=True, functions=False) as before:
            missing: list[str] | None = before.missing_views()
    except StoreError:
        missing = None  # (an older schema, say, which the writable open below upgrades)
    with Store.open(db, create=False, functions=False):
        pass  # opening a store for writing re-creates every view (and upgrades its schema)
    if missing is None:
        done.append("re-created the store's views")
    elif missing:
        done.append(f"re-created the store's views; it lacked {', '.join(missing)}")
    else:
        done.append("re-created the store's views (none was missing)")
    return done


def _list_shard_files(store: Store, root: Path) -> None:
    present: dict[str, bool] = {}
    if root.is_dir():
        for run_folder in root.iterdir():
            if run_folder.is_dir():
                for path in run_folder.iterdir():
                    if (path.suffix == ".parquet" and path.is_file()) or ".tmp-" in path.name:
                        present[str(path.resolve())] = True
    for (path,) in store.query("SELECT path FROM shards")[1]:
        present.setdefault(path, os.path.exists(path))
    # one statement over lists: executemany is one round trip per row (~1 ms each)
    store.query("CREATE OR REPLACE TEMP TABLE shard_files AS SELECT "
                "unnest($path)::VARCHAR AS path, unnest($present)::BOOLEAN AS present",
                {"path": list(present), "present": list(present.values())})


def _list_stray_files(store: Store, root: Path) -> None:
    """Fill the temporary tables ``shard_entries(path, kind, depth)``: every entry of the
    shard root (depth 1; hidden ones aside) and of its folders (depth 2), kind 'file',
    'folder', 'broken link' or 'other'; and ``leftover_stores(path, pid)``: temporary stores
    beside the store whose process is gone (ibdb.store.files.leftover_temporary_stores). The SQL
    names what is wrong."""
    entries: list[tuple[str, str, int]] = []
    if root.is_dir():
        for top in sorted(root.iterdir()):
            if top.name.startswith("."):
                continue  # (an executor's own files, e.g. .submitit/)
            entries.append((str(top), _kind(top), 1))
            if top.is_dir():
                entries += [(str(p), _kind(p), 2) for p in sorted(top.iterdir())]
    store.query("CREATE OR REPLACE TEMP TABLE shard_entries AS SELECT "
                "unnest($path)::VARCHAR AS path, unnest($kind)::VARCHAR AS kind, "
                "unnest($depth)::INTEGER AS depth",
                {"path": [e[0] for e in entries], "kind": [e[1] for e in entries],
                 "depth": [e[2] for e in entries]})
    stores = leftover_temporary_stores(store.path) if store.path != ":memory:" else []
    store.query("CREATE OR REPLACE TEMP TABLE leftover_stores AS SELECT "
                "unnest($path)::VARCHAR AS path, unnest($pid)::BIGINT AS pid",
                {"path": [str(p) for p, _ in stores], "pid": [pid for _, pid in stores]})


def _kind(path: Path) -> str:
    if path.is_file():
        return "file"
    if path.is_dir():
        return "folder"
    return "broken link" if path.is_symlink() else "other"
