"""GPU check: every runner kind sampled on CUDA against the CPU in the same run: time, and
whether the two give the same losses for the same seeds.

One prepared script for a machine with a CUDA GPU (a few minutes): for each case it builds the
runner on the CPU and on ``cuda``, samples the same seeds on both (``runner.sample``, as a run
does), times each (build, then sampling; after an untimed warm-up) and compares the losses.

Cases (digits; networks train Adam lr 1e-3, batch 32, ``EPOCHS`` epochs, no early stop, so both
devices train every network for the same steps):

- ``gp``: kind gp, RBF bandwidth 1.0, jitter 1e-8, n_train 1000, n_test 797, 10^4 hypotheses in
  chunks of 1000 (bench_gp_runner.py's task);
- ``mlp``: kind mlp, width 64, depth 1 (bench_mlp.py's networks);
- ``cnn``: kind cnn, 8 channels, 2 layers, 3x3, max pooling;
- ``torch-mlp``: kind torch, the ready-made factory ``ibdb.runners.zoo:mlp`` (width 64,
  depth 1), trained under torch.func.vmap;
- ``torch-conv``: kind torch, ``gpu_check:conv_net`` below (Conv2d, ReLU, MaxPool, Linear);
  run twice on CUDA: with torch's defaults (cuDNN may use TF32 for convolutions,
  ``torch.backends.cudnn.allow_tf32``) and with TF32 off (``torch-conv/tf32-off``);
- ``torch-attention``: kind torch, ``gpu_check:attention_net`` below (the image's 8 rows as
  tokens, Linear embedding, MultiheadAttention, mean pool, Linear).

Networks: CPU trains ``cpu`` networks, CUDA ``cuda`` networks (a bigger chunk: a GPU needs many
networks at once to be busy; the CPU trains few of the slow kinds, cnn 16, torch-conv 32,
torch-attention 16, since its rate is per network) whose first ``cpu`` seeds are the CPU's, so
the same hypotheses (initial weights and data orders come from each seed on the CPU, whatever
the device) are compared one by one. They train in float32 on both, in different summation
orders, so they agree to rounding, not bit for bit. Tolerance: max relative test-MSE difference
``NETWORK_RTOL`` = 1e-4 over the compared networks (implementations that differ only in
summation order agree to ~1e-8 after bench_mlp.py's 200 steps; two different hypotheses differ
by far more: the coefficient of variation of test MSE between hypotheses is printed beside
it); the 0-1 errors are reported (networks with equal test error). The default-TF32
``torch-conv`` row is reported, not checked (TF32 rounds products to 10 mantissa bits); its
``tf32-off`` row is checked.

GP: a hypothesis is mu + Q sqrt(lam) Z with Z from the seed; Q comes from each device's own
eigensolver (LAPACK or cuSOLVER), whose eigenvectors may differ in sign (or rotate within
near-degenerate eigenspaces), so one seed need not give the same hypothesis on both devices
and its losses are not compared one by one (their max difference is printed for the record).
Checked instead, in float64: the spectra (max |eigenvalue difference| / largest eigenvalue
<= ``GP_RTOL`` = 1e-9), the closed-form mean test MSE (k sum(lam) + sum(R^2)) / (m k), which no
basis changes (relative difference <= 1e-9), and the sampled mean test MSEs (within 5 combined
standard errors).

Printed: a table (case, each device's hypotheses, seconds and hypotheses per second, the
CUDA/CPU speedup of the rates, the agreement and whether it passed), then the JSON that
``$OUT/gpu_check.json`` also receives when ``OUT`` is set. Exit status 1 when a checked case
fails, else 0.

Without CUDA (``torch.cuda.is_available()`` false) it says so, runs the CPU half at the
``--smoke`` sizes and exits 0, so that the script is exercised anywhere.

Usage: python benchmarks/gpu_check.py [--smoke] [--threads N] [--cases gp,mlp,...]
About 1-3 minutes on a GPU machine (16 CPU cores) at the default sizes; the CPU half alone
took 2.5 minutes on a busy 2-core VM with cnn 64, torch-conv 64, attention 32 networks (two
torch threads there run several times slower than one: ``--threads 1`` on such a machine).
Smallest settings (what tests/test_benchmarks.py runs, CPU only, about 10 s):
       python benchmarks/gpu_check.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch
from _timing import cpu_name  # benchmarks/_timing.py (the script's folder)
from torch import nn

CASES = ("gp", "mlp", "cnn", "torch-mlp", "torch-conv", "torch-attention")
NETWORK_RTOL = 1e-4
GP_RTOL = 1e-9
EPOCHS = 20

# (n_train, n_test) per case kind, and hypotheses (cpu, cuda): the GPU run's, then --smoke's
FULL = {"gp_task": (1000, 797), "net_task": (300, 300), "gp": (10_000, 10_000),
        "mlp": (256, 4096), "cnn": (16, 1024), "torch-mlp": (256, 4096),
        "torch-conv": (32, 1024), "torch-attention": (16, 512), "gp_chunk": 1000,
        "epochs": EPOCHS}
SMOKE = {"gp_task": (100, 50), "net_task": (100, 50), "gp": (200, 200),
         "mlp": (8, 16), "cnn": (4, 8), "torch-mlp": (8, 16), "torch-conv": (4, 8),
         "torch-attention": (4, 8), "gp_chunk": 100, "epochs": 2}


# -- the models of the torch cases (imported as "gpu_check:...", as a user's would be) ---------


def conv_net(channels: int = 8, n_outputs: int = 10) -> nn.Module:
    """A small CNN on (1, 8, 8) images: conv 3x3, ReLU, 2x2 max pool, linear head."""
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.LazyLinear(n_outputs))


class AttentionNet(nn.Module):
    """The image's 8 rows as 8 tokens of 8 values: a linear embedding, one self-attention
    block (residual), mean over tokens, a linear head."""

    def __init__(self, dim: int, heads: int, n_outputs: int) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.reshape(len(x), 8, 8))
        h = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(h.mean(dim=1))


def attention_net(dim: int = 16, heads: int = 2, n_outputs: int = 10) -> nn.Module:
    return AttentionNet(dim, heads, n_outputs)


# -- cases --------------------------------------------------------------------------------------


def _digits(n_train: int, n_test: int):
    from ibdb.data.task import load_task
    from ibdb.spec.sources import Task

    task = Task.model_validate({"name": f"digits-{n_train}", "source": {"kind": "digits"},
                                "n_train": n_train, "n_test": n_test, "eps": [0.05]})
    return load_task(task, spec_dir=".")


def _space(case: str, epochs: int) -> dict[str, Any]:
    trained = {"optimizer": {"kind": "adam", "lr": 1e-3, "epochs": epochs, "batch_size": 32},
               "fit": {"criterion": "train_accuracy", "stop_when_fit": False}}
    if case == "gp":
        return {"name": "gp", "kind": "gp", "kernel": {"kind": "rbf", "bandwidth": 1.0},
                "jitter": 1e-8}
    if case == "mlp":
        return {"name": "mlp", "kind": "mlp", "width": 64, "depth": 1, **trained}
    if case == "cnn":
        return {"name": "cnn", "kind": "cnn", "channels": 8, "layers": 2, "kernel_size": 3,
                "pooling": "max", **trained}
    model, args = {"torch-mlp": ("ibdb.runners.zoo:mlp",
                                 {"width": 64, "depth": 1, "n_outputs": 10}),
                   "torch-conv": ("gpu_check:conv_net", {"channels": 8, "n_outputs": 10}),
                   "torch-attention": ("gpu_check:attention_net",
                                       {"dim": 16, "heads": 2, "n_outputs": 10})}[case]
    return {"name": case, "kind": "torch", "model": model, "model_args": args, **trained}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: str, data, sizes: dict[str, Any], n: int, device: torch.device
             ) -> dict[str, Any]:
    """Build the case's runner on ``device`` and sample hypotheses 0 .. n-1 (run seed 0):
    the losses, the build and sampling times, and the GP's spectrum."""
    from ibdb.run.plan import hypothesis_seeds
    from ibdb.runners import load_runner
    from ibdb.spec.spaces import parse_space

    space = parse_space(_space(case, sizes["epochs"]))
    runner_class = load_runner(space.kind)  # imported before the clock starts
    _sync(device)
    start = time.perf_counter()
    runner = runner_class(space, data, device=device)
    _sync(device)
    build = time.perf_counter() - start
    chunk = sizes["gp_chunk"] if case == "gp" else n
    warm = np.arange(min(4, n))
    runner.sample(warm, hypothesis_seeds(1, warm))  # first calls of every kernel
    parts = []
    _sync(device)
    start = time.perf_counter()
    for lo in range(0, n, chunk):
        ids = np.arange(lo, min(lo + chunk, n))
        parts.append(runner.sample(ids, hypothesis_seeds(0, ids)))  # numpy: device finished
    seconds = time.perf_counter() - start
    losses = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out = {"n": n, "build_s": build, "sample_s": seconds, "per_s": n / seconds,
           "losses": losses}
    if case == "gp":
        out["spectrum"] = runner.spectrum()
    else:
        out["training"] = runner.info.get("training", "batched")
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(a)))


