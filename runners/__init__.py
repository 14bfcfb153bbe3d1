"""Hypothesis samplers, one module per family, registered by the space ``kind`` they serve.

Importing this package does not import torch: a runner's module loads only when a run needs it.
Each entry carries tiny "sane" parameters that the runner contract test runs on CPU.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibdb.runners.base import Runner


@dataclass(frozen=True)
class RunnerEntry:
    kind: str
    module: str
    version: str  # bump when a change alters any hypothesis's losses: it enters the run id
    sane_space: dict[str, Any] = field(default_factory=dict)

    def load(self) -> type[Runner]:
        return importlib.import_module(self.module).RUNNER


RUNNERS: dict[str, RunnerEntry] = {
    "gp": RunnerEntry(
        kind="gp",
        module="ibdb.runners.gp",
        version="1",
        sane_space={"name": "sane-gp", "kind": "gp", "bandwidth": 1.0, "jitter": 1e-8},
    ),
}


def runner_entry(kind: str) -> RunnerEntry:
    try:
        return RUNNERS[kind]
    except KeyError:
        from ibdb.errors import SpecError

        raise SpecError(f"no runner for hypothesis-space kind {kind!r}; known kinds: "
                        f"{', '.join(sorted(RUNNERS))}.") from None
