"""MLP runner benchmark: B networks trained at once against a per-network loop and torch.func.

Task: digits, n_train 300, n_test 300. Networks: one hidden layer of width 64 (ReLU), 10
outputs, MSE against one-hot targets, Adam lr 1e-3, batch 32, 20 epochs (no early stop), 256
hypotheses by default.

- ibdb: ``MLPRunner.sample`` on all hypotheses as one chunk: per-hypothesis initialisation and
  data order, batched training, then float64 test and train MSE / 0-1 error of every network.
- baseline (the loop): the paper's procedure, one network after another: a ``torch.nn`` model, a
  shuffling ``DataLoader`` over a ``TensorDataset``, ``nn.MSELoss`` on one-hot targets,
  ``torch.optim.Adam`` (lr 1e-3), the same epochs and batch size; the loss ``.item()`` per batch
  as its training loop logs it. It evaluates test and train losses once, after the last epoch
  (the paper's code evaluates the test set after every epoch, which would only slow the
  baseline down). (The paper's ``depth`` counts width-to-width layers; both sides here have one
  hidden layer.)
- vmap: what a competent ``torch.func`` user writes to train B networks at once: B
  ``torch.nn`` models (each seeded like the loop's) stacked by ``torch.func.stack_module_state``,
  per-network gradients from ``torch.vmap(torch.func.grad(loss))`` over ``functional_call``, one
  fresh data order per network and epoch (``argsort`` of uniform draws, one call for all), and
  Adam written over the stacked tensors with in-place ops (torch's own formula: the same
  moments, bias corrections and eps placement), no logging; then float64 test and train MSE /
  0-1 error of every network, as ibdb records.
- vmap_torch_adam: the same, but the stacked tensors and their vmapped gradients go to
  ``torch.optim.Adam`` (fused where the build has it, as ibdb's is): the stronger of the two.

Same work: all of them train the same architecture with the same optimiser settings, epochs and
batch size (10 steps per epoch, the last of 12 points). Before timing, a check trains
``--check-networks`` networks with every implementation (the loop's step on given data orders
instead of its DataLoader) from identical initial weights and identical per-epoch data orders
(ibdb's, replayed from its per-hypothesis generators) and compares the final parameters, the
float64 test MSE and the train 0-1 error network by network with ibdb's (they agree to float32
rounding, not bit for bit: the matrix products sum in different orders). The timed rounds then
report each implementation's mean test MSE and mean train error over its own networks (the
torch.func ones start from the loop's initial weights; ibdb's are its own).

All run in one process, after an untimed warm-up of each, with torch's default threads (or
``--threads``), alternating over ``--repeats`` rounds (medians reported) so that a busy machine
slows all alike. The loop's rate is per network and every network does the same work, so it
trains ``--baseline-networks`` (default 64; the runs quoted in BENCHMARKS.md before the
torch.func baseline was added used 256), at most ``--hypotheses``.
Each round records wall time (the hypotheses-per-second figures and ``ratio``, as before) and
process CPU time (``time.process_time``, all threads: ``cpu_ms_per_hypothesis`` and
``cpu_ratios``), which other processes disturb less than wall time (though two threads
contending for busy cores still burn more of it).
For the record it also times the baseline on one thread: one-network loops gain little from a
second thread, so ``cpus x`` that rate is what running one loop per core in parallel processes
would give at best; ``ratio_to_best_case`` is against that.
Usage: python benchmarks/bench_mlp.py [--hypotheses 256] [--baseline-networks 64]
       [--vmap-networks 256] [--repeats 3] [--check-networks 16] [--quick] [--threads N]
       [--device cpu|cuda]
About a minute on an idle 2-core VM by default, ~20 s with --quick (several times that while
other processes contend for the cores: two torch threads then slow down badly).
Prints rates, CPU time per hypothesis and the ratios as JSON; paste it into BENCHMARKS.md.
Smallest settings (what tests/test_benchmarks.py runs, about 8 s; one thread, since two torch
threads on a busy 2-core machine run several times slower):
       python benchmarks/bench_mlp.py --quick --hypotheses 8 --baseline-networks 2 \
           --check-networks 2 --repeats 1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics

import numpy as np
import torch
from _timing import Clock, cpu_name  # benchmarks/_timing.py (the script's folder)
from torch import nn
from torch.func import functional_call, grad, stack_module_state
from torch.utils.data import DataLoader, TensorDataset

from ibdb.data.task import load_task
from ibdb.run.plan import hypothesis_seeds
from ibdb.runners.mlp import MLPRunner
from ibdb.spec.sources import Task
from ibdb.spec.spaces import parse_space

WIDTH, EPOCHS, BATCH, LR = 64, 20, 32, 1e-3
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which ibdb's spec also uses


def digits():
    task = Task.model_validate({"name": "digits-300", "source": {"kind": "digits"},
                                "n_train": 300, "n_test": 300, "eps": [0.05]})
    return load_task(task, spec_dir=".")


def ibdb_runner(data, device):
    space = parse_space({
        "name": "mlp", "kind": "mlp", "width": WIDTH, "depth": 1, "activation": "relu",
        "optimizer": {"kind": "adam", "lr": LR, "epochs": EPOCHS, "batch_size": BATCH},
        "fit": {"criterion": "train_accuracy", "stop_when_fit": False},
    })
    return MLPRunner(space, data, device=torch.device(device))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ibdb(runner, n):
    ids = np.arange(n)
    seeds = hypothesis_seeds(0, ids)
    with Clock() as clock:
        out = runner.sample(ids, seeds)  # numpy results: the device has finished
    return clock, {"test_mse": float(out["test_mse"].mean()),
                   "train_error": float(out["train_error"].mean())}


def mlp(n_inputs, n_outputs):
    return nn.Sequential(nn.Linear(n_inputs, WIDTH), nn.ReLU(), nn.Linear(WIDTH, n_outputs))


def baseline(data, n, device):
    """One network at a time, as the paper's code trains them."""
    dev = torch.device(device)
    x_train = torch.as_tensor(data.x_train, dtype=torch.float32)
    y_train = torch.as_tensor(data.y_train, dtype=torch.float32)
    x_test = torch.as_tensor(data.x_test, dtype=torch.float32, device=dev)
    y_test = torch.as_tensor(data.y_test, dtype=torch.float32, device=dev)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH, shuffle=True)
    test_mses, train_errors = [], []
    with Clock() as clock:
        for trial in range(n):
            torch.manual_seed(trial)
            model = mlp(x_train.shape[1], y_train.shape[1]).to(dev)
            criterion = nn.MSELoss()
            optimizer = torch.optim.Adam(model.parameters(), lr=LR)
            for _ in range(EPOCHS):
                model.train()
                train_loss = 0.0
                for xb, yb in loader:
                    xb, yb = xb.to(dev), yb.to(dev)
                    optimizer.zero_grad()
                    loss = criterion(model(xb), yb)
                    loss.backward()
                    optimizer.step()
                    train_loss += loss.item()
            model.eval()
            with torch.no_grad():
                out = model(x_test)
                test_mses.append(float(((out - y_test) ** 2).mean()))
                _ = (out.argmax(1) != y_test.argmax(1)).float().mean().item()
                train_out = model(x_train.to(dev))
                _ = float(((train_out - y_train.to(dev)) ** 2).mean())
                train_errors.append(
                    (train_out.argmax(1) != y_train.to(dev).argmax(1)).float().mean().item())
    return clock, {"test_mse": float(np.mean(test_mses)),
                   "train_error": float(np.mean(train_errors))}


