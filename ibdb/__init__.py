"""ibdb: measure the inductive bias a task requires, as a declarative experiment database.

``from ibdb import Ibdb`` gives the facade that the CLI drives. Importing ibdb loads nothing
heavy: torch loads only when a run samples hypotheses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibdb.api import Ibdb

__all__ = ["Ibdb"]


def __getattr__(name: str) -> Any:
    if name == "Ibdb":
        from ibdb.api import Ibdb

        return Ibdb
    raise AttributeError(f"module 'ibdb' has no attribute {name!r}")
