"""Checks of a hypothesis space against a loaded task, which the spec alone cannot make.

Torch-free, so that `ibdb validate` and `ibdb plan` stay fast; the plan calls them through
:func:`ibdb.runners.check_space` before any run starts.
"""

from __future__ import annotations

from typing import Any

from ibdb.core.errors import SpecError
from ibdb.data.task import TaskData
from ibdb.spec.kernels import NetworkKernel


def check_network(space: Any, data: TaskData) -> None:
    """Batch size within n_train; for a CNN, image data large enough for its pooling."""
    n_train = len(data.x_train)
    batch = space.optimizer.batch_size
    where = f"space {space.name!r} (kind {space.kind})"
    if batch != "full" and batch > n_train:
        raise SpecError(f"{where}: optimizer.batch_size = {batch} is larger than the task's "
                        f"n_train = {n_train}. Lower batch_size, or use batch_size: full.")
    if space.kind == "cnn":
        _check_image(space, data, where)


def check_gp(space: Any, data: TaskData) -> None:
    """A gp kernel that is the limit of a CNN (nngp or ntk with architecture cnn) needs image
    data large enough for its pooling, as the CNN does."""
    kernel = space.kernel
    if isinstance(kernel, NetworkKernel) and kernel.architecture == "cnn":
        _check_image(kernel, data, f"space {space.name!r} (kind gp, kernel {kernel.kind} with "
                     "architecture cnn)")


def _check_image(space: Any, data: TaskData, where: str) -> None:
    if data.image_shape is None:
        raise SpecError(f"{where}: a CNN needs image data, but the task's features are flat "
                        f"(shape (n, {data.x_train.shape[1]})). Use the digits source, or save "
                        "X_train and X_test in the npz as (n, height, width) or "
                        "(n, channels, height, width) arrays.")
    _, height, width = data.image_shape
    if space.pooling != "none":
        smallest = min(height, width)
        if smallest < 2**space.layers:
            raise SpecError(f"{where}: layers = {space.layers} with pooling {space.pooling!r} "
                            f"halves the {height}x{width} images {space.layers} times, below "
                            "one pixel. Use fewer layers or pooling: none.")
