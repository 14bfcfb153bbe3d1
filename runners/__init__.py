"""Hypothesis samplers, one module per family: the runner of each space kind that
:data:`ibdb.spec.spaces.SPACES` registers, and what the run stage needs of that registry.

Importing this package does not import torch: a runner's module loads only when a run needs it
(:func:`load_runner`). Space checks against a loaded task are torch-free
(``runners/compatibility.py``), so that `ibdb validate` and `ibdb plan` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ibdb.core.errors import SpecError
from ibdb.core.references import resolve
from ibdb.spec.spaces import SPACES, SpaceSpec

if TYPE_CHECKING:
    from ibdb.data.task import TaskData
    from ibdb.runners.base import Runner


def load_runner(kind: str) -> type[Runner]:
    """The runner class of space kind ``kind`` (imports its module, and torch)."""
    return resolve(SPACES.get(kind).runner)


def check_space(space: SpaceSpec, data: TaskData) -> None:
    """Raise :class:`SpecError` when ``space`` cannot run on ``data`` (e.g. a CNN on flat
    features): the spec alone cannot tell, the loaded task can."""
    check = SPACES.of(space).check
    if check is not None:
        resolve(check)(space, data)


def check_splitting(space: SpaceSpec) -> None:
    """Raise :class:`SpecError` when a budget's splitting block cannot run on ``space``."""
    if not SPACES.of(space).splitting:
        able = ", ".join(e.kind for e in SPACES if e.splitting)
        raise SpecError(f"space {space.name!r} (kind {space.kind}): a budget's splitting block "
                        f"runs on {able} spaces for now; remove the block from the budgets of "
                        "this space, or sample it i.i.d. only.")
