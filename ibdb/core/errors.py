"""The one family of errors ibdb reports to users.

Every error a user can cause derives from :class:`IbdbError`. The CLI has one handler that
turns these into a short message and exit code 2 (as it does with the environment's failures:
files, disk, memory); anything else is a bug, reported in one line with exit code 1 (its
traceback with ``--verbose``). Messages say what is wrong, show the offending value (through
:func:`shorten`, so a huge value cannot flood the terminal), and say what to do.
"""

from __future__ import annotations

from typing import Any

VALUE_CHARS = 200  # the most characters of an offending value a message shows


def shorten(value: Any, limit: int = VALUE_CHARS) -> str:
    """``value`` as text for a message: one line, at most ``limit`` characters (the cut marked
    with how many more there were)."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class IbdbError(Exception):
    """Base class of every error ibdb reports to users."""

    exit_code = 2


class SpecError(IbdbError):
    """A spec file is missing, malformed, or asks for something impossible."""


class DataError(IbdbError):
    """A task's data cannot be loaded or does not have the expected arrays."""


class StoreError(IbdbError):
    """The DuckDB store cannot be opened, read or written."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class ShardError(IbdbError):
    """A shard file is missing, truncated, corrupt or foreign."""


class EstimateError(IbdbError):
    """An estimate cannot be computed from the given losses or spectrum."""
