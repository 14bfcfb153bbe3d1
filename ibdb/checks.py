"""Health checks of a store and its shard folder: each one an SQL file returning offending rows.

The checks live in ``queries/checks/`` (``ibdb.queries.checks`` in the wheel), one file per
check, headed by a comment stating its grain and what to do; an empty result means healthy.
The file system is the one thing SQL cannot see: :func:`run_checks` lists the shard folder and
the ledger's paths into a temporary table ``shard_files(path, present)`` first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ibdb.store import Store

ORDER = ("incomplete_runs", "orphaned_shards", "stale_estimates", "changed_loss_sets",
         "duplicate_rows")


@dataclass
class CheckResult:
    name: str
    about: str  # the SQL file's header comment
    columns: list[str]
    rows: list[tuple]

    @property
    def ok(self) -> bool:
        return not self.rows


def check_definitions() -> list[tuple[str, str]]:
    """(name, SQL) of every check, in the order they are reported."""
    folder = resources.files("ibdb.queries.checks")
    found = {e.name[:-4]: e.read_text(encoding="utf-8") for e in folder.iterdir()
             if e.name.endswith(".sql")}
    return [(n, found[n]) for n in ORDER if n in found] + \
        sorted((n, q) for n, q in found.items() if n not in ORDER)


def run_checks(store: Store, shard_root: Path) -> list[CheckResult]:
    """Run every check on ``store`` (read-only is enough) against ``shard_root``."""
    _list_shard_files(store, Path(shard_root))
    results = []
    for name, sql in check_definitions():
        columns, rows = store.query(sql)
        about = " ".join(line[2:].strip() for line in sql.splitlines()
                         if line.startswith("--"))
        results.append(CheckResult(name, about, columns, rows))
    return results


def _list_shard_files(store: Store, root: Path) -> None:
    present: dict[str, bool] = {}
    if root.is_dir():
        for run_folder in root.iterdir():
            if run_folder.is_dir():
                for path in run_folder.iterdir():
                    if path.suffix == ".parquet" or ".tmp-" in path.name:
                        present[str(path.resolve())] = True
    for (path,) in store.query("SELECT path FROM shards")[1]:
        present.setdefault(path, os.path.exists(path))
    # one statement over lists: executemany is one round trip per row (~1 ms each)
    store.query("CREATE OR REPLACE TEMP TABLE shard_files AS SELECT "
                "unnest($path)::VARCHAR AS path, unnest($present)::BOOLEAN AS present",
                {"path": list(present), "present": list(present.values())})
