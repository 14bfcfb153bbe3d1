"""Space kind ``torch`` benchmark: ibdb training copies of a user's module against hand-written
batched trainers of the same networks, in the same run, on one thread.

Task: digits, n_train 300, n_test 300 (the task of bench_mlp.py). Networks: ``--depth`` hidden
layers of ``--width`` units (ReLU; default one of 64), 10 outputs, MSE against one-hot targets,
Adam lr 1e-3 (torch's betas and eps), batch 32, ``--epochs`` epochs (default 20) with no early
stop (``stop_when_fit: false``), so every implementation trains every network for the same
number of steps (10 per epoch, the last of 12 points); ``--networks`` networks at once
(default 256, one chunk of a real run).

- torch (a): ibdb's ``kind: torch`` with the ready-made factory
  ``ibdb.runners.zoo:mlp`` (Flatten + LazyLinear layers; a plain stack, which ibdb runs as one
  baddbmm per layer, features first): ``TorchRunner.sample``, i.e.
  each hypothesis's noise row (initial weights by PyTorch's default laws, data orders), the
  copies trained under ``torch.func.vmap`` over ``functional_call`` with stacked parameters and
  torch's fused Adam on one (B, P) tensor, then float64 test and train MSE and 0-1 error.
- mlp (b): ibdb's built-in ``kind: mlp`` of the same architecture (``MLPRunner.sample``: the
  same loop, a hand-batched ``baddbmm`` forward).
- func (c): what a competent ``torch.func`` user writes (the torch "model ensembling" recipe):
  B ``torch.nn`` models (each seeded, PyTorch's default initialisation) stacked by
  ``torch.func.stack_module_state``, per-network gradients from
  ``torch.vmap(torch.func.grad(loss))`` over ``functional_call``, one fresh data order per
  network and epoch (``argsort`` of uniform draws, one call for all), the stacked tensors
  handed to ``torch.optim.Adam(fused=True)``; then float64 test and train MSE / 0-1 error of
  every network (vmapped ``functional_call``), as ibdb records. (bench_mlp.py's
  ``vmap_torch_adam``.)
- bmm (d): a hand-written batched trainer: weights stored (B, fan_in, fan_out), every layer one
  ``torch.baddbmm``, autograd on the sum of the networks' MSEs, ``torch.optim.Adam(fused=True)``
  on the stacked tensors, the same data orders and float64 evaluation as (c).

Same work, checked before timing (``--check-networks``, 0 skips): that many networks trained
from identical initial weights and data orders (ibdb torch's, from its noise rows) by (a), (c)
and (d) agree in final parameters and float64 test MSE to float32 rounding (not bit for bit:
the products sum in different orders). The built-in mlp (b) draws other networks for the same
seeds (its own generators), so it is not in the check; its mean losses are printed beside the
others'.

Timing: all four in one process on one torch thread (``torch.set_num_threads(1)``; the
requirement is per core), after an untimed warm-up of each, alternating over ``--repeats``
rounds so that a busy machine slows all alike; medians of networks per second (wall) and of
process CPU time per network (which other processes on a shared machine disturb less). Printed:
each one's rates and the ratios (a)/(c), (a)/(d), (b)/(d) (rate over rate, and the inverse
ratio of CPU times: above 1 means the first is faster), against the requirement that (a) reach
at least 1.0x both (c) and (d).

Usage: python benchmarks/bench_torch_space.py [--networks 256] [--repeats 5] [--epochs 20]
       [--width 64] [--depth 1] [--n-train 300] [--check-networks 8] [--threads 1]
About 1-2 minutes by default on a shared 2-core VM (each round trains 4 x 256 networks).
Smallest settings (what tests/test_benchmarks.py runs, a few seconds):
       python benchmarks/bench_torch_space.py --networks 8 --repeats 1 --epochs 2 \
           --n-train 100 --check-networks 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable

import numpy as np
import torch
from _timing import Clock, cpu_name  # benchmarks/_timing.py (the script's folder)
from torch import nn
from torch.func import functional_call, grad, stack_module_state

from ibdb.data.task import load_task
from ibdb.run.plan import hypothesis_seeds
from ibdb.runners import zoo
from ibdb.runners.mlp import MLPRunner
from ibdb.runners.torch_space import TorchRunner
from ibdb.spec.sources import Task
from ibdb.spec.spaces import parse_space

LR, BETAS, EPS, BATCH = 1e-3, (0.9, 0.999), 1e-8, 32  # torch.optim.Adam's betas and eps
CPU = torch.device("cpu")


class Settings:
    def __init__(self, args: argparse.Namespace) -> None:
        self.width, self.depth, self.epochs = args.width, args.depth, args.epochs
        self.n_train, self.n_test = args.n_train, args.n_test


def digits(s: Settings):
    task = Task.model_validate({"name": f"digits-{s.n_train}", "source": {"kind": "digits"},
                                "n_train": s.n_train, "n_test": s.n_test, "eps": [0.05]})
    return load_task(task, spec_dir=".")


def _trained_space(s: Settings) -> dict:
    return {"optimizer": {"kind": "adam", "lr": LR, "epochs": s.epochs, "batch_size": BATCH},
            "fit": {"criterion": "train_accuracy", "stop_when_fit": False}}


def torch_runner(data, s: Settings, device=CPU,
                 model: str = "ibdb.runners.zoo:mlp") -> TorchRunner:
    """ibdb's torch space of ``model`` (a factory of the MLP's arguments)."""
    space = parse_space({"name": "torch", "kind": "torch", "model": model,
                         "model_args": {"width": s.width, "depth": s.depth,
                                        "n_outputs": int(data.y_train.shape[1]),
                                        "activation": "relu"},
                         **_trained_space(s)})
    return TorchRunner(space, data, device=device)


class WrappedMLP(torch.nn.Module):
    """The zoo's MLP inside a Module of its own: not a plain nn.Sequential, so ibdb trains it
    on the general path (vmap(grad) over functional_call), as it would any user's model."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.net = zoo.mlp(**kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def wrapped_mlp(**kwargs: object) -> torch.nn.Module:
    return WrappedMLP(**kwargs)


