"""ibdb: measure the inductive bias a task requires, as a declarative experiment database.

``from ibdb import Ibdb`` gives the facade that the CLI drives; ``ibdb.connect(db)`` a read-only
DuckDB connection to a store with its views and the ib_* SQL functions (for notebooks).
Importing ibdb loads nothing heavy: torch loads only when a run samples hypotheses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibdb.api import Ibdb
    from ibdb.frames import connect

__all__ = ["Ibdb", "connect"]


def __getattr__(name: str) -> Any:
    if name == "Ibdb":
        from ibdb.api import Ibdb

        return Ibdb
    if name == "connect":
        from ibdb.frames import connect

        return connect
    raise AttributeError(f"module 'ibdb' has no attribute {name!r}")


def _find_mapped_folders_in_a_checkout() -> None:
    """The wheel installs runners/, schemas/, queries/ and examples/ as subpackages of ibdb; in
    a source checkout they sit beside this folder. When Python imports this folder from a
    checkout's root (a notebook or `python -c` started where `ibdb quickstart` left its store,
    even with ibdb installed, since the working directory comes first on sys.path), let
    ``ibdb.runners`` and the others resolve there, as they do in the wheel and in an editable
    install. Cheap: two stat calls, nothing imported."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if (not os.path.isdir(os.path.join(here, "runners"))
            and os.path.isfile(os.path.join(root, "runners", "__init__.py"))
            and root not in __path__):
        __path__.append(root)


_find_mapped_folders_in_a_checkout()
