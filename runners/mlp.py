"""Fully connected networks trained from random initialisations (space kind ``mlp``).

A hypothesis is the network that training produces from hypothesis i's own initialisation and
data order: ``depth`` hidden layers of ``width`` units with the space's activation, then a linear
layer to one output per class, trained on the MSE against one-hot targets with the space's
optimiser (see :mod:`ibdb.runners.training` for the batched training and the float32 / float64
split). Layer l's weight is stored as (B, fan_in, fan_out), so a layer is one ``baddbmm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ibdb.data.task import TaskData
from ibdb.runners.training import ACTIVATIONS, BatchedNetwork, NetworkRunner, ParamShape
from ibdb.spec.spaces import MLPSpace


class BatchedMLP(BatchedNetwork):
    def __init__(self, n_inputs: int, width: int, depth: int, n_outputs: int,
                 activation: str) -> None:
        self.input_shape = (n_inputs,)
        self.sizes = [n_inputs] + [width] * depth + [n_outputs]
        self.activation = ACTIVATIONS[activation]

    def parameter_shapes(self) -> list[ParamShape]:
        shapes = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            shapes += [ParamShape((fan_in, fan_out), fan_in), ParamShape((1, fan_out), fan_in)]
        return shapes

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                rows: np.ndarray | None = None) -> torch.Tensor:
        h = x
        n_layers = len(self.sizes) - 1
        for layer in range(n_layers):
            weight, bias = params[2 * layer], params[2 * layer + 1]
            h = torch.baddbmm(bias, h, weight)
            if layer < n_layers - 1:
                h = self.activation(h)
        return h

    def elements_per_example(self) -> int:
        return max(self.sizes)


class MLPRunner(NetworkRunner):
    """Samples MLP hypotheses: trains one network per seed (all at once, in float32) and records
    float64 test / train MSE and 0-1 error, epochs trained and whether it fit."""

    kind = "mlp"

    def build_network(self, space: MLPSpace, data: TaskData) -> BatchedMLP:
        return BatchedMLP(data.x_train.shape[1], space.width, space.depth,
                          data.y_train.shape[1], space.activation)


RUNNER = MLPRunner
