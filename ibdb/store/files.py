"""The store's file: the path checks before opening it, what its DuckDB errors mean (damage,
a full disk, a read-only folder) in messages that say what to do, temporary stores a killed
creation left behind, and the lock holder. Torch-free and SQL-free; :mod:`ibdb.store.database` and
:mod:`ibdb.store.checks` use it."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import duckdb

from ibdb.core.errors import StoreError, shorten

TEMPORARY_STORE_PREFIX = ".{name}.new-"
DUCKDB_HEADER_BYTES = 3 * 4096  # a DuckDB file's main header and its two database headers


def check_store_path(path: str, *, read_only: bool, create: bool) -> None:
    """Clear errors for a --db that cannot be a store: a folder, a file that is missing when it
    must exist, or a new store's folder that is missing or not writable."""
    target = Path(path)
    if target.is_dir():
        raise StoreError(f"{path}: is a folder; --db must name a DuckDB file.")
    if target.exists():
        return
    if read_only or not create:
        raise StoreError(f"{path}: no such store. Run `ibdb init` or `ibdb run SPEC` first, or "
                         "point --db / IBDB_DB at an existing store.")
    folder = target.absolute().parent
    if target.is_symlink():
        raise StoreError(f"{path}: a symbolic link to nothing ({shorten(os.readlink(target))}"
                         "); point --db at the store itself, or remove the link.")
    if not folder.exists():
        raise StoreError(f"{path}: cannot create the store: its folder {shorten(str(folder))} "
                         f"does not exist. Create it (mkdir -p {shorten(str(folder))}) or point "
                         "--db at a file in an existing folder.")
    if not folder.is_dir():
        raise StoreError(f"{path}: cannot create the store: {shorten(str(folder))} is a file, "
                         "not a folder. Point --db at a file in a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"{path}: cannot create the store: its folder {shorten(str(folder))} "
                         "is not writable (a read-only file system, or its permissions). Point "
                         "--db at a file in a folder you can write.")


def check_not_truncated(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Raise when the file is shorter than the blocks its header says are in use: a truncated
    copy (an interrupted transfer, a full disk) would otherwise open and fail at some later
    read. Blocks free at the end may lie past the end of the file, so only used ones count."""
    row = con.execute("SELECT block_size, used_blocks FROM pragma_database_size() "
                            "WHERE database_name = current_database()").fetchone()
    if row is None:
        return
    block_size, used = row
    size = os.path.getsize(path)
    if size < DUCKDB_HEADER_BYTES + used * block_size:
        raise StoreError(f"{path}: truncated: {size} bytes, where the {used} blocks in use "
                         f"need at least {DUCKDB_HEADER_BYTES + used * block_size}. "
                         f"{_DAMAGE_REMEDY}")


_DAMAGE_REMEDY = ("Restore it from a backup, or rebuild a store from its shard folder: `ibdb "
                  "--db NEW.duckdb ingest SHARDS`, then `ibdb --db NEW.duckdb estimate`.")


def failure_kind(exc: BaseException) -> str | None:
    """What a DuckDB error says about the files or the machine: "read-only", "not duckdb",
    "truncated", "corrupt", "write" (disk full, file size limit), "memory" or "invalidated";
    None for other errors (an SQL mistake, a bug)."""
    text = str(exc).lower()
    if "read-only file system" in text or "permission denied" in text:
        return "read-only"
    if "not a valid duckdb database file" in text:
        return "not duckdb"
    if "could not read enough bytes" in text:
        return "truncated"
    if "corrupt" in text or "checksum" in text:
        return "corrupt"
    if any(word in text for word in ("no space left", "file too large", "quota",
                                     "could not write", "could not truncate")):
        return "write"
    if isinstance(exc, duckdb.OutOfMemoryException) or "out of memory" in text:
        return "memory"
    if "invalidated" in text or isinstance(exc, duckdb.FatalException):
        return "invalidated"
    return None


def failure_detail(exc: BaseException) -> str:
    """The first line of an error's text, shortened for a message."""
    text = str(exc).strip()
    return shorten(text.splitlines()[0] if text else type(exc).__name__, 300)


def store_failure(path: str, exc: BaseException, *, opening: bool = False) -> StoreError | None:
    """A StoreError saying what went wrong with the store file at ``path`` (and what to do) for
    a DuckDB error that is the file's or the machine's doing (see :func:`failure_kind`); None
    for other errors, unless ``opening``: then every error is the store's."""
    detail, kind = failure_detail(exc), failure_kind(exc)
    messages = {
        "read-only": "cannot open the store for writing ({detail}). Commands that only read "
                     "(sql, check, export, report, plan) work on it; to change it, copy it to a "
                     "folder you can write and point --db there.",
        "not duckdb": "not a DuckDB database file ({detail}). Point --db at an ibdb store, or "
                      "at a new file.",
        "truncated": "truncated or damaged ({detail}). " + _DAMAGE_REMEDY,
        "corrupt": "damaged, a block fails its checksum ({detail}). " + _DAMAGE_REMEDY,
        "write": "could not write the store ({detail}); nothing of this command was stored, "
                 "and the store holds what it held before. Free disk space (or raise the file "
                 "size limit), then retry.",
        "memory": "DuckDB ran out of memory ({detail}); nothing was stored. Close other "
                  "programs or use a machine with more memory, then retry.",
        "invalidated": "DuckDB stopped using the store after a failure ({detail}); nothing of "
                       "this command was stored. Retry; if it fails again, run `ibdb check`.",
    }
    if kind is not None:
        return StoreError(f"{path}: " + messages[kind].format(detail=detail))
    if opening:
        return StoreError(f"{path}: cannot open the store ({detail}). Point --db at another "
                          "file, or run `ibdb check` on it.")
    return None


def leftover_temporary_stores(path: str | Path, *, min_age_seconds: float = 60.0
                              ) -> list[tuple[Path, int]]:
    """(file, pid) of the temporary stores beside ``path`` that Store._create left behind:
    ``.NAME.new-PID`` (and its ``.wal``) whose process is gone, not modified for
    ``min_age_seconds`` (a process on another host may share the folder; creating a store
    takes well under a second)."""
    target = Path(path)
    pattern = re.compile(re.escape(TEMPORARY_STORE_PREFIX.format(name=target.name))
                         + r"(\d+)(\.wal)?$")
    folder = target.absolute().parent
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    now = time.time()
    for entry in sorted(entries):
        match = pattern.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if age >= min_age_seconds and not pid_alive(pid):
            found.append((entry, pid))
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # someone else's process
    return True


def lock_message(path: str, detail: str) -> str:
    pid = re.search(r"PID (\d+)", detail)
    holder = f"process {pid.group(1)}" if pid else "another process"
    if pid:
        cmdline = Path(f"/proc/{pid.group(1)}/cmdline")
        try:
            words = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            holder += f" ({words[:120]})" if words else ""
        except OSError:
            pass
    return (f"{path}: the store is locked by {holder}. DuckDB allows one process to open a "
            "store while it writes. Wait for that process to finish (or stop it), then retry; "
            "or point --db at another file.")
