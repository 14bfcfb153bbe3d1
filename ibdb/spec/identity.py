"""A run's identity: the canonical JSON of everything that defines its hypotheses, and the run
id, a hash of it.

Each model says what of it defines hypotheses: :meth:`ibdb.spec.sources.Task.identity` (the
data's content fingerprint, which the data stage computes, and the split),
:meth:`ibdb.spec.spaces.SpaceSpec.identity` (the space less its name; a gp space with its
kernel's fields), :meth:`ibdb.spec.budget.Budget.identity` (the seed), plus the runner's kind
and version from :data:`ibdb.spec.spaces.SPACES`. Names, eps, the number of hypotheses and
chunk sizes do not enter it: hypothesis ``i`` is the same whatever ``N`` is, so asking for more
hypotheses extends a run instead of starting anew.

``IDENTITY_VERSION`` names this layout. Run ids of every example spec are pinned by a test
(tests/fixtures/example_run_ids.json): a change that moves one needs a new version and a migration
of stored runs, or a decision record saying why the old id was wrong.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ibdb.spec.spaces import SPACES

if TYPE_CHECKING:
    from ibdb.spec.experiment import RunSpec

IDENTITY_VERSION = 1
RUN_ID_LENGTH = 16  # hex digits of sha256: 64 bits, ample for one store's runs


def run_identity(spec: RunSpec, fingerprint: str,
                 space_facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The identity of ``spec``'s run, its task's data having content ``fingerprint``;
    ``space_facts``: what the built model adds to the space's (its kind's ``facts``)."""
    kind = SPACES.of(spec.space)
    return {
        "task": spec.task.identity(fingerprint),
        "space": {**spec.space.identity(), **(space_facts or {})},
        "runner": kind.kind,
        "runner_version": kind.version,
        **spec.budget.identity(),
    }


def run_id_of(identity: dict[str, Any]) -> str:
    """The run id: the first RUN_ID_LENGTH hex digits of the sha256 of the canonical JSON."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:RUN_ID_LENGTH]