def compare(case: str, cpu: dict[str, Any], cuda: dict[str, Any], checked: bool
            ) -> dict[str, Any]:
    """CPU against CUDA for the same seeds (see the module docstring for what is checked)."""
    n = cpu["n"]
    a = {k: v[:n] for k, v in cpu["losses"].items()}
    b = {k: v[:n] for k, v in cuda["losses"].items()}
    if case == "gp":
        sa, sb = cpu["spectrum"], cuda["spectrum"]
        lam_a, lam_b = np.sort(sa["eigenvalue"]), np.sort(sb["eigenvalue"])
        m, k = sa["residuals"].shape

        def closed(s: dict[str, np.ndarray]) -> float:
            return float((k * s["eigenvalue"].sum() + np.square(s["residuals"]).sum()) / (m * k))

        se = np.hypot(a["test_mse"].std(ddof=1) / np.sqrt(n), b["test_mse"].std(ddof=1)
                      / np.sqrt(n))
        report = {
            "eigenvalues_max_abs_diff_over_largest": float(np.abs(lam_a - lam_b).max()
                                                           / lam_a.max()),
            "closed_form_mean_test_mse_rel_diff": abs(closed(sa) - closed(sb)) / closed(sa),
            "mean_test_mse": [float(a["test_mse"].mean()), float(b["test_mse"].mean())],
            "mean_test_mse_diff_in_standard_errors": float(
                abs(a["test_mse"].mean() - b["test_mse"].mean()) / se),
            "per_hypothesis_test_mse_max_rel_diff (basis-dependent, not checked)":
                _rel(a["test_mse"], b["test_mse"]),
        }
        report["ok"] = bool(report["eigenvalues_max_abs_diff_over_largest"] <= GP_RTOL
                            and report["closed_form_mean_test_mse_rel_diff"] <= GP_RTOL
                            and report["mean_test_mse_diff_in_standard_errors"] <= 5.0)
        report["summary"] = (f"eig {report['eigenvalues_max_abs_diff_over_largest']:.1e}, "
                             f"mean {report['closed_form_mean_test_mse_rel_diff']:.1e} "
                             f"(tol {GP_RTOL:g})")
        return report
    rel = _rel(a["test_mse"], b["test_mse"])
    spread = float(a["test_mse"].std() / a["test_mse"].mean()) if n > 1 else float("nan")
    report = {
        "networks_compared": n,
        "test_mse_max_rel_diff": rel,
        "train_mse_max_rel_diff": _rel(a["train_mse"], b["train_mse"]),
        "test_error_equal": int((a["test_error"] == b["test_error"]).sum()),
        "train_error_equal": int((a["train_error"] == b["train_error"]).sum()),
        "test_mse_coefficient_of_variation_between_hypotheses": spread,
        "tolerance": NETWORK_RTOL if checked else None,
        "ok": bool(rel <= NETWORK_RTOL) if checked else None,
    }
    report["summary"] = (f"test MSE {rel:.1e} (tol {NETWORK_RTOL:g}{'' if checked else ', info'}"
                         f"), errors equal {report['test_error_equal']}/{n}")
    return report


