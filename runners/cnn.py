"""Small convolutional networks trained from random initialisations (space kind ``cnn``).

``layers`` convolutions (``channels`` filters of ``kernel_size`` squared, zero padding that keeps
the image size), each followed by the activation and an optional 2x2 pooling of stride 2, then a
linear layer from the flattened maps to one output per class. Training and recording are those
of every network space (:mod:`ibdb.runners.training`).

B networks convolve their own images at once as im2col: ``F.unfold`` turns every image into its
patches, and one ``baddbmm`` per layer applies network b's filters to network b's patches only.
A filter bank is stored as (B, in_channels * kernel_size**2, channels), i.e. a torch Conv2d
weight of network b is ``W[b].T.reshape(channels, in_channels, kernel_size, kernel_size)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ibdb.core.errors import SpecError
from ibdb.data.task import TaskData
from ibdb.runners.training import ACTIVATIONS, BatchedNetwork, NetworkRunner, ParamShape
from ibdb.spec.spaces import CNNSpace

POOL = {"max": F.max_pool2d, "avg": F.avg_pool2d}


class BatchedCNN(BatchedNetwork):
    def __init__(self, image_shape: tuple[int, ...], channels: int, layers: int,
                 kernel_size: int, pooling: str, n_outputs: int, activation: str) -> None:
        self.input_shape = tuple(image_shape)
        self.channels, self.layers, self.kernel_size = channels, layers, kernel_size
        self.pool = POOL.get(pooling)
        self.n_outputs = n_outputs
        self.activation = ACTIVATIONS[activation]
        c, h, w = self.input_shape
        self.map_sizes = [(c, h, w)]  # input of each convolution, then the flattened maps
        for _ in range(layers):
            if self.pool is not None:
                h, w = h // 2, w // 2
            self.map_sizes.append((channels, h, w))

    def parameter_shapes(self) -> list[ParamShape]:
        shapes = []
        for c_in, _, _ in self.map_sizes[:-1]:
            fan_in = c_in * self.kernel_size**2
            shapes += [ParamShape((fan_in, self.channels), fan_in),
                       ParamShape((1, self.channels), fan_in)]
        c, h, w = self.map_sizes[-1]
        shapes += [ParamShape((c * h * w, self.n_outputs), c * h * w),
                   ParamShape((1, self.n_outputs), c * h * w)]
        return shapes

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                rows: np.ndarray | None = None) -> torch.Tensor:
        nets, n = x.shape[:2]
        maps = x.reshape(nets * n, *self.input_shape)
        for layer in range(self.layers):
            weight, bias = params[2 * layer], params[2 * layer + 1]
            height, width = maps.shape[2:]
            patches = F.unfold(maps, self.kernel_size, padding=self.kernel_size // 2)
            # (B n, C k k, H W) -> (B, n H W, C k k): rows are network b's patches
            patches = patches.view(nets, n, -1, height * width).transpose(2, 3)
            out = self.activation(torch.baddbmm(bias, patches.reshape(nets, n * height * width,
                                                                      -1), weight))
            maps = (out.view(nets, n, height, width, self.channels).permute(0, 1, 4, 2, 3)
                    .reshape(nets * n, self.channels, height, width))
            if self.pool is not None:
                maps = self.pool(maps, 2)
        head_w, head_b = params[-2], params[-1]
        return torch.baddbmm(head_b, maps.reshape(nets, n, -1), head_w)

    def elements_per_example(self) -> int:
        # the patches of the largest layer dominate: C k^2 values per pixel
        return max(c * self.kernel_size**2 * h * w + self.channels * h * w
                   for c, h, w in self.map_sizes[:-1])


class CNNRunner(NetworkRunner):
    """Samples CNN hypotheses on image tasks: trains one network per seed (all at once, in
    float32) and records float64 test / train MSE and 0-1 error, epochs and whether it fit."""

    kind = "cnn"

    def build_network(self, space: CNNSpace, data: TaskData) -> BatchedCNN:
        if data.image_shape is None:  # the plan's check says so first, with advice
            raise SpecError(f"space {space.name!r}: a CNN needs image data; this task has flat "
                            "features.")
        return BatchedCNN(data.image_shape, space.channels, space.layers, space.kernel_size,
                          space.pooling, data.y_train.shape[1], space.activation)


RUNNER = CNNRunner
