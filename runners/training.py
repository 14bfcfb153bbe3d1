"""Training many small networks at once, shared by the network runners (mlp, cnn).

B independent networks of one architecture are trained as one computation: each parameter is a
tensor with a leading axis of B (one slice per network) and every layer is a batched matrix
product (``baddbmm``), so the B networks never mix. The optimiser is torch's own Adam or SGD
applied to the stacked tensors: both are elementwise, so each slice follows exactly the update
its network would get alone.

All of one network's parameters live in one row of a (B, P) tensor, P padded to a multiple of
PAD elements; the layers see views into it. The optimiser thus updates one tensor whose rows
all start on a vector boundary, so every element takes the same (vectorised) arithmetic path
whatever B is (a row length that is not a multiple of the SIMD width would send some elements
through a scalar tail whose rounding differs by one ulp).

Hypothesis ``i`` owns a CPU ``torch.Generator`` seeded with its seed. It draws the network's
initial weights first, then one permutation of the training set per epoch (its data order), so
a network's training does not depend on which others share its batch: on the CPU a network
trained alone is bit-for-bit the same network (the batched products, the reductions and the
optimiser are per-network computations), on a GPU the same up to floating-point rounding.

Explicit noise (``evaluate``, for rare-event samplers that move standard-normal noise z; see
REFERENCE.md, "Rare-event estimation over a runner's noise"): a hypothesis is its noise row z
alone, of ``noise_dim`` = P + E n standard normals (P parameters per network, E epochs, n
training points; E n = 0 for full-batch training, which has no order).
- The first P drive the initial weights (in the order of a parameter row without its padding:
  each parameter tensor row-major, in ``parameter_shapes`` order) through the fixed transform
  w = init_scale / sqrt(fan_in) * (2 Phi(z) - 1) = init_scale / sqrt(fan_in) * erf(z / sqrt 2),
  computed in float64 on the CPU and rounded to float32. For z ~ N(0, 1), 2 Phi(z) - 1 is
  uniform on (-1, 1), so the weights have the law of ``sample``'s (to float32 rounding). (A
  network whose parameters carry a :class:`ParamLaw`, the torch space's, uses each one's law
  instead: uniform as here, normal m + s z, or a constant that takes no normals, so P counts
  the random elements only.)
- The next E n are the data orders: epoch e visits the training points in the order
  argsort(u_e) of its n normals u_e (a stable sort). The ranks of i.i.d. normals are a uniform
  random permutation, the law of ``sample``'s torch.randperm orders; and a small pCN move of u
  swaps a few neighbouring ranks, so a rare-event sampler moves the data order gradually, as it
  moves the weights. (Holding each network's order fixed at its level-0 ancestor's, as ibdb
  did before, leaves the sampler unable to mix over orders: deep levels held copies of a few
  ancestors' orders; docs/decisions/0035-network-noise-moves-all-of-it.md.)
So (noise(seeds)) rows are hypotheses of ``sample``'s law, but a seed does not give the
hypothesis ``sample`` gives for it (there the seed's torch generator draws weights and orders).
These networks have no dropout; were it added, its masks would need normals of their own in z.
``noise(seeds)`` draws z for a seed from NumPy's generator on SeedSequence([seed, NOISE_STREAM]),
a stream unrelated to the seed's torch generator.

Training runs in float32 (as networks usually are trained); the recorded losses are evaluated
in float64 from the trained float32 weights, so they equal a float64 evaluation of the same
weights by any other implementation to rounding.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ibdb.core.errors import IbdbError
from ibdb.data.task import TaskData

# (live networks' original positions, epoch from 1) -> their data orders (len(live), n)
OrderSource = Callable[[np.ndarray, int], torch.Tensor]

# A sampler moves the data-order normals with this fraction of the weights' step. Any value
# keeps the law invariant; a small one keeps the moves local. The stopping rule makes a trained
# network's loss jump when a move changes the epoch it stops at, and with equal steps the order
# moves doubled those jumps (digits MLP: acceptance fell from 5-17 % to 1-20 % and two of three
# repeats stalled); at 1 % an order move swaps a few neighbouring ranks per epoch at the usual
# steps. docs/decisions/0035-network-noise-moves-all-of-it.md.
ORDER_STEP_SCALE = 0.01

PAD = 64  # elements; a multiple of every SIMD width and of a 64-byte cache line

# Elements of activations held at once when evaluating many networks on a whole data set
# (~128 MiB in float64); evaluation walks through the networks in groups that fit it.
EVAL_ELEMENTS = 2**24

# Second word of the SeedSequence from which ``noise`` draws a hypothesis's z (any fixed value;
# changing it changes every hypothesis ``noise`` starts from).
NOISE_STREAM = 0x6E6F697365  # "noise"

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,  # the exact (erf) form, as torch.nn.GELU()
    "sigmoid": torch.sigmoid,
}


@dataclass(frozen=True)
class ParamLaw:
    """The law of a parameter's initial values as a transform of standard normals z:
    ``uniform`` scale * erf(z / sqrt 2) (uniform on +-scale), ``normal`` mean + scale * z,
    ``constant`` every element ``mean`` (or the tensor ``values``), using no normals."""

    kind: str  # "uniform", "normal" or "constant"
    scale: float = 0.0
    mean: float = 0.0
    values: torch.Tensor | None = None

    @property
    def normals(self) -> bool:
        return self.kind != "constant"

    def describe(self) -> str:
        if self.kind == "uniform":
            return f"uniform +-{self.scale!r}"
        if self.kind == "normal":
            return f"normal mean {self.mean!r} std {self.scale!r}"
        if self.values is None:
            return f"constant {self.mean!r}"
        digest = hashlib.sha256(self.values.double().cpu().numpy().tobytes()).hexdigest()
        return f"constant as built sha256:{digest[:16]}"

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        """Float64 values of a parameter in B networks from its normals z (B, elements); a
        constant takes none (the caller writes it)."""
        if self.kind == "uniform":
            return torch.special.erf(z / math.sqrt(2.0)).mul_(self.scale)
        if self.kind == "normal":
            return z * self.scale + self.mean
        raise ValueError("a constant takes no normals")


def initial_values(laws: Sequence[ParamLaw], sizes: Sequence[int], z: torch.Tensor
                   ) -> list[torch.Tensor]:
    """Float64 values (B, size) of each parameter of B networks by its law, from their standard
    normals z (B, normals): the random parameters take theirs in order, a constant none."""
    out, used = [], 0
    for law, size in zip(laws, sizes, strict=True):
        if law.normals:
            out.append(law.transform(z[:, used:used + size]))
            used += size
        else:
            one = law.values.to(torch.float64).reshape(-1) if law.values is not None else \
                torch.full((size,), law.mean, dtype=torch.float64)
            out.append(one.expand(len(z), -1))
    return out


@dataclass(frozen=True)
class ParamShape:
    shape: tuple[int, ...]  # of one network's tensor; the stacked tensor is (B, *shape)
    fan_in: int  # initialisation bound is init_scale / sqrt(fan_in), unless `law` is given
    law: ParamLaw | None = None


class BatchedNetwork:
    """An architecture whose forward pass runs B networks with stacked parameters at once."""

    input_shape: tuple[int, ...]  # of one example, e.g. (d,) or (channels, height, width)

    def parameter_shapes(self) -> list[ParamShape]:
        raise NotImplementedError

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                rows: np.ndarray | None = None) -> torch.Tensor:
        """Outputs (B, n, k) of B networks on their inputs x of shape (B, n, *input_shape);
        ``rows``: the networks' positions in the training under way (see ``start``)."""
        raise NotImplementedError

    def elements_per_example(self) -> int:
        """Activation elements one example needs in the largest layer (to size evaluation)."""
        raise NotImplementedError

    def gradients(self, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  rows: np.ndarray) -> Sequence[torch.Tensor]:
        """Each network's gradient of its own training MSE (mean over its batch's points and
        outputs, against its targets y (B, n, k)), stacked like ``params`` (B, *shape).

        Autograd on the sum of the networks' MSEs: each network's gradient is that of its own
        loss, exactly what torch.nn.MSELoss gives it alone."""
        out = self.forward(params, x, rows=rows)
        loss = (out - y).square().mean(dim=(1, 2)).sum()
        return torch.autograd.grad(loss, params)

    def start(self, total: int) -> None:
        """A training of ``total`` networks begins (a network with state of its own, such as
        batch-norm statistics, sets it up; ``forward``'s ``rows`` index it)."""

    def forward_eval(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                     rows: np.ndarray) -> torch.Tensor:
        """``forward`` when evaluating (no training-time behaviour); ``rows``: the networks'
        positions in the training that made them."""
        return self.forward(params, x)


