"""Hypothesis samplers, one module per family, registered by the space ``kind`` they serve.

Importing this package does not import torch: a runner's module loads only when a run needs it.
Each entry carries tiny "sane" parameters that the runner contract test runs on CPU, the loss
columns its ``sample`` returns, and a torch-free check of a space against a loaded task that the
plan calls before anything runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibdb.data.task import TaskData
    from ibdb.runners.base import Runner

from ibdb.core.columns import LOSS_COLUMNS, REQUIRED_LOSSES

_NETWORK_COLUMNS = tuple(LOSS_COLUMNS)  # trained networks record every loss column


@dataclass(frozen=True)
class RunnerEntry:
    kind: str
    module: str
    version: str  # bump when a change alters any hypothesis's losses: it enters the run id
    sane_space: dict[str, Any] = field(default_factory=dict)
    loss_columns: tuple[str, ...] = REQUIRED_LOSSES  # names in ibdb.core.columns.LOSS_COLUMNS
    check: str | None = None  # "module:function(space, data)" raising SpecError; no torch
    # A budget's splitting block may run on it: it has `noise_dim` and `evaluate(noise)` (see
    # runners/base.py), a hypothesis a fixed transform of its standard-normal noise row.
    splitting: bool = False
    # bump when that transform changes (level shards record it; a resume refuses other values)
    noise_version: str = "1"

    def load(self) -> type[Runner]:
        return importlib.import_module(self.module).RUNNER

    def check_space(self, space: Any, data: TaskData) -> None:
        """Raise :class:`SpecError` when ``space`` cannot run on ``data`` (e.g. a CNN on flat
        features); the spec alone cannot tell, the loaded task can."""
        if self.check is not None:
            module, name = self.check.split(":")
            getattr(importlib.import_module(module), name)(space, data)


# Tiny, but some networks fit before the last epoch, so that the contract test covers
# networks leaving a batch early.
_SANE_OPTIMIZER = {"kind": "adam", "lr": 0.01, "epochs": 4, "batch_size": 8}

RUNNERS: dict[str, RunnerEntry] = {
    "gp": RunnerEntry(
        kind="gp",
        module="ibdb.runners.gp",
        version="1",
        sane_space={"name": "sane-gp", "kind": "gp", "bandwidth": 1.0, "jitter": 1e-8},
        # train_mse and fitted only when the space conditions on a train MSE (fit)
        loss_columns=(*REQUIRED_LOSSES, "train_mse", "fitted"),
        check="ibdb.runners.compatibility:check_gp",  # a cnn kernel needs image data
        splitting=True,
    ),
    "mlp": RunnerEntry(
        kind="mlp",
        module="ibdb.runners.mlp",
        version="1",
        sane_space={"name": "sane-mlp", "kind": "mlp", "width": 8, "depth": 2,
                    "optimizer": _SANE_OPTIMIZER},
        loss_columns=_NETWORK_COLUMNS,
        check="ibdb.runners.compatibility:check_network",
        splitting=True,
        noise_version="2",  # 2: the data orders are in the noise (1: held by a seed)
    ),
    "cnn": RunnerEntry(
        kind="cnn",
        module="ibdb.runners.cnn",
        version="1",
        sane_space={"name": "sane-cnn", "kind": "cnn", "channels": 3, "layers": 2,
                    "kernel_size": 3, "pooling": "max",
                    "optimizer": {**_SANE_OPTIMIZER, "lr": 0.03, "epochs": 5}},
        loss_columns=_NETWORK_COLUMNS,
        check="ibdb.runners.compatibility:check_network",
        splitting=True,
        noise_version="2",  # 2: the data orders are in the noise (1: held by a seed)
    ),
}


def runner_entry(kind: str) -> RunnerEntry:
    try:
        return RUNNERS[kind]
    except KeyError:
        from ibdb.core.errors import SpecError

        raise SpecError(f"no runner for hypothesis-space kind {kind!r}; known kinds: "
                        f"{', '.join(sorted(RUNNERS))}.") from None


def check_space(space: Any, data: TaskData) -> None:
    """Check a space against a loaded task with its runner's hook (see RunnerEntry.check)."""
    runner_entry(space.kind).check_space(space, data)


def check_splitting(space: Any) -> None:
    """Raise :class:`SpecError` when a budget's splitting block cannot run on ``space``."""
    if not runner_entry(space.kind).splitting:
        from ibdb.core.errors import SpecError

        able = ", ".join(k for k, e in RUNNERS.items() if e.splitting)
        raise SpecError(f"space {space.name!r} (kind {space.kind}): a budget's splitting block "
                        f"runs on {able} spaces for now; remove the block from the budgets of "
                        "this space, or sample it i.i.d. only.")
