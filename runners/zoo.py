"""Ready-made model factories for ``kind: torch`` spaces and ``empirical_*`` kernels, named in a
spec like a user's own (``model: "ibdb.runners.zoo:conv1d"``): the architectures a researcher
would compare on a task of signals such as MNIST-1D. Each takes its sizes and ``n_outputs`` (the
task's classes) as keyword arguments, infers its input size from the first batch (lazy layers),
and has no dropout (a hypothesis is its noise alone).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def mlp(width: int, depth: int, n_outputs: int, activation: str = "relu") -> nn.Module:
    """The network of ``kind: mlp`` as a module: flatten, ``depth`` hidden layers of ``width``
    units with the activation, a linear output layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [nn.LazyLinear(width), _ACTIVATIONS[activation]()]
    layers.append(nn.LazyLinear(n_outputs))
    return nn.Sequential(*layers)


def conv1d(channels: int, layers: int, n_outputs: int, kernel_size: int = 5,
           pooling: bool = True) -> nn.Module:
    """A 1-D CNN for signals (N, C, L): ``layers`` convolutions of ``channels`` filters of
    width ``kernel_size`` (zero padding keeps the length), each with a relu and, with
    ``pooling``, a max-pooling of 2; then a linear layer from the flattened maps."""
    body: list[nn.Module] = []
    for _ in range(layers):
        body += [nn.LazyConv1d(channels, kernel_size, padding=kernel_size // 2), nn.ReLU()]
        if pooling:
            body.append(nn.MaxPool1d(2))
    return nn.Sequential(*body, nn.Flatten(), nn.LazyLinear(n_outputs))


class AttentionBlock(nn.Module):
    """One pre-norm transformer block over a signal (N, C, L) cut into L / patch tokens of
    ``patch`` consecutive points (ViT's patches in 1-D; patch 1: every point a token), each
    embedded linearly from its C x patch values plus a learned position embedding;
    multi-head self-attention and a two-layer gelu MLP, each with a residual; the mean over
    tokens, then a linear readout.

    The attention is written with matrix products (as nn.MultiheadAttention computes it, with
    separate q, k, v and output projections) because torch.func.vmap has no batching rule for
    the fused attention kernel on the CPU and would run it one example at a time."""

    def __init__(self, dim: int, heads: int, length: int, n_outputs: int,
                 patch: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim = {dim} must be a multiple of heads = {heads}")
        if length % patch:
            raise ValueError(f"length = {length} must be a multiple of patch = {patch}")
        self.heads, self.patch = heads, patch
        self.embed = nn.LazyLinear(dim)
        self.position = nn.Embedding(length // patch, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.readout = nn.Linear(dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, length = x.shape
        patches = x.reshape(n, channels, length // self.patch, self.patch).permute(0, 2, 1, 3)
        tokens = self.embed(patches.reshape(n, length // self.patch, channels * self.patch))
        tokens = tokens + self.position.weight  # (N, tokens, dim)
        tokens = tokens + self._attend(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return self.readout(tokens.mean(dim=1))

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        n, length, dim = h.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (N, L, dim) -> (N, heads, L, dim / heads)
            return t.reshape(n, length, self.heads, dim // self.heads).transpose(1, 2)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(n, length, dim))


def attention(dim: int, heads: int, length: int, n_outputs: int, patch: int = 1) -> nn.Module:
    """:class:`AttentionBlock`: one transformer block over a signal of ``length`` points, in
    tokens of ``patch`` points."""
    return AttentionBlock(dim, heads, length, n_outputs, patch)


class RandomFeatures(nn.Module):
    """A model linear in its parameters: fixed random relu features of the flattened input
    (a buffer, drawn once from ``seed``: part of the model, not of a hypothesis) and a trained
    linear readout without bias. Trained by full-batch gradient descent to interpolation from a
    Gaussian readout, its test predictions are Gaussian, with the law of a GP posterior whose
    kernel is the features' inner product (the validation fixture of issue 22)."""

    def __init__(self, n_inputs: int, n_features: int, n_outputs: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(n_inputs, n_features,
                                                       generator=generator) / math.sqrt(n_inputs))
        self.readout = nn.Linear(n_features, n_outputs, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.reshape(len(x), -1) @ self.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


def random_features(n_inputs: int, n_features: int, n_outputs: int, seed: int = 0
                    ) -> nn.Module:
    """:class:`RandomFeatures`: ``n_features`` fixed random relu features, a linear readout."""
    return RandomFeatures(n_inputs, n_features, n_outputs, seed)
