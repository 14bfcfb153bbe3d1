"""What every runner provides, and the device choice they share."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ibdb.core.columns import LOSS_COLUMNS, LossColumn
from ibdb.core.errors import IbdbError
from ibdb.data.task import TaskData

# What runners record per hypothesis (names, dtypes, which are required) is defined once,
# without torch, in ibdb.core.columns; the store's `losses` table has one column each.
__all__ = ["LOSS_COLUMNS", "LossColumn", "Runner", "resolve_device"]


class Runner(Protocol):
    """A prepared sampler for one (task, space): sample any hypotheses by index and seed."""

    kind: ClassVar[str]

    def __init__(self, space: Any, data: TaskData, *, device: torch.device) -> None: ...

    @property
    def info(self) -> dict[str, Any]:
        """JSON-able facts about the prepared space (chosen bandwidth, fit residuals, ...)."""
        ...

    def spectrum(self) -> dict[str, np.ndarray] | None:
        """The loss distribution's spectrum when it is known in closed form, else None."""
        ...

    def sample(self, hypothesis_ids: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        """Losses of the given hypotheses: one array per name in the runner entry's
        ``loss_columns``, each of the dtype LOSS_COLUMNS declares and of length ``len(seeds)``.

        Hypothesis ``i`` depends only on ``seeds[i]``: the result of one hypothesis does not
        depend on which others share its batch.
        """
        ...

    # Optional: ``sample_with_summary(hypothesis_ids, seeds) -> (losses, summary)``, what
    # ``sample`` returns plus ``{"n_fitted": int, "test_residual_sum": list of m k floats}``,
    # the batch's fitted hypotheses' summed test predictions minus targets. The executor stores
    # it in the loss shard's footer, and the ``mean_network`` view sums it over a run's shards
    # (network runners have it; a gp run's mean is in closed form in its ``info``).

    # -- explicit noise: what rare-event samplers move (REFERENCE.md, "Rare-event estimation") -

    @property
    def noise_dim(self) -> int:
        """Length of one hypothesis's flattened standard-normal noise vector z."""
        ...

    def noise(self, seeds: np.ndarray) -> np.ndarray:
        """(B, noise_dim) float64 standard normals, hypothesis i's drawn from ``seeds[i]`` alone:
        a first level whose hypotheses ``evaluate(noise(seeds))`` have exactly the law of
        ``sample``'s (the GP runner: the very noise ``sample`` uses, so the same hypotheses)."""
        ...

    @property
    def step_scale(self) -> np.ndarray | None:
        """Per-coordinate multipliers (noise_dim,) of a sampler's move size, or None for equal
        moves (see ibdb.run.splitting.run_levels); part of the noise map, like noise_version."""
        ...

    def evaluate(self, noise: np.ndarray) -> dict[str, np.ndarray]:
        """Losses of the hypotheses given by their noise rows ``noise`` (B, noise_dim) float64.
        A row holds all of its hypothesis's randomness (a network's initial weights and data
        orders), so a sampler that moves the rows can reach every hypothesis. Returns what
        ``sample`` returns (the entry's ``loss_columns``, same dtypes, length B), and as there
        hypothesis i depends on its own row only, whatever shares its batch.
        """
        ...


def resolve_device(name: str) -> torch.device:
    """'auto' takes CUDA when present, else the CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise IbdbError(f"device {name!r} was asked for but torch sees no CUDA device "
                        f"(torch {torch.__version__}). Use --device cpu or --device auto.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise IbdbError(f"unknown device {name!r}; use auto, cpu or cuda[:N].") from None