def _row(name: str, cpu: dict[str, Any], cuda: dict[str, Any] | None, check: str,
         ok: bool | None) -> str:
    def part(r: dict[str, Any] | None) -> str:
        if r is None:
            return f"{'-':>6} | {'-':>8} | {'-':>8} | {'-':>9}"
        return f"{r['n']:>6} | {r['build_s']:8.4f} | {r['sample_s']:8.4f} | {r['per_s']:9.1f}"
    speedup = f"{cuda['per_s'] / cpu['per_s']:7.1f}x" if cuda else f"{'-':>8}"
    verdict = "-" if ok is None else ("ok" if ok else "FAIL")
    return f"{name:22} | {part(cpu)} | {part(cuda)} | {speedup} | {check} | {verdict}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the smallest sizes (any machine)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # "gpu_check:..." models
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    has_cuda = torch.cuda.is_available()
    if not has_cuda:
        print(f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}); "
              "running the CPU half only, at the --smoke sizes")
    sizes = SMOKE if args.smoke or not has_cuda else FULL
    cpu_dev, cuda_dev = torch.device("cpu"), torch.device("cuda") if has_cuda else None
    # one-time costs that are no runner's: the first optimiser imports torch._dynamo (~2 s),
    # the first CUDA call creates the context
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    if has_cuda:
        torch.zeros(1, device=cuda_dev).add_(1)
        _sync(cuda_dev)
    gp_data = _digits(*sizes["gp_task"])
    net_data = _digits(*sizes["net_task"])
    header = {
        "machine": cpu_name(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if has_cuda else None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "sizes": "smoke" if sizes is SMOKE else "full", "epochs": sizes["epochs"],
    }
    print(json.dumps(header))
    print(f"{'case':22} | {'CPU n':>6} | {'build s':>8} | {'sample s':>8} | {'CPU /s':>9} | "
          f"{'CUDA n':>6} | {'build s':>8} | {'sample s':>8} | {'CUDA /s':>9} | {'speedup':>8} | "
          "agreement | ok")
    results, failed = [], []
    for case in cases:
        data = gp_data if case == "gp" else net_data
        n_cpu, n_cuda = sizes[case]
        cpu = run_case(case, data, sizes, n_cpu, cpu_dev)
        runs = [(case, None)]
        if case == "torch-conv" and has_cuda:
            runs.append((f"{case}/tf32-off", False))
        for name, tf32 in runs:
            cuda, report = None, None
            if has_cuda:
                before = torch.backends.cudnn.allow_tf32
                if tf32 is not None:
                    torch.backends.cudnn.allow_tf32 = tf32
                try:
                    cuda = run_case(case, data, sizes, n_cuda, cuda_dev)
                finally:
                    torch.backends.cudnn.allow_tf32 = before
                # convolutions under cuDNN's TF32 round more than float32: reported only
                checked = not (case == "torch-conv" and tf32 is None
                               and torch.backends.cudnn.allow_tf32)
                report = compare(case, cpu, cuda, checked)
                if report["ok"] is False:
                    failed.append(name)
            check = report["summary"] if report else "not run (no CUDA)"
            print(_row(name, cpu, cuda, check, report["ok"] if report else None), flush=True)
            results.append({
                "case": name,
                "cpu": {k: v for k, v in cpu.items() if k not in ("losses", "spectrum")},
                "cuda": None if cuda is None else
                {k: v for k, v in cuda.items() if k not in ("losses", "spectrum")},
                "speedup": None if cuda is None else cuda["per_s"] / cpu["per_s"],
                "agreement": report,
            })
    summary = {**header, "results": results, "failed": failed}
    text = json.dumps(summary, indent=2, default=float)
    print(text)
    if os.environ.get("OUT"):
        path = os.path.join(os.environ["OUT"], "gpu_check.json")
        with open(path, "w") as fh:
            fh.write(text + "\n")
        print(f"wrote {path}")
    if not has_cuda:
        print("CPU half done; no CUDA device, so nothing was compared")
        return 0
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