@dataclass
class _LiveNetworks:
    flat: torch.Tensor  # (B, P) parameter rows, updated in place by the optimiser
    leaves: list[torch.Tensor]  # per-parameter tensors sharing flat's memory
    grad_views: list[torch.Tensor]  # the same views of flat.grad
    optimizer: torch.optim.Optimizer


@dataclass
class TrainedNetworks:
    """B trained networks: their float32 parameter rows (B, P) and the epochs each trained."""

    flat: torch.Tensor
    params: list[torch.Tensor]  # views into `flat`, one (B, *shape) tensor per parameter
    epochs: np.ndarray  # int64, (B,)


class NetworkRunner:
    """Shared runner of trained-network spaces; subclasses only build the architecture.

    ``sample`` trains one network per seed, all of them at once, and records the test and train
    MSE (over points and outputs, against one-hot targets) and 0-1 errors, the epochs each
    trained and whether it met the space's fit criterion. Networks train in float32; losses are
    evaluated in float64 (``losses``). ``evaluate(noise)`` records the same columns for
    networks whose initial weights and data orders come from explicit noise (module docstring).
    """

    kind: ClassVar[str]

    def __init__(self, space: Any, data: TaskData, *, device: torch.device) -> None:
        self.space = space
        self._device = device
        self.net = self.build_network(space, data)
        self._shapes = self.net.parameter_shapes()
        sizes = [math.prod(p.shape) for p in self._shapes]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self._row = -(-self._offsets[-1] // PAD) * PAD  # P: parameters per row, padded
        # normals the initial parameters take (a constant takes none)
        self._param_normals = sum(size for size, p in zip(sizes, self._shapes, strict=True)
                                  if p.law is None or p.law.normals)
        shape = (-1, *self.net.input_shape)
        f32 = {"dtype": torch.float32, "device": device}
        self._x_train = torch.as_tensor(data.x_train.reshape(shape), **f32)
        self._y_train = torch.as_tensor(data.y_train, **f32)
        self._x_test = torch.as_tensor(data.x_test.reshape(shape), **f32)
        self._y_test = torch.as_tensor(data.y_test, **f32)
        self._labels_train = torch.as_tensor(data.y_train.argmax(axis=1), device=device)
        self._labels_test = torch.as_tensor(data.labels_test, dtype=torch.int64, device=device)
        self._fused = self._fused_supported()
        self._info = {
            "parameters_per_network": int(self._offsets[-1]),
            "input_shape": list(self.net.input_shape),
            "n_outputs": int(data.y_train.shape[1]),
            "train_dtype": "float32",
            "loss_dtype": "float64",
            "training_loss": "mse against one-hot targets, mean over batch points and outputs",
            "optimizer_implementation": "fused" if self._fused else "default",
        }

    def build_network(self, space: Any, data: TaskData) -> BatchedNetwork:
        raise NotImplementedError

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def spectrum(self) -> None:
        return None  # a trained network's loss has no closed form

    # -- sampling ------------------------------------------------------------------------------

    def sample(self, hypothesis_ids: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        return self.sample_with_summary(hypothesis_ids, seeds)[0]

    def sample_with_summary(self, hypothesis_ids: np.ndarray, seeds: np.ndarray
                            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``sample``'s losses, and what the mean network needs (see ``_record``): the batch's
        fitted networks' count and summed test residuals (prediction minus one-hot target)."""
        return self._record(self.train(seeds), summary=True)

    def _record(self, trained: TrainedNetworks, *, summary: bool = False) -> Any:
        """The loss columns of trained networks: losses, epochs and the fit flag; with
        ``summary``, also (as a second value) ``n_fitted`` and ``test_residual_sum``, the sum
        over fitted networks of their test predictions minus the targets, (m k) row-major, so
        that summed over a run's shards it gives the mean network's test MSE (``mean_network``
        view) and with it the split of E[test MSE] into that and the spread around it."""
        losses, residuals = self.losses(trained.params, keep_test_residuals=summary)
        fit = self.space.fit
        if fit.criterion == "train_mse":
            fitted = losses["train_mse"] <= fit.train_mse_max
        else:
            fitted = losses["train_error"] == 0.0
        # `fitted` is judged on the recorded float64 values, so SQL over the store can re-check
        # it; the float32 check that stops training can disagree only within rounding of the
        # threshold.
        fitted = np.asarray(fitted, dtype=bool)
        columns = {**losses, "epochs": trained.epochs, "fitted": fitted}
        if not summary:
            return columns
        kept = torch.as_tensor(fitted, device=residuals.device)
        total = residuals[kept].sum(dim=0).reshape(-1)
        return columns, {"n_fitted": int(fitted.sum()),
                         "test_residual_sum": total.cpu().numpy().tolist()}

    # -- explicit noise (see the module docstring) ----------------------------------------------

    @property
    def noise_dim(self) -> int:
        """One standard normal per parameter, then one per training point and epoch (the data
        orders; none for full-batch training)."""
        return self._param_normals + self._order_dim

    @property
    def _order_dim(self) -> int:
        opt = self.space.optimizer
        return 0 if opt.batch_size == "full" else opt.epochs * len(self._x_train)

    @property
    def step_scale(self) -> np.ndarray:
        """1 for the weight normals, ORDER_STEP_SCALE for the data-order normals."""
        return np.concatenate([np.ones(self._param_normals),
                               np.full(self._order_dim, ORDER_STEP_SCALE)])

    def noise(self, seeds: np.ndarray) -> np.ndarray:
        """(B, noise_dim) float64 standard normals, row i from SeedSequence([seeds[i],
        NOISE_STREAM]) alone: hypotheses of ``sample``'s law (not the ones ``sample`` makes for
        these seeds)."""
        seeds = np.asarray(seeds, dtype=np.int64)
        out = np.empty((len(seeds), self.noise_dim))
        for row, seed in zip(out, seeds.tolist(), strict=True):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), NOISE_STREAM]))
            rng.standard_normal(out=row)
        return out

    def evaluate(self, noise: np.ndarray) -> dict[str, np.ndarray]:
        """Losses of the networks that the noise rows make (initial weights from the first P
        normals, data orders from the rest; see the module docstring): the columns ``sample``
        returns."""
        return self._record(self.train_from_noise(noise))

    def train_from_noise(self, noise: np.ndarray) -> TrainedNetworks:
        """Train the networks that the noise rows make (B, noise_dim)."""
        flat = self.parameters_from_noise(noise)
        if self._order_dim == 0:
            return self._train(flat, None)
        n, p = len(self._x_train), self._param_normals
        u = torch.as_tensor(np.asarray(noise, dtype=np.float64)[:, p:]).view(len(flat), -1, n)
        orders = torch.argsort(u, dim=2, stable=True).to(self._device)  # (B, E, n)

        def order(live: np.ndarray, epoch: int) -> torch.Tensor:
            return orders[self._index(live), epoch - 1]
        return self._train(flat, order)

    def parameters_from_noise(self, noise: np.ndarray) -> torch.Tensor:
        """Float32 rows (B, P) of initial parameters, each by its law from its normals in
        ``noise`` (B, noise_dim), computed in float64 on the CPU: a built-in network's w =
        init_scale / sqrt(fan_in) * erf(z / sqrt 2) (= 2 Phi(z) - 1); the padding stays 0."""
        noise = np.asarray(noise, dtype=np.float64)
        if noise.ndim != 2 or noise.shape[1] != self.noise_dim:
            raise IbdbError(f"{self.kind} evaluate: noise must be (B, {self.noise_dim}) (one "
                            "standard normal per parameter, then one per training point and "
                            f"epoch = noise_dim), not {noise.shape}.")
        laws = [p.law or ParamLaw("uniform", scale=self.space.init_scale / math.sqrt(p.fan_in))
                for p in self._shapes]
        sizes = [math.prod(p.shape) for p in self._shapes]
        flat = torch.zeros((len(noise), self._row), dtype=torch.float32)
        for start, stop, values in zip(self._offsets[:-1], self._offsets[1:],
                                       initial_values(laws, sizes, torch.as_tensor(noise)),
                                       strict=True):
            flat[:, start:stop] = values
        return flat.to(self._device)

    def generators(self, seeds: np.ndarray) -> list[torch.Generator]:
        """Each hypothesis's own CPU generator (identical draws on every device)."""
        return [torch.Generator().manual_seed(int(s)) for s in np.asarray(seeds).tolist()]

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The parameters of networks stored as rows of ``flat`` (B, P): (B, *shape) views."""
        return [flat[:, start:stop].view(flat.shape[0], *p.shape) for start, stop, p
                in zip(self._offsets[:-1], self._offsets[1:], self._shapes, strict=True)]

    def initial_parameters(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Float32 rows (B, P) of initial parameters: uniform on +-init_scale/sqrt(fan_in),
        each network's tensors drawn in order from its own generator (PyTorch's default
        initialisation for Linear and Conv2d at init_scale 1); the padding stays 0."""
        flat = torch.zeros((len(generators), self._row), dtype=torch.float32)
        views = self.views(flat)
        for i, gen in enumerate(generators):
            for view, p in zip(views, self._shapes, strict=True):
                bound = self.space.init_scale / math.sqrt(p.fan_in)
                view[i].uniform_(-bound, bound, generator=gen)
        return flat.to(self._device)

    def train(self, seeds: np.ndarray) -> TrainedNetworks:
        """Train one network per seed, all at once; return their final float32 parameters."""
        gens = self.generators(seeds)

        def order(live: np.ndarray, epoch: int) -> torch.Tensor:
            return self._data_order([gens[i] for i in live])
        return self._train(self.initial_parameters(gens),
                           None if self.space.optimizer.batch_size == "full" else order)

    def _train(self, flat: torch.Tensor, order_of: OrderSource | None) -> TrainedNetworks:
        """Train the networks whose initial parameter rows are ``flat`` (B, P). ``order_of(live,
        epoch)`` gives the data orders (len(live), n) of the networks (original positions)
        still training in that epoch (1-based); None for full-batch training."""
        opt_spec, fit = self.space.optimizer, self.space.fit
        live_nets = self._start(flat)
        self.net.start(len(flat))
        n = len(self._x_train)
        batch = n if opt_spec.batch_size == "full" else opt_spec.batch_size
        total = len(flat)
        live = np.arange(total)  # original positions of the networks still training
        final = torch.empty_like(live_nets.flat)
        epochs = np.full(total, opt_spec.epochs, dtype=np.int64)
        for epoch in range(1, opt_spec.epochs + 1):
            order = (torch.arange(n, device=self._device).expand(len(live), n)
                     if order_of is None else order_of(live, epoch))
            for start in range(0, n, batch):
                idx = order[:, start:start + batch]
                grads = self.net.gradients(live_nets.leaves, self._x_train[idx],
                                           self._y_train[idx], live)
                for view, grad in zip(live_nets.grad_views, grads, strict=True):
                    view.copy_(grad)
                live_nets.optimizer.step()
            if not fit.stop_when_fit or epoch == opt_spec.epochs:
                continue
            done = self._meets_criterion(self.views(live_nets.flat), live)
            if done.any():
                epochs[live[done]] = epoch
                final[self._index(live[done])] = live_nets.flat[self._index(np.flatnonzero(done))]
                live = live[~done]
                if len(live) == 0:
                    break
                live_nets = self._keep(live_nets, np.flatnonzero(~done))
        if len(live):
            final[self._index(live)] = live_nets.flat
        return TrainedNetworks(flat=final, params=self.views(final), epochs=epochs)

    def losses(self, params: Sequence[torch.Tensor], *, keep_test_residuals: bool = False
               ) -> tuple[dict[str, np.ndarray], torch.Tensor | None]:
        """Test and train MSE and 0-1 error of stacked networks, evaluated in float64; and, when
        asked, the test residuals (B, m, k) float64 (predictions minus one-hot targets)."""
        params64 = [p.detach().to(torch.float64) for p in params]
        out: dict[str, np.ndarray] = {}
        kept = None
        for split, x, y, labels in (("test", self._x_test, self._y_test, self._labels_test),
                                    ("train", self._x_train, self._y_train, self._labels_train)):
            preds = self.predict(params64, x.to(torch.float64))
            error = (preds.argmax(dim=2) != labels).to(torch.float64).mean(dim=1)
            residuals = preds.sub_(y.to(torch.float64))
            out[f"{split}_mse"] = residuals.square().mean(dim=(1, 2)).cpu().numpy()
            out[f"{split}_error"] = error.cpu().numpy()
            if split == "test" and keep_test_residuals:
                kept = residuals
        return out, kept

    def predict(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                rows: np.ndarray | None = None) -> torch.Tensor:
        """Outputs (B, n, k) of B networks on the same inputs x (n, *input_shape), walking
        through the networks in groups so that activations stay within EVAL_ELEMENTS; ``rows``:
        their positions in the training that made them (default: 0 .. B - 1)."""
        total, n = params[0].shape[0], x.shape[0]
        rows = np.arange(total) if rows is None else rows
        group = max(1, EVAL_ELEMENTS // max(1, n * self.net.elements_per_example()))
        outs = []
        with torch.no_grad():
            for start in range(0, total, group):
                part = [p[start:start + group] for p in params]
                inputs = x.unsqueeze(0).expand(part[0].shape[0], *x.shape)
                outs.append(self.net.forward_eval(part, inputs, rows[start:start + group]))
        return torch.cat(outs)

    # -- internals -----------------------------------------------------------------------------

    def _data_order(self, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """One epoch's orders, one randperm from each generator (full-batch training draws
        none: its gradients do not depend on an order)."""
        n = len(self._x_train)
        return torch.stack([torch.randperm(n, generator=g) for g in gens]).to(self._device)

    def _meets_criterion(self, params: Sequence[torch.Tensor], rows: np.ndarray) -> np.ndarray:
        """The fit criterion on the training set after an epoch (float32), per live network."""
        preds = self.predict(params, self._x_train, rows)
        fit = self.space.fit
        if fit.criterion == "train_mse":
            mse = (preds.to(torch.float64) - self._y_train.to(torch.float64)).square()
            met = mse.mean(dim=(1, 2)) <= fit.train_mse_max
        else:
            met = (preds.argmax(dim=2) == self._labels_train).all(dim=1)
        return met.cpu().numpy()

    def _index(self, rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(rows, dtype=torch.int64, device=self._device)

    def _start(self, flat: torch.Tensor) -> _LiveNetworks:
        # The layers differentiate leaf tensors that share memory with `flat` (so that the
        # optimiser's in-place update of `flat` is what they compute with next); their
        # gradients are copied into the rows of `flat.grad`. Differentiating views of `flat`
        # itself would build a zero-filled (B, P) gradient per parameter and step.
        flat.grad = torch.zeros_like(flat)
        return _LiveNetworks(flat=flat, leaves=[v.detach().requires_grad_()
                                                for v in self.views(flat)],
                             grad_views=self.views(flat.grad),
                             optimizer=self._make_optimizer(flat))

    def _keep(self, nets: _LiveNetworks, rows: np.ndarray) -> _LiveNetworks:
        """Drop the networks that stopped: slice parameters and optimiser state to ``rows``,
        so that the remaining epochs cost only what the live networks need."""
        index = self._index(rows)
        kept = self._start(nets.flat[index])
        # Per-network state (moments, momentum buffers) has the networks' leading axis; the
        # step count is shared by all live networks (they all step together).
        kept.optimizer.state[kept.flat] = {
            key: value[index] if torch.is_tensor(value) and value.dim() > 0 else value
            for key, value in nets.optimizer.state[nets.flat].items()
        }
        return kept

    def _optimizer_kwargs(self) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
        spec = self.space.optimizer
        if spec.kind == "adam":
            return torch.optim.Adam, {"lr": spec.lr, "betas": tuple(spec.betas),
                                      "weight_decay": spec.weight_decay}
        return torch.optim.SGD, {"lr": spec.lr, "momentum": spec.momentum,
                                 "weight_decay": spec.weight_decay}

    def _make_optimizer(self, flat: torch.Tensor) -> torch.optim.Optimizer:
        cls, kwargs = self._optimizer_kwargs()
        if self._fused:
            return cls([flat], fused=True, **kwargs)
        return cls([flat], **kwargs)

    def _fused_supported(self) -> bool:
        # The fused kernels do the whole update in one pass (about twice as fast on a CPU as the
        # per-tensor loop); older torch builds lack them for some devices and optimisers.
        cls, kwargs = self._optimizer_kwargs()
        probe = torch.zeros(1, device=self._device, requires_grad=True)
        try:
            cls([probe], fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            return False
        return True