def mlp_runner(data, s: Settings, device=CPU) -> MLPRunner:
    space = parse_space({"name": "mlp", "kind": "mlp", "width": s.width, "depth": s.depth,
                         "activation": "relu", **_trained_space(s)})
    return MLPRunner(space, data, device=device)


def _summary(out: dict[str, np.ndarray]) -> dict[str, float]:
    return {"test_mse": float(np.mean(out["test_mse"])),
            "train_error": float(np.mean(out["train_error"]))}


def time_runner(runner, n: int, seed: int = 0):
    ids = np.arange(n)
    with Clock() as clock:
        out = runner.sample(ids, hypothesis_seeds(seed, ids))  # numpy: the device has finished
    return clock, _summary(out)


# -- the hand-written trainers -----------------------------------------------------------------


class _Trainer:
    """What (c) and (d) share: the task's tensors, data orders, the training loop."""

    def __init__(self, data, s: Settings, device=CPU) -> None:
        self.s, self.dev = s, torch.device(device)
        f32 = {"dtype": torch.float32, "device": self.dev}
        self.x_train = torch.as_tensor(data.x_train, **f32)  # flat (n, d): the models flatten
        self.y_train = torch.as_tensor(data.y_train, **f32)
        self.x_test = torch.as_tensor(data.x_test, **f32)
        self.y_test = torch.as_tensor(data.y_test, **f32)
        self.sizes = [self.x_train.shape[1]] + [s.width] * s.depth + [self.y_train.shape[1]]

    def orders(self, b: int, gen: torch.Generator) -> torch.Tensor:
        """One permutation of the training set per network for the next epoch: (B, n)."""
        keys = torch.rand(b, len(self.x_train), generator=gen)
        return torch.argsort(keys, dim=1).to(self.dev)

    def optimizer(self, leaves: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(leaves, lr=LR, betas=BETAS, eps=EPS, fused=True)

    def train(self, params, orders: list[torch.Tensor] | None = None, seed: int = 0):
        """Train the stacked ``params`` in place; ``orders`` (one (B, n) tensor per epoch), else
        each network draws its own order every epoch."""
        leaves = list(params.values())
        b, n = leaves[0].shape[0], len(self.x_train)
        gen = torch.Generator().manual_seed(seed)
        opt = self.optimizer(leaves)
        for epoch in range(self.s.epochs):
            order = orders[epoch] if orders is not None else self.orders(b, gen)
            for start in range(0, n, BATCH):
                idx = order[:, start:start + BATCH]
                self.step(params, self.x_train[idx], self.y_train[idx])
                opt.step()
        return params

    def run(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        return self.evaluate(self.train(self.init(n, seed), seed=seed))


class FuncTrainer(_Trainer):
    """(c): torch.nn models stacked by stack_module_state, trained under torch.vmap."""

    def __init__(self, data, s: Settings, device=CPU) -> None:
        super().__init__(data, s, device)
        self.base = self.model().to("meta")

        def loss(params, xb, yb):
            return (functional_call(self.base, params, (xb,)) - yb).square().mean()

        def predict(params, x):
            return functional_call(self.base, params, (x,))

        self.grads = torch.vmap(grad(loss))  # each network's gradient of its own MSE
        self.predict = torch.vmap(predict, in_dims=(0, None))

    def model(self) -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(self.sizes[:-2], self.sizes[1:-1], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(self.sizes[-2], self.sizes[-1]))
        return nn.Sequential(*layers)

    def init(self, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
        models = []
        for i in range(n):
            torch.manual_seed(seed * 1_000_003 + i)
            models.append(self.model().to(self.dev))
        params, _ = stack_module_state(models)
        return {k: v.detach() for k, v in params.items()}

    def step(self, params, xb, yb) -> None:
        for leaf, g in zip(params.values(), self.grads(params, xb, yb).values(), strict=True):
            leaf.grad = g

    def evaluate(self, params) -> dict[str, np.ndarray]:
        p64 = {k: v.to(torch.float64) for k, v in params.items()}
        with torch.no_grad():
            return _losses(lambda x: self.predict(p64, x), self)


class BmmTrainer(_Trainer):
    """(d): weights (B, fan_in, fan_out), biases (B, 1, fan_out); a layer is one baddbmm."""

    def init(self, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        params = {}
        for layer, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:],
                                                      strict=True)):
            bound = 1 / fan_in ** 0.5  # PyTorch's default Linear initialisation
            for name, shape in (("w", (n, fan_in, fan_out)), ("b", (n, 1, fan_out))):
                u = torch.rand(shape, generator=gen).mul_(2 * bound).sub_(bound)
                params[f"{name}{layer}"] = u.to(self.dev).requires_grad_()
        return params

    @staticmethod
    def forward(params, x: torch.Tensor) -> torch.Tensor:
        p = list(params.values())
        h = x
        for layer in range(len(p) // 2):
            h = torch.baddbmm(p[2 * layer + 1], h, p[2 * layer])
            if layer < len(p) // 2 - 1:
                h = torch.relu(h)
        return h

    def step(self, params, xb, yb) -> None:
        for leaf in params.values():
            leaf.grad = None
        (self.forward(params, xb) - yb).square().mean(dim=(1, 2)).sum().backward()

    def evaluate(self, params) -> dict[str, np.ndarray]:
        p64 = {k: v.detach().to(torch.float64) for k, v in params.items()}
        b = next(iter(p64.values())).shape[0]
        with torch.no_grad():
            return _losses(lambda x: self.forward(p64, x.expand(b, *x.shape)), self)


def _losses(predict: Callable[[torch.Tensor], torch.Tensor], t: _Trainer
            ) -> dict[str, np.ndarray]:
    """Float64 test and train MSE and 0-1 error per network, from predictions (B, n, k)."""
    out = {}
    for split, x, y in (("test", t.x_test, t.y_test), ("train", t.x_train, t.y_train)):
        preds = predict(x.to(torch.float64))
        out[f"{split}_mse"] = (preds - y.to(torch.float64)).square().mean(dim=(1, 2)).cpu().numpy()
        out[f"{split}_error"] = ((preds.argmax(dim=2) != y.argmax(dim=1)).to(torch.float64)
                                 .mean(dim=1).cpu().numpy())
    return out


def time_trainer(trainer: _Trainer, n: int, seed: int = 0):
    with Clock() as clock:
        out = trainer.run(n, seed)
    return clock, _summary(out)


# -- same work: identical starts and data orders through (a), (c) and (d) ----------------------


def check_same_work(runner: TorchRunner, func: FuncTrainer, bmm: BmmTrainer, n: int) -> dict:
    noise = runner.noise(hypothesis_seeds(0, np.arange(n)))
    flat = runner.parameters_from_noise(noise)
    # contiguous copies: the views of `flat` are strided, and a fused optimiser needs a
    # parameter and its gradient in the same layout
    start = {k: v.cpu().contiguous() for k, v in zip(runner.net.names, runner.views(flat),
                                                     strict=True)}
    n_train, p = len(func.x_train), runner._param_normals
    u = torch.as_tensor(noise[:, p:]).view(n, -1, n_train)
    orders = list(torch.argsort(u, dim=2, stable=True).unbind(1))  # as training.py makes them
    ours = runner.train_from_noise(noise)
    names = runner.net.names  # the factory's: Flatten is layer 0, so "1.weight", "1.bias", ...
    finals = {"torch": dict(zip(names, (v.cpu() for v in ours.params), strict=True))}
    # (c): its own model names the layers 1, 3, ... too (Flatten first)
    given = {k: v.to(func.dev, copy=True) for k, v in start.items()}
    finals["func"] = {k: v.detach().cpu() for k, v in
                      func.train(given, [o.to(func.dev) for o in orders]).items()}
    given = {}
    for layer in range(len(names) // 2):
        w, b = start[names[2 * layer]], start[names[2 * layer + 1]]
        given[f"w{layer}"] = w.transpose(1, 2).contiguous().to(bmm.dev).requires_grad_()
        given[f"b{layer}"] = b.unsqueeze(1).to(bmm.dev, copy=True).requires_grad_()
    trained = bmm.train(given, [o.to(bmm.dev) for o in orders])
    back = {}
    for layer in range(len(names) // 2):
        back[names[2 * layer]] = trained[f"w{layer}"].detach().transpose(1, 2).cpu()
        back[names[2 * layer + 1]] = trained[f"b{layer}"].detach()[:, 0].cpu()
    finals["bmm"] = back
    losses = {name: func.evaluate({k: v.to(func.dev) for k, v in f.items()})
              for name, f in finals.items()}
    recorded = runner.losses(ours.params)[0]
    report = {"networks": n, "max_abs_test_mse_ibdb_recorded_vs_func_eval": float(
        np.abs(recorded["test_mse"] - losses["torch"]["test_mse"]).max())}
    for other in ("func", "bmm"):
        diff = max(float((finals["torch"][k] - finals[other][k]).abs().max()) for k in start)
        rel = np.abs(losses["torch"]["test_mse"] - losses[other]["test_mse"]) / \
            losses["torch"]["test_mse"]
        equal = int((losses["torch"]["train_error"] == losses[other]["train_error"]).sum())
        report[f"torch_vs_{other}"] = {
            "max_abs_final_parameter_difference": diff,
            "max_relative_test_mse_difference": float(rel.max()),
            "train_error_equal": f"{equal}/{n}",
        }
    return report


LABELS = {"torch": "(a) ibdb kind torch (mlp factory, batched matrix products)",
          "vmap": "(a2) ibdb kind torch (the same MLP in a Module of its own: vmap(grad))",
          "mlp": "(b) ibdb kind mlp (baddbmm)",
          "func": "(c) torch.func: stack_module_state + vmap(grad) + fused Adam",
          "bmm": "(d) hand-written baddbmm + autograd + fused Adam"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=256, help="trained at once (a chunk)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--check-networks", type=int, default=8,
                        help="networks in the same-work check (0 skips it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = Settings(args)
    data = digits(s)
    runners = {"torch": torch_runner(data, s),
               "vmap": torch_runner(data, s, model="bench_torch_space:wrapped_mlp"),
               "mlp": mlp_runner(data, s)}
    trainers = {"func": FuncTrainer(data, s), "bmm": BmmTrainer(data, s)}
    assert runners["torch"].info["training"] == "batched matrix products", runners["torch"].info
    assert runners["vmap"].info["training"] == "vmap", runners["vmap"].info
    same_work = check_same_work(runners["torch"], trainers["func"], trainers["bmm"],
                                args.check_networks) if args.check_networks else None
    runs: dict[str, Callable[[int, int], tuple]] = {
        **{k: (lambda n, r, x=x: time_runner(x, n, r)) for k, x in runners.items()},
        **{k: (lambda n, r, x=x: time_trainer(x, n, r)) for k, x in trainers.items()},
    }
    for run in runs.values():  # warm-up: first calls of every kernel
        run(min(8, args.networks), 0)
    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    quality: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
    for r in range(args.repeats):  # alternate, so that a busy machine slows all alike
        for name, run in runs.items():
            clock, q = run(args.networks, r + 1)
            rounds[name].append((args.networks / clock.wall, clock.cpu / args.networks))
            quality[name].append(q)
    rate = {k: statistics.median(w for w, _ in v) for k, v in rounds.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in rounds.items()}
    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), cpu")
    print(f"task: digits n_train {s.n_train} n_test {s.n_test}; MLP width {s.width} depth "
          f"{s.depth}; Adam lr {LR}, batch {BATCH}, {s.epochs} epochs, no early stop; "
          f"{args.networks} networks at once; medians of {args.repeats} rounds")
    for name in runs:
        q = {key: statistics.mean(x[key] for x in quality[name])
             for key in ("test_mse", "train_error")}
        print(f"{name:5} {LABELS[name]}: {rate[name]:.2f} networks/s, "
              f"{1e3 * cpu[name]:.3f} ms CPU per network (mean test MSE {q['test_mse']:.5f}, "
              f"train error {q['train_error']:.4f}); rounds "
              f"{[round(w, 1) for w, _ in rounds[name]]}")
    pairs = (("torch", "func"), ("torch", "bmm"), ("vmap", "func"), ("vmap", "bmm"),
             ("mlp", "bmm"))
    for a, b in pairs:
        print(f"ratio {a}/{b}: {rate[a] / rate[b]:.3f} (rate, wall); "
              f"{cpu[b] / cpu[a]:.3f} (CPU time {b} / {a})")
    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    print("requirement (a) torch >= 1.0x (c) func and (d) bmm: "
          f"{verdict(all(rate['torch'] >= rate[b] for b in ('func', 'bmm')))} (wall rate), "
          f"{verdict(all(cpu['torch'] <= cpu[b] for b in ('func', 'bmm')))} (CPU time)")
    print(json.dumps({"same_work": same_work,
                      "training": runners["torch"].info["training"],
                      "optimizer": runners["torch"].info["optimizer_implementation"]},
                     indent=2))


if __name__ == "__main__":
    main()
