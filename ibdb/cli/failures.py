"""The CLI's one failure handler: every exception a command raises ends in :func:`fail`.

Expected failures (ibdb's own errors, files and folders, a full disk, memory, a damaged store)
exit 2 with one paragraph that names the object and says what to do; anything else is a bug:
exit 1 with one line and a hint to rerun with --verbose, which prints the traceback.
"""

from __future__ import annotations

import errno
import sys
import traceback
from pathlib import Path

import click

from ibdb.api import Ibdb
from ibdb.core.errors import IbdbError, StoreError, shorten

MAX_MESSAGE_CHARS = 4000  # an error message is a paragraph, never a flood


def fail(ctx: click.Context, exc: Exception) -> None:
    """Report ``exc`` by the rule above and exit."""
    verbose = bool(ctx.params.get("verbose"))
    if verbose:
        traceback.print_exc(file=sys.stderr)
    api = ctx.obj if isinstance(ctx.obj, Ibdb) else None
    message = _expected_failure(exc, api)
    if message is None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"Error: unexpected {type(exc).__name__}"
                   + (f": {shorten(first, 200)}" if first else "")
                   + (". This is a bug in ibdb; the traceback is above. Please report it."
                      if verbose else
                      ". This is a bug in ibdb; rerun with --verbose for the traceback, and "
                      "please report it."), err=True)
        sys.exit(1)
    if (not isinstance(exc, IbdbError) or isinstance(exc, StoreError)) and \
            api is not None and ctx.invoked_subcommand in ("run", "quickstart") and \
            _holds_runs(api.shard_root):
        message += (f" Shards sampled so far are kept in {api.shard_root}: `ibdb run` again "
                    f"resumes without resampling them, or `ibdb ingest {api.shard_root}` loads "
                    "them.")
    if len(message) > MAX_MESSAGE_CHARS:  # keep the head and the tail, where the fix is
        head, tail = MAX_MESSAGE_CHARS - 500, 500
        message = (f"{message[:head]}... ({len(message) - head - tail} characters cut) ..."
                   f"{message[-tail:]}")
    click.echo(f"Error: {message}", err=True)
    sys.exit(exc.exit_code if isinstance(exc, IbdbError) else 2)


_OS_REMEDIES = {
    errno.ENOSPC: "Free disk space there, then retry.",
    errno.EDQUOT: "Free space within your disk quota, then retry.",
    errno.EFBIG: "The file outgrew the size limit (ulimit -f); raise it or free space, then "
                 "retry.",
    errno.EACCES: "Check the permissions of the file and its folder, or use another path.",
    errno.EPERM: "Check the permissions of the file and its folder, or use another path.",
    errno.EROFS: "It is on a read-only file system: use a path on a writable one.",
    errno.ENOENT: "Check the path.",
    errno.ENOTDIR: "A part of the path is a file, not a folder: check the path.",
    errno.EISDIR: "It is a folder: name a file.",
    errno.ELOOP: "The path is a symbolic link that leads back to itself: fix or remove the "
                 "link.",
    errno.ENAMETOOLONG: "Use a shorter path.",
}


_DUCKDB_REMEDIES = {
    "read-only": "The file or its folder is not writable: use a writable path.",
    "not duckdb": "The file is not a DuckDB database: check the path.",
    "truncated": "The file is truncated or damaged: restore or rewrite it.",
    "corrupt": "The file is damaged: restore or rewrite it.",
    "write": "Free disk space (or raise the file size limit), then retry.",
    "memory": "Close other programs or use a machine with more memory, then retry.",
    "invalidated": "Retry; if it fails again, run `ibdb check`.",
}


def _expected_failure(exc: Exception, api: Ibdb | None) -> str | None:
    """The message for a failure a user can expect and act on (ibdb's errors, files, disk,
    memory, a damaged store); None for a bug."""
    if isinstance(exc, IbdbError):
        return str(exc)
    if type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb"):
        # (the store's own failures are StoreErrors where ibdb opens and writes it; a damaged
        # block can also show in a later read, which names no file: the store it is)
        from ibdb.store.files import failure_detail, failure_kind, store_failure

        kind = failure_kind(exc)
        if api is not None and kind in ("truncated", "corrupt", "not duckdb") and \
                _names_the_store(str(exc), str(api.db)):
            return str(store_failure(str(api.db), exc))
        return None if kind is None else \
            f"DuckDB failed on a file ({failure_detail(exc)}). {_DUCKDB_REMEDIES[kind]}"
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else "a file"
        also = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        what = exc.strerror or str(exc)
        return (f"{shorten(str(where))}{shorten(str(also))}: {what}. "
                + _OS_REMEDIES.get(exc.errno or 0, "Check the path and retry."))
    if isinstance(exc, MemoryError):
        return ("out of memory. Use a machine with more memory, or ask for less at once (a "
                "smaller chunk_size in the spec's budget), then retry.")
    return None


def _names_the_store(text: str, db: str) -> bool:
    """Whether a DuckDB error is about the store: it names the store's file, or a database
    file without naming one (the CLI opens no DuckDB file but the store)."""
    return db in text or ("database file" in text.lower() and '"' not in text)


def _holds_runs(root: Path) -> bool:
    try:
        return any(p.is_dir() for p in Path(root).iterdir())
    except OSError:
        return False


