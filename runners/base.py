"""What every runner provides, and the device choice they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ibdb.errors import IbdbError
from ibdb.tasks import TaskData


@dataclass(frozen=True)
class LossColumn:
    dtype: str  # numpy dtype of the array `sample` returns
    required: bool  # every runner returns it; optional ones are NULL in the store when absent
    description: str


# What runners record per hypothesis; the store's `losses` table has one column each.
LOSS_COLUMNS: dict[str, LossColumn] = {
    "test_mse": LossColumn("float64", True, "mean squared error over test points and outputs "
                           "against one-hot targets"),
    "test_error": LossColumn("float64", True, "fraction of test points whose largest output "
                             "is not the true class (0-1 error)"),
    "train_mse": LossColumn("float64", False, "the same mean squared error on the training set"),
    "train_error": LossColumn("float64", False, "the 0-1 error on the training set"),
    "epochs": LossColumn("int64", False, "epochs the network trained"),
    "fitted": LossColumn("bool", False, "whether the network met the space's fit criterion; "
                         "runners whose hypotheses fit by construction (gp) omit it"),
}


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
