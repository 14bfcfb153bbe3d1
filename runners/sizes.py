"""Rough memory of a space's runs on a loaded task, torch-free: what the plan checks against the
machine before anything is allocated (each space kind names its function in
:data:`ibdb.spec.spaces.SPACES`, ``sizes(space, data) -> Sizes``).

Estimates are float64 everywhere, though networks train in float32 (about twice what is
needed): they turn an absurd size into a message, not predict the peak to the byte. n_train,
n_test, k classes, d features (c x h x w for images):

- gp: per hypothesis its (n_test, k) normals and predictions (float32) and temporaries,
  12 n_test k; conditioned on a fit (``fit``), 16 (n_train + n_test) k more; fixed, its kernel
  matrices, n_train^2 + n_train n_test + n_test^2 float64;
- mlp: P parameters (weights, gradients, two optimiser moments: 4 P) and activations for train
  and test points, forward and backward (3 (n_train + n_test) (depth width + k));
- cnn: the same with the convolutions' parameters and feature maps (channels x h x w per layer,
  halved by each pooling).

``noise_dim`` is the length of one hypothesis's noise vector, what a splitting block moves (the
runners' ``noise_dim``, computed without building a runner): a gp's n_test k normals (plus
n_train k + 1 when conditioned on a fit); a network's one per parameter, plus one per training
point and epoch for its data orders (none for full-batch training).
"""

from __future__ import annotations

from dataclasses import dataclass

from ibdb.data.task import TaskData
from ibdb.spec.spaces import CNNSpace, GPSpace, MLPSpace


@dataclass(frozen=True)
class Sizes:
    per_hypothesis: int  # bytes one hypothesis takes while its chunk is sampled
    formula: str  # how per_hypothesis is estimated, for messages
    noise_dim: int | None = None  # None: the space has no explicit noise (no splitting)
    fixed: int = 0  # bytes a run holds whatever its chunk
    fixed_what: str = ""  # what those are, for messages


def gp_sizes(space: GPSpace, data: TaskData) -> Sizes:
    n_train, n_test = len(data.x_train), len(data.x_test)
    k = data.y_train.shape[1]
    per = 12 * n_test * k + 64
    formula = "12 bytes x n_test x k"
    if space.fit is not None:
        per += 16 * (n_train + n_test) * k
        formula += " + 16 bytes x (n_train + n_test) x k"
    return Sizes(
        per, formula, noise_dim=n_test * k + (n_train * k + 1 if space.fit is not None else 0),
        fixed=8 * (n_train**2 + n_train * n_test + n_test**2),
        fixed_what=f"the gp space's kernel matrices for n_train = {n_train}, n_test = "
                   f"{n_test} (8 bytes x (n_train^2 + n_train n_test + n_test^2))")


def network_sizes(space: MLPSpace | CNNSpace, data: TaskData) -> Sizes:
    n_train, n_test = len(data.x_train), len(data.x_test)
    params, units = network_size(space, data)
    opt = space.optimizer
    return Sizes(
        8 * (4 * params + 3 * (n_train + n_test) * units),
        f"8 bytes x (4 x {params} parameters + 3 x (n_train + n_test) x {units} units)",
        noise_dim=params + (0 if opt.batch_size == "full" else opt.epochs * n_train))


def network_size(space: MLPSpace | CNNSpace, data: TaskData) -> tuple[int, int]:
    """(parameters, units) of one network of an mlp or cnn space on ``data``: its weights and
    biases, and the activations per point (every hidden unit of every layer, plus the k
    outputs; a cnn's feature maps are channels x h x w, halved by each pooling)."""
    k, d = data.y_train.shape[1], data.x_train.shape[1]
    if space.kind == "mlp":
        w, depth = space.width, space.depth
        if depth == 0:
            return (d + 1) * k, k
        return (d + 1) * w + (depth - 1) * (w + 1) * w + (w + 1) * k, depth * w + k
    channels_in, height, width = data.image_shape or (1, 1, d)
    c, ks = space.channels, space.kernel_size
    params, units = 0, 0
    for _ in range(space.layers):
        params += channels_in * c * ks * ks + c
        units += c * height * width
        channels_in = c
        if space.pooling != "none":
            height, width = max(1, height // 2), max(1, width // 2)
    return params + c * height * width * k + k, units + k
