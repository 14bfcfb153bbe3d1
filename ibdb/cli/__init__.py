"""The ``ibdb`` command line (the last stage, the only one that prints): commands, their
rendering and the one failure handler. ``ibdb.cli:main`` is the console script."""

from ibdb.cli.commands import main

__all__ = ["main"]