# -- torch.func baseline ---------------------------------------------------------------------


class VmapTrainer:
    """B networks of one torch.nn architecture trained with torch.func under torch.vmap."""

    def __init__(self, data, device, optimizer="hand"):
        self.dev = torch.device(device)
        f32 = {"dtype": torch.float32, "device": self.dev}
        self.x_train = torch.as_tensor(data.x_train, **f32)
        self.y_train = torch.as_tensor(data.y_train, **f32)
        self.x_test = torch.as_tensor(data.x_test, **f32)
        self.y_test = torch.as_tensor(data.y_test, **f32)
        self.optimizer = optimizer
        self.base = mlp(self.x_train.shape[1], self.y_train.shape[1]).to("meta")

        def loss(params, xb, yb):
            return (functional_call(self.base, params, (xb,)) - yb).square().mean()

        def predict(params, x):
            return functional_call(self.base, params, (x,))

        # per-network gradient of its own MSE on its own batch
        self.grads = torch.vmap(grad(loss))
        self.predict = torch.vmap(predict, in_dims=(0, None))

    def init(self, n):
        """B models seeded like the loop's, stacked: {name: (B, *shape)} float32 tensors."""
        models = []
        for trial in range(n):
            torch.manual_seed(trial)
            models.append(mlp(self.x_train.shape[1], self.y_train.shape[1]).to(self.dev))
        params, _ = stack_module_state(models)
        return {k: v.detach() for k, v in params.items()}

    def orders(self, n, gen):
        """One permutation of the training set per network for the next epoch: (B, n_train)."""
        keys = torch.rand(n, len(self.x_train), generator=gen)
        return torch.argsort(keys, dim=1).to(self.dev)

    def train(self, params, orders=None, seed=0):
        """Train stacked ``params`` in place; ``orders`` (one (B, n) tensor per epoch) gives the
        data order, else each network draws its own each epoch."""
        b, n = next(iter(params.values())).shape[0], len(self.x_train)
        gen = torch.Generator().manual_seed(seed)
        beta1, beta2 = BETAS
        if self.optimizer == "torch":
            leaves = list(params.values())
            kwargs = {"fused": True} if _fused_adam_ok(self.dev) else {}
            opt = torch.optim.Adam(leaves, lr=LR, betas=BETAS, eps=EPS, **kwargs)
        else:
            exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
            exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        step = 0
        for epoch in range(EPOCHS):
            order = orders[epoch] if orders is not None else self.orders(b, gen)
            for start in range(0, n, BATCH):
                idx = order[:, start:start + BATCH]
                grads = self.grads(params, self.x_train[idx], self.y_train[idx])
                step += 1
                if self.optimizer == "torch":
                    for leaf, name in zip(leaves, params, strict=True):
                        leaf.grad = grads[name]
                    opt.step()
                    continue
                # Adam, elementwise over the stacked tensors, as torch.optim.Adam computes it
                step_size = LR / (1 - beta1 ** step)
                correction2_sqrt = math.sqrt(1 - beta2 ** step)
                for name, p in params.items():
                    g = grads[name]
                    exp_avg[name].lerp_(g, 1 - beta1)
                    exp_avg_sq[name].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    denom = (exp_avg_sq[name].sqrt() / correction2_sqrt).add_(EPS)
                    p.addcdiv_(exp_avg[name], denom, value=-step_size)
        return params

    def evaluate(self, params):
        """Float64 test and train MSE and 0-1 error per network (numpy arrays, (B,))."""
        params64 = {k: v.to(torch.float64) for k, v in params.items()}
        out = {}
        with torch.no_grad():
            for split, x, y in (("test", self.x_test, self.y_test),
                                ("train", self.x_train, self.y_train)):
                preds = self.predict(params64, x.to(torch.float64))
                out[f"{split}_mse"] = ((preds - y.to(torch.float64)).square()
                                       .mean(dim=(1, 2)).cpu().numpy())
                out[f"{split}_error"] = ((preds.argmax(dim=2) != y.argmax(dim=1))
                                         .to(torch.float64).mean(dim=1).cpu().numpy())
        return out


