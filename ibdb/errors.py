"""The one family of errors ibdb reports to users.

Every error a user can cause derives from :class:`IbdbError`. The CLI has one handler that
turns these into a short message and exit code 2; anything else is a bug and shows a traceback.
Messages say what is wrong, show the offending value, and say what to do.
"""

from __future__ import annotations


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
