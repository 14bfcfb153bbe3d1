"""Ready-made model factories for ``kind: torch`` spaces and ``empirical_*`` kernels, named in a
spec like a user's own (``model: "ibdb.runners.zoo:conv1d"``): the architectures a researcher
would compare on a task of signals such as MNIST-1D. Each takes its sizes and ``n_outputs`` (the
task's classes) as keyword arguments, infers its input size from the first batch (lazy layers),
and has no dropout (a hypothesis is its noise alone).
"""

from __future__ import annotations

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
    """One pre-norm transformer block over the points of a signal (N, C, L): each of the L
    points is a token, embedded linearly from its C values plus a learned position embedding;
    self-attention and a two-layer gelu MLP, each with a residual; the mean over tokens, then a
    linear readout."""

    def __init__(self, dim: int, heads: int, length: int, n_outputs: int) -> None:
        super().__init__()
        self.embed = nn.LazyLinear(dim)
        self.position = nn.Embedding(length, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.readout = nn.Linear(dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.transpose(1, 2)) + self.position.weight  # (N, L, dim)
        h = self.norm1(tokens)
        tokens = tokens + self.attention(h, h, h, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return self.readout(tokens.mean(dim=1))


def attention(dim: int, heads: int, length: int, n_outputs: int) -> nn.Module:
    """:class:`AttentionBlock`: one transformer block over a signal of ``length`` points."""
    return AttentionBlock(dim, heads, length, n_outputs)
