"""ibdb: measure the inductive bias a task requires, as a declarative experiment database.

``from ibdb import Ibdb`` gives the facade that the CLI drives; ``ibdb.connect(db)`` a read-only
DuckDB connection to a store with its views and the ib_* SQL functions (for notebooks).
Importing ibdb loads nothing heavy: torch loads only when a run samples hypotheses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibdb.api import Ibdb
    from ibdb.store.frames import connect

__all__ = ["Ibdb", "connect"]


def __getattr__(name: str) -> Any:
    if name == "Ibdb":
        from ibdb.api import Ibdb

        return Ibdb
    if name == "connect":
        from ibdb.store.frames import connect

        return connect
    raise AttributeError(f"module 'ibdb' has no attribute {name!r}")
