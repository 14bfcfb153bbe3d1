"""GP runner benchmark: ibdb's whole run against a baseline in the style of the paper's code.

Task: digits, n_train 1000, n_test 797, 10^4 hypotheses, RBF bandwidth 1.0.

- ibdb: the whole `ibdb run` (data, exact posterior, spectrum, 10^4 hypotheses, shard files,
  ingest into a new DuckDB store), in a fresh process so that its peak memory is its own.
- baseline: the kernel inverse fitted by gradient descent the way the published code does it:
  Adam on ||K a - y||^2 over mini-batches of 5 training rows, 10^4 epochs at lr 1e-2 for alpha
  (all 10 outputs together), then the test-kernel solve K^-1 K(X, T) in groups of 10 test
  columns, 10^4 epochs each at lr 1e-3. We time a few epochs of each phase and extrapolate
  linearly (every epoch does the same work); the posterior and sampling that follow are cheaper
  than one group and are not counted, which favours the baseline.

Usage: python benchmarks/bench_gp_runner.py [--repeats 3] [--epochs 3]
Prints medians and the ratio; paste the output into BENCHMARKS.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

SPEC = """
name: bench
tasks:
  - {name: digits-1000, source: {kind: digits}, n_train: 1000, n_test: 797, eps: [0.45]}
spaces:
  - {name: rbf, kind: gp, bandwidth: 1.0, jitter: 1.0e-8}
budgets:
  - {name: b, n_hypotheses: 10000, chunk_size: 1000, seed: 0}
"""

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    t0 = time.perf_counter()
    from ibdb.api import Ibdb
    import torch  # counted in startup, not in the run
    t1 = time.perf_counter()
    report = Ibdb(sys.argv[1] + "/b.duckdb", device="cpu").run(sys.argv[2], estimate=False)
    t2 = time.perf_counter()
    assert report.ingest.hypotheses_inserted == 10000, report.ingest
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"run_s": t2 - t1, "imports_s": t1 - t0, "peak_mib": peak_mib,
                      "threads": torch.get_num_threads()}))
""")


def time_ibdb() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "bench.yaml")
        with open(spec, "w") as fh:
            fh.write(SPEC)
        out = subprocess.run([sys.executable, "-c", CHILD, tmp, spec], check=True,
                             capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def time_baseline(epochs: int) -> dict:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    y = np.eye(10)[load_digits().target]
    order = np.random.default_rng(0).permutation(len(x))
    x = torch.tensor(x[order] / 16.0)
    y = torch.tensor(y[order])
    x_train, y_train, x_test = x[:1000], y[:1000], x[1000:1797]

    def rbf(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / 2.0)

    k_train = rbf(x_train, x_train)
    k_cross = rbf(x_train, x_test)

    def fit(target: torch.Tensor, lr: float) -> float:
        """Seconds per epoch of Adam on ||K a - target||^2 in mini-batches of 5 rows."""
        param = torch.zeros(target.shape, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([param], lr=lr)
        t0 = time.perf_counter()
        for _ in range(epochs):
            for rows in torch.randperm(len(k_train)).split(5):
                opt.zero_grad()
                loss = ((k_train[rows] @ param - target[rows]) ** 2).sum()
                loss.backward()
                opt.step()
        return (time.perf_counter() - t0) / epochs

    alpha_epoch = fit(y_train, 1e-2)
    group_epoch = fit(k_cross[:, :10], 1e-3)
    n_groups = -(-x_test.shape[0] // 10)
    total = 10_000 * alpha_epoch + n_groups * 10_000 * group_epoch
    return {"alpha_epoch_s": alpha_epoch, "group_epoch_s": group_epoch, "groups": n_groups,
            "extrapolated_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}")
    ours = [time_ibdb() for _ in range(args.repeats)]
    base = [time_baseline(args.epochs) for _ in range(args.repeats)]
    run_s = statistics.median(r["run_s"] for r in ours)
    base_s = statistics.median(b["extrapolated_s"] for b in base)
    each = ", ".join(f"{r['run_s']:.2f}" for r in ours)
    print(f"ibdb whole run (posterior, spectrum, 10^4 hypotheses, shards, store): "
          f"median {run_s:.2f} s over {args.repeats} ({each}); imports "
          f"{statistics.median(r['imports_s'] for r in ours):.2f} s; peak memory "
          f"{max(r['peak_mib'] for r in ours):.0f} MiB; torch threads {ours[0]['threads']}")
    print(f"baseline (Adam kernel inverse, extrapolated from {args.epochs} epochs per phase): "
          f"alpha epoch {statistics.median(b['alpha_epoch_s'] for b in base) * 1e3:.1f} ms, "
          f"test-kernel group epoch "
          f"{statistics.median(b['group_epoch_s'] for b in base) * 1e3:.1f} ms x "
          f"{base[0]['groups']} groups; total median {base_s:.0f} s ({base_s / 3600:.1f} h)")
    print(f"ratio baseline / ibdb: {base_s / run_s:.0f}x")


if __name__ == "__main__":
    main()
