"""MLP runner benchmark: B networks trained at once against a one-network-at-a-time loop.

Task: digits, n_train 300, n_test 300. Networks: one hidden layer of width 64 (ReLU), 10
outputs, MSE against one-hot targets, Adam lr 1e-3, batch 32, 20 epochs (no early stop), 256
hypotheses by default.

- ibdb: ``MLPRunner.sample`` on all hypotheses as one chunk: per-hypothesis initialisation and
  data order, batched training, then float64 test and train MSE / 0-1 error of every network.
- baseline: the paper's procedure, one network after another: a ``torch.nn`` model, a shuffling
  ``DataLoader`` over a ``TensorDataset``, ``nn.MSELoss`` on one-hot targets, ``torch.optim.Adam``
  (lr 1e-3), the same epochs and batch size; the loss ``.item()`` per batch as its training loop
  logs it. It evaluates test and train losses once, after the last epoch (the paper's code
  evaluates the test set after every epoch, which would only slow the baseline down). (The
  paper's ``depth`` counts width-to-width layers; both sides here have one hidden layer.)

Both run in one process, after an untimed warm-up of each, with torch's default threads,
alternating over ``--repeats`` rounds (medians reported) so that a busy machine slows both alike.
For the record it also times the baseline on one thread: one-network loops gain little from a
second thread, so ``cpus x`` that rate is what running one loop per core in parallel processes
would give at best; the second ratio is against that.
Usage: python benchmarks/bench_mlp.py [--hypotheses 256] [--baseline-networks 256]
       [--repeats 3] [--device cpu|cuda]
Prints hypotheses per second of each and the ratios; paste the output into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ibdb.plan import hypothesis_seeds
from ibdb.runners.mlp import MLPRunner
from ibdb.specs import Task, parse_space
from ibdb.tasks import load_task

WIDTH, EPOCHS, BATCH, LR = 64, 20, 32, 1e-3


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


def time_ibdb(runner, n):
    ids = np.arange(n)
    seeds = hypothesis_seeds(0, ids)
    t0 = time.perf_counter()
    out = runner.sample(ids, seeds)  # numpy results: the device has finished
    return time.perf_counter() - t0, float(out["test_mse"].mean())


def baseline(data, n, device):
    """One network at a time, as the paper's code trains them."""
    dev = torch.device(device)
    x_train = torch.as_tensor(data.x_train, dtype=torch.float32)
    y_train = torch.as_tensor(data.y_train, dtype=torch.float32)
    x_test = torch.as_tensor(data.x_test, dtype=torch.float32, device=dev)
    y_test = torch.as_tensor(data.y_test, dtype=torch.float32, device=dev)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH, shuffle=True)
    test_mses = []
    t0 = time.perf_counter()
    for trial in range(n):
        torch.manual_seed(trial)
        model = nn.Sequential(nn.Linear(x_train.shape[1], WIDTH), nn.ReLU(),
                              nn.Linear(WIDTH, y_train.shape[1])).to(dev)
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
    return time.perf_counter() - t0, float(np.mean(test_mses))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hypotheses", type=int, default=256)
    parser.add_argument("--baseline-networks", type=int, default=None,
                        help="networks the baseline trains (default: --hypotheses); its rate "
                        "is per network, so fewer only shortens the wait")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n_base = args.baseline_networks or args.hypotheses
    data = digits()
    runner = ibdb_runner(data, args.device)
    time_ibdb(runner, 8)  # warm-up: first calls of every kernel, thread pools
    baseline(data, 2, args.device)
    ours, theirs, mse_ours, mse_theirs = [], [], [], []
    for _ in range(args.repeats):  # alternate, so that a busy machine slows both alike
        seconds, mse = time_ibdb(runner, args.hypotheses)
        ours.append(args.hypotheses / seconds)
        mse_ours.append(mse)
        seconds, mse = baseline(data, n_base, args.device)
        theirs.append(n_base / seconds)
        mse_theirs.append(mse)
    rate_ours, rate_theirs = statistics.median(ours), statistics.median(theirs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds, _ = baseline(data, min(n_base, 32), args.device)
    torch.set_num_threads(threads)
    best_parallel = (os.cpu_count() or 1) * min(n_base, 32) / seconds
    print(json.dumps({
        "machine": _cpu_name(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "threads": threads, "device": args.device,
        "optimizer": runner.info["optimizer_implementation"],
        "hypotheses": args.hypotheses, "baseline_networks": n_base, "repeats": args.repeats,
        "ibdb_hypotheses_per_s": round(rate_ours, 2),
        "baseline_hypotheses_per_s": round(rate_theirs, 2),
        "ratio": round(rate_ours / rate_theirs, 1),
        "ibdb_each_round": [round(r, 1) for r in ours],
        "baseline_each_round": [round(r, 2) for r in theirs],
        "baseline_one_loop_per_cpu_best_case_per_s": round(best_parallel, 2),
        "ratio_to_best_case": round(rate_ours / best_parallel, 1),
        "mean_test_mse": {"ibdb": round(statistics.mean(mse_ours), 5),
                          "baseline": round(statistics.mean(mse_theirs), 5)},
    }, indent=2))


if __name__ == "__main__":
    main()