def _fused_adam_ok(dev) -> bool:
    try:
        torch.optim.Adam([torch.zeros(1, device=dev, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def time_vmap(trainer, n, seed=0):
    with Clock() as clock:
        params = trainer.train(trainer.init(n), seed=seed)
        out = trainer.evaluate(params)  # numpy results: the device has finished
    return clock, {"test_mse": float(out["test_mse"].mean()),
                   "train_error": float(out["train_error"].mean())}


# -- same work: identical starts and data orders through all three ---------------------------


def ibdb_start(runner, seeds, n):
    """ibdb's initial parameters and per-epoch data orders (of ``n`` training points) for
    ``seeds``, replayed from its per-hypothesis generators (weights first, then one permutation
    per epoch, as ibdb.runners.training documents)."""
    gens = runner.generators(seeds)
    flat = runner.initial_parameters(gens)
    orders = [torch.stack([torch.randperm(n, generator=g) for g in gens]) for _ in range(EPOCHS)]
    w1, b1, w2, b2 = (p.cpu() for p in runner.views(flat))
    stacked = {"0.weight": w1.transpose(1, 2), "0.bias": b1[:, 0], "2.weight": w2.transpose(1, 2),
               "2.bias": b2[:, 0]}
    return {k: v.contiguous() for k, v in stacked.items()}, orders


def loop_given(data, start, orders):
    """The loop baseline's training step (nn.Module, nn.MSELoss, torch.optim.Adam) from given
    initial weights and data orders; final float32 parameters stacked like ``start``."""
    x_train = torch.as_tensor(data.x_train, dtype=torch.float32)
    y_train = torch.as_tensor(data.y_train, dtype=torch.float32)
    finals = []
    for i in range(next(iter(start.values())).shape[0]):
        model = mlp(x_train.shape[1], y_train.shape[1])
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(start[name][i])
        criterion = nn.MSELoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        for order in orders:
            for s in range(0, len(x_train), BATCH):
                idx = order[i, s:s + BATCH]
                optimizer.zero_grad()
                criterion(model(x_train[idx]), y_train[idx]).backward()
                optimizer.step()
        finals.append({k: v.detach().clone() for k, v in model.named_parameters()})
    return {k: torch.stack([f[k] for f in finals]) for k in start}


def check_same_work(runner, trainers, data, n):
    """Train ``n`` networks from the same starts and data orders with every implementation and
    compare them with ibdb's, network by network."""
    seeds = hypothesis_seeds(0, np.arange(n))
    start, orders = ibdb_start(runner, seeds, len(data.x_train))
    trained = runner.train(seeds)
    w1, b1, w2, b2 = (p.cpu() for p in trained.params)
    finals = {"ibdb": {"0.weight": w1.transpose(1, 2), "0.bias": b1[:, 0],
                       "2.weight": w2.transpose(1, 2), "2.bias": b2[:, 0]}}
    for name, trainer in trainers.items():
        to_dev = {k: v.to(trainer.dev, copy=True) for k, v in start.items()}  # trained in place
        dev_orders = [o.to(trainer.dev) for o in orders]
        finals[name] = {k: v.cpu() for k, v in trainer.train(to_dev, orders=dev_orders).items()}
    finals["loop"] = loop_given(data, start, orders)
    trainer = trainers["vmap"]  # its float64 evaluation, for all of them
    losses = {name: trainer.evaluate({k: v.to(trainer.dev) for k, v in p.items()})
              for name, p in finals.items()}
    ibdb_recorded = runner.losses(trained.params)[0]
    report = {
        "networks": n, "steps_per_network": EPOCHS * -(-len(data.x_train) // BATCH),
        # the float64 evaluation of ibdb's weights agrees between ibdb and torch.func
        "ibdb_recorded_vs_vmap_eval_of_ibdb_weights_max_abs_test_mse": float(
            np.abs(ibdb_recorded["test_mse"] - losses["ibdb"]["test_mse"]).max()),
    }
    for other in (*trainers, "loop"):
        diff_p = max(float((finals["ibdb"][k] - finals[other][k]).abs().max()) for k in start)
        rel_mse = np.abs(losses["ibdb"]["test_mse"] - losses[other]["test_mse"]) / \
            losses["ibdb"]["test_mse"]
        report[f"ibdb_vs_{other}"] = {
            "max_abs_final_parameter_difference": diff_p,
            "max_relative_test_mse_difference": float(rel_mse.max()),
            "train_error_equal": int((losses["ibdb"]["train_error"]
                                      == losses[other]["train_error"]).sum()),
        }
    report["mean_test_mse"] = {k: round(float(v["test_mse"].mean()), 6)
                               for k, v in losses.items()}
    report["mean_train_error"] = {k: round(float(v["train_error"].mean()), 6)
                                  for k, v in losses.items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hypotheses", type=int, default=None, help="default 256 (64 --quick)")
    parser.add_argument("--baseline-networks", type=int, default=None,
                        help="networks the loop baseline trains (default: 64, 16 with --quick, "
                        "at most --hypotheses); its rate is per network, so fewer only shortens "
                        "the wait")
    parser.add_argument("--vmap-networks", type=int, default=None,
                        help="networks the torch.func baseline trains at once "
                        "(default: --hypotheses)")
    parser.add_argument("--check-networks", type=int, default=None,
                        help="networks in the same-work check (default 16, 4 with --quick; "
                        "0 skips it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="smaller defaults (64 hypotheses, 16 loop networks, 4 checked)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n_ours = args.hypotheses or (64 if args.quick else 256)
    n_base = args.baseline_networks or min(n_ours, 16 if args.quick else 64)
    n_vmap = args.vmap_networks or n_ours
    n_check = args.check_networks if args.check_networks is not None else \
        (4 if args.quick else 16)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = digits()
    runner = ibdb_runner(data, args.device)
    trainers = {"vmap": VmapTrainer(data, args.device, "hand"),
                "vmap_torch_adam": VmapTrainer(data, args.device, "torch")}
    same_work = check_same_work(runner, trainers, data, n_check) if n_check else None
    time_ibdb(runner, 8)  # warm-up: first calls of every kernel, thread pools
    baseline(data, 2, args.device)
    for trainer in trainers.values():
        time_vmap(trainer, 8)
    runs = [("ibdb", n_ours, lambda n, r: time_ibdb(runner, n)),
            ("loop", n_base, lambda n, r: baseline(data, n, args.device))]
    runs += [(name, n_vmap, lambda n, r, t=t: time_vmap(t, n, seed=r))
             for name, t in trainers.items()]
    rounds = {name: [] for name, _, _ in runs}
    quality = {name: [] for name, _, _ in runs}
    for r in range(args.repeats):  # alternate, so that a busy machine slows all alike
        for name, n, run in runs:
            _sync(args.device)
            clock, q = run(n, r)
            rounds[name].append((n / clock.wall, clock.cpu / n))
            quality[name].append(q)
    label = {"loop": "baseline"}
    rate = {k: statistics.median(w for w, _ in v) for k, v in rounds.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in rounds.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clock, _ = baseline(data, min(n_base, 32), args.device)
    torch.set_num_threads(threads)
    best_parallel = (os.cpu_count() or 1) * min(n_base, 32) / clock.wall
    print(json.dumps({
        "machine": cpu_name(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "threads": threads, "device": args.device,
        "optimizer": runner.info["optimizer_implementation"],
        "hypotheses": n_ours, "baseline_networks": n_base, "vmap_networks": n_vmap,
        "repeats": args.repeats,
        "ibdb_hypotheses_per_s": round(rate["ibdb"], 2),
        "baseline_hypotheses_per_s": round(rate["loop"], 2),
        "ratio": round(rate["ibdb"] / rate["loop"], 1),
        "vmap_hypotheses_per_s": round(rate["vmap"], 2),
        "ratio_to_vmap": round(rate["ibdb"] / rate["vmap"], 2),
        "vmap_torch_adam_hypotheses_per_s": round(rate["vmap_torch_adam"], 2),
        "ratio_to_vmap_torch_adam": round(rate["ibdb"] / rate["vmap_torch_adam"], 2),
        "ibdb_each_round": [round(w, 1) for w, _ in rounds["ibdb"]],
        "baseline_each_round": [round(w, 2) for w, _ in rounds["loop"]],
        "vmap_each_round": [round(w, 1) for w, _ in rounds["vmap"]],
        "vmap_torch_adam_each_round": [round(w, 1) for w, _ in rounds["vmap_torch_adam"]],
        "baseline_one_loop_per_cpu_best_case_per_s": round(best_parallel, 2),
        "ratio_to_best_case": round(rate["ibdb"] / best_parallel, 1),
        # process CPU time (all threads), medians over rounds
        "cpu_ms_per_hypothesis": {k: round(1e3 * v, 3) for k, v in cpu.items()},
        "cpu_ms_per_hypothesis_each_round": {k: [round(1e3 * c, 3) for _, c in v]
                                             for k, v in rounds.items()},
        "cpu_ratios": {"loop_over_ibdb": round(cpu["loop"] / cpu["ibdb"], 1),
                       "vmap_over_ibdb": round(cpu["vmap"] / cpu["ibdb"], 2),
                       "vmap_torch_adam_over_ibdb": round(cpu["vmap_torch_adam"] / cpu["ibdb"],
                                                          2)},
        # over each one's own networks in the timed rounds ("baseline": the loop, as before)
        **{f"mean_{key}": {label.get(k, k): round(statistics.mean(q[key] for q in v), 5)
                           for k, v in quality.items()} for key in ("test_mse", "train_error")},
        "same_work": same_work,
    }, indent=2))


if __name__ == "__main__":
    main()
