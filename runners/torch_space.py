"""Any PyTorch model as a hypothesis space (space kind ``torch``): copies of the user's module
trained from random initialisations, as the built-in networks are (:mod:`ibdb.runners.training`).

Batched training: the B copies' parameters are rows of one (B, P) tensor, as for the built-in
networks, and the module runs on them through ``torch.func.functional_call``:

- ``batched matrix products``: a plain ``nn.Sequential`` of Linear layers and elementwise
  activations (an MLP) runs as one ``baddbmm`` per layer, features first, at the speed of a
  hand-written batched trainer (BENCHMARKS.md);
- ``vmap``: one vectorised call over the copies (``torch.func.vmap``), when the module allows it
  (checked once, on two copies, forward and backward), each copy's gradient by
  ``vmap(grad(loss))``;
- ``one at a time``: otherwise (a module that vmap cannot trace, or one whose buffers training
  updates, such as BatchNorm's running statistics), each copy's forward runs alone, with buffers
  of its own; the optimiser step is still one fused update of all rows.
The choice and its reason are in the run's ``runner_info`` (``training``, ``training_reason``).

Randomness is explicit: hypothesis i is the network its noise row makes, ``noise(seed_i)`` (the
initial parameters by each one's law, see ``runners/torch_model.py``, then the data orders; see
``runners/training.py``). ``sample`` is ``evaluate(noise(seeds))``, so a splitting block's first
level and an i.i.d. run hold the very same hypotheses for the same seeds. The model trains in
mode ``train()`` and is evaluated (test and train losses, the fit criterion) in mode ``eval()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ibdb.data.task import TaskData
from ibdb.runners.torch_model import activations_per_example, build_module, parameter_laws
from ibdb.runners.training import BatchedNetwork, NetworkRunner, ParamShape, TrainedNetworks

VMAP, ONE_AT_A_TIME, MATMUL = "vmap", "one at a time", "batched matrix products"

# Layers a plain stack of which (nn.Sequential: Flatten first, then Linear layers and these
# elementwise activations) runs as batched matrix products (see _stack_forward)
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.Identity)


class ModuleNetwork(BatchedNetwork):
    """B copies of one ``nn.Module`` with stacked parameters (see the module docstring)."""

    def __init__(self, module: nn.Module, laws: list, input_shape: tuple[int, ...]) -> None:
        self.module = module
        self.input_shape = tuple(input_shape)
        self.names = [name for name, _, _ in laws]
        self._shapes = [ParamShape(tuple(p.shape), max(1, p.numel()), law)
                        for _, p, law in laws]
        self._buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
        self._state: dict[str, torch.Tensor] = {}  # per-copy buffers (one at a time)
        self._units = activations_per_example(module, self.input_shape)
        self._stack = _linear_stack(module)
        if self._stack is not None:
            self.mode, self.reason = MATMUL, ("a stack of Linear layers and elementwise "
                                              "activations: one baddbmm per layer")
        else:
            self.mode, self.reason = self._choose_mode()

    def parameter_shapes(self) -> list[ParamShape]:
        return list(self._shapes)

    def elements_per_example(self) -> int:
        return self._units

    def start(self, total: int) -> None:
        if self.mode == ONE_AT_A_TIME:  # every copy starts from the buffers the factory built
            self._state = {name: b.unsqueeze(0).repeat(total, *([1] * b.dim()))
                           for name, b in self._buffers.items()}

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                rows: np.ndarray | None = None) -> torch.Tensor:
        self.module.train()
        return self._run(params, x, rows)

    def gradients(self, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  rows: np.ndarray) -> Sequence[torch.Tensor]:
        """Under vmap, each copy's gradient of its own MSE by ``vmap(grad(loss))`` (the
        torch.func ensembling recipe): the backward runs per copy, in the layout a module
        trained alone has, and the gradients come out stacked and contiguous (differentiating
        the vmapped forward from outside computes them transposed, about a quarter slower)."""
        if self.mode != VMAP:  # (autograd on the summed losses, through _run)
            return super().gradients(params, x, y, rows)
        self.module.train()
        one = self._one_copy(params[0])

        def loss(p: tuple[torch.Tensor, ...], xb: torch.Tensor, yb: torch.Tensor
                 ) -> torch.Tensor:
            return (one(p, xb) - yb).square().mean()
        return vmap(grad(loss))(tuple(p.detach() for p in params), x, y)

    def _one_copy(self, like: torch.Tensor) -> Any:
        """``f(p, xb)``: the module on one copy's parameters p (in ``names`` order) and inputs
        xb, with the factory's buffers in ``like``'s dtype and device (what vmap maps)."""
        buffers = {n: _like(b, like.dtype, like.device) for n, b in self._buffers.items()}

        def one(p: tuple[torch.Tensor, ...], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.module, {**dict(zip(self.names, p, strict=True)),
                                                 **buffers}, (xb,))
        return one

    def forward_eval(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                     rows: np.ndarray) -> torch.Tensor:
        self.module.eval()
        try:
            return self._run(params, x, rows)
        finally:
            self.module.train()

    def _run(self, params: Sequence[torch.Tensor], x: torch.Tensor,
             rows: np.ndarray | None) -> torch.Tensor:
        dtype, device = params[0].dtype, params[0].device
        if self.mode == MATMUL:
            return self._stack_forward(params, x)
        if self.mode == VMAP:
            return vmap(self._one_copy(params[0]))(tuple(params), x)
        rows = np.arange(len(x)) if rows is None else rows
        outs = []
        for b, row in enumerate(rows.tolist()):
            # (a copy's own buffers, as views: batch norm updates them in place; cast, they
            # are copies, which evaluation does not update)
            own = {n: _like(state[row], dtype, device) for n, state in self._state.items()} \
                if self._state else {n: _like(v, dtype, device) for n, v in
                                     self._buffers.items()}
            named = dict(zip(self.names, (p[b] for p in params), strict=True))
            outs.append(functional_call(self.module, {**named, **own}, (x[b],)))
        return torch.stack(outs)

    def _stack_forward(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """A Linear stack on B copies at once, features first: h (B, features, n) and each
        layer h = b + W h, one baddbmm, so that W's gradient comes out as (B, out, in), the
        layout of its parameter row (computing x W^T as a module does would give it
        transposed, and copying it into the row would cost a strided pass per step)."""
        h = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)
        named = dict(zip(self.names, params, strict=True))
        for name, layer in self._stack:
            if isinstance(layer, nn.Linear):
                bias = named.get(f"{name}.bias")
                weight = named[f"{name}.weight"]
                h = torch.bmm(weight, h) if bias is None else \
                    torch.baddbmm(bias.unsqueeze(-1), weight, h)
            else:
                h = layer(h)
        return h.transpose(1, 2)

    def _choose_mode(self) -> tuple[str, str]:
        """vmap when two copies run through it forward and backward in training mode and
        leave the buffers as they were; else one copy at a time, with the reason."""
        params = [p.detach().unsqueeze(0).repeat(2, *([1] * p.dim())).requires_grad_()
                  for _, p in self.module.named_parameters()]
        x = torch.randn((2, 3, *self.input_shape), generator=torch.Generator().manual_seed(0))
        x = x.to(params[0].device if params else "cpu")
        before = {n: b.clone() for n, b in self._buffers.items()}
        self.mode = VMAP
        try:
            out = self.forward(params, x)
            out.square().sum().backward()
            moved = [n for n, b in self._buffers.items() if not torch.equal(b, before[n])]
        except Exception as exc:  # whatever vmap refuses: the slower path runs any module
            return ONE_AT_A_TIME, f"vmap failed: {type(exc).__name__}: {str(exc)[:200]}"
        finally:  # (the probe must leave the factory's buffers as they were)
            for name, b in self._buffers.items():
                b.copy_(before[name])
        if moved:
            return ONE_AT_A_TIME, f"training updates buffers {moved}"
        return VMAP, "the module runs under torch.func.vmap"


def _linear_stack(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The layers of an nn.Sequential of an optional leading Flatten, Linear layers and
    elementwise activations, without buffers (else None): what _stack_forward runs."""
    if type(module) is not nn.Sequential or list(module.buffers()):
        return None
    layers = list(module.named_children())
    if layers and isinstance(layers[0][1], nn.Flatten):
        if (layers[0][1].start_dim, layers[0][1].end_dim) != (1, -1):
            return None
        layers = layers[1:]
    if not any(isinstance(m, nn.Linear) for _, m in layers):
        return None
    if not all(type(m) is nn.Linear or type(m) in _ELEMENTWISE for _, m in layers):
        return None
    if any(isinstance(m, nn.GELU) and m.approximate != "none" for _, m in layers):
        return None
    return layers


def _like(t: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)


class TorchRunner(NetworkRunner):
    """Samples a user's model: trains copies from their noise rows (all at once under vmap, or
    one copy at a time) and records float64 test / train MSE and 0-1 error, epochs and fit."""

    kind = "torch"

    def __init__(self, space: Any, data: TaskData, *, device: torch.device) -> None:
        super().__init__(space, data, device=device)
        self._info.update({
            "model": space.model,
            "training": self.net.mode,
            "training_reason": self.net.reason,
            "parameters_with_noise": self._param_normals,
        })

    def build_network(self, space: Any, data: TaskData) -> ModuleNetwork:
        module = build_module(space, data.input_shape, data.n_outputs)
        laws = parameter_laws(space, module, data.input_shape, data.n_outputs)
        return ModuleNetwork(module.to(self._device), laws, data.input_shape)

    def train(self, seeds: np.ndarray) -> TrainedNetworks:
        """The networks of the seeds' noise rows (a seed gives the hypothesis its row makes)."""
        return self.train_from_noise(self.noise(seeds))


RUNNER = TorchRunner
