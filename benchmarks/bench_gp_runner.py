"""GP runner benchmark: ibdb's exact GP runner against NumPy/SciPy and scikit-learn, and at scale.

Also, apart, an algorithm comparison against the paper's procedure.

Modes (one per run of the script):

- ``compare`` (the default): an implementation comparison. Digits, n_train 1000, n_test 797
  (10 outputs), RBF bandwidth 1.0, jitter 1e-8, 10^4 hypotheses in chunks of 1000, each
  hypothesis's test MSE and 0-1 error. Three implementations, each from the task's arrays in
  memory to the losses of every hypothesis (posterior, spectrum, sampling):

  * ibdb: ``GPRunner(space, data)`` and ``runner.sample`` per chunk;
  * numpy: a minimal NumPy/SciPy pipeline of the same math: the RBF kernel built in place,
    ``scipy.linalg.cholesky``, one ``solve_triangular`` (V = L^-1 K(X, T)), S = K(T, T) - V^T V,
    ``scipy.linalg.eigh``, then per chunk the float64 MSE from the spectrum and the float32
    predictions mu + Q sqrt(lam) Z for the 0-1 error. It draws the same per-hypothesis normals
    as ibdb (a torch generator seeded per hypothesis, the only use of torch in it), so its
    losses equal ibdb's up to rounding;
  * sklearn: what a user would reach for, ``GaussianProcessRegressor(kernel=RBF(1.0),
    optimizer=None, alpha=1e-8).fit(X, Y).sample_y(X_test, n)``, then the same two losses
    from the samples (its own normals, so it agrees within Monte Carlo error).

  Each runs in a fresh process per repeat (so no thread pool of one spins during another's
  timing), rounds alternate between them, and the figures are medians of process CPU time
  (``time.process_time``: all threads) and wall time of the timed section. It is done on one
  thread and on the machine's cores (``--threads``, set for torch, OpenBLAS and OpenMP alike):
  one thread measures the work each does, which other processes on a shared machine disturb
  least; on two, idle threads that spin at barriers count too (OpenBLAS's, in numpy and
  sklearn, spin longest). Before the timings are printed, the script checks that the three
  agree (see ``check_agreement``): the same spectrum (ibdb's eigenvalues against the numpy
  pipeline's and against those of sklearn's predicted covariance), each pipeline's MSE equal
  to its own spectrum's with the shared normals, and mean losses within 5 standard errors of
  each other and of the closed-form mean MSE, (k sum(lam) + sum(R^2)) / (m k).

- ``--large``: the whole ``Ibdb.run`` (task statistics, posterior, 10^4 hypotheses, shards,
  store) of a synthetic task, n_train 8000, n_test 2000 (8-dimensional manifold in 64
  dimensions, 10 classes), RBF bandwidth 1.0, jitter 1e-6, in a fresh process: CPU time (target
  under 60 s), wall time, peak RSS.
- ``--max-n-train``: the same run at growing n_train (``--sizes``) until one exceeds 8 GiB of
  peak RSS or 5 minutes on this machine's cores (CPU time over cores x 300 s, so that other
  processes slowing the wall clock do not count), then bisection to ``--resolution``; reports
  the largest n_train tried within both.
- ``--paper``: an algorithm comparison, not an implementation one: the whole ``ibdb run``
  against the paper's procedure, which fits the kernel inverse by Adam (mini-batches of 5
  training rows, 10^4 epochs at lr 1e-2 for alpha, then K^-1 K(X, T) in groups of 10 test
  columns, 10^4 epochs each at lr 1e-3), timed for a few epochs per phase and extrapolated
  linearly (its posterior and sampling are not counted, which favours it).

- ``--smoke`` (with any mode): the same code at the smallest sizes, to check that the script
  runs (tests/test_benchmarks.py): digits n_train 100, n_test 50, 200 hypotheses in chunks of
  100; ``--large`` at n_train 200, n_test 100; ``--max-n-train`` from sizes 200,400. Its
  timings mean nothing.

Usage: python benchmarks/bench_gp_runner.py [--repeats 5] [--threads 1,2]
       python benchmarks/bench_gp_runner.py --large
       python benchmarks/bench_gp_runner.py --max-n-train [--sizes 8000,16000] [--resolution 1000]
       python benchmarks/bench_gp_runner.py --paper [--repeats 3] [--epochs 3]
Smallest settings (what tests/test_benchmarks.py runs):
       python benchmarks/bench_gp_runner.py --smoke --repeats 1 --threads 1
       python benchmarks/bench_gp_runner.py --smoke --large
       python benchmarks/bench_gp_runner.py --smoke --max-n-train
       python benchmarks/bench_gp_runner.py --smoke --paper --repeats 1 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BANDWIDTH = 1.0
DIGITS_TASK = {"name": "digits-1000", "source": {"kind": "digits"}, "n_train": 1000,
               "n_test": 797, "eps": [0.45]}
N_HYPOTHESES = 10_000
CHUNK = 1000
SEED = 0
IMPLEMENTATIONS = ("ibdb", "numpy", "sklearn")
MEMORY_LIMIT_GIB = 8.0
TIME_LIMIT_S = 300.0
LARGE_N_TRAIN, LARGE_N_TEST = 8000, 2000
MAX_N_TRAIN_SIZES = "8000,16000,24000,28000,32000"
SMOKE = False


def use_smoke_sizes() -> None:
    """--smoke: every mode's sizes at their smallest (the code paths stay the same)."""
    global SMOKE, N_HYPOTHESES, CHUNK, LARGE_N_TRAIN, LARGE_N_TEST, MAX_N_TRAIN_SIZES
    SMOKE = True
    DIGITS_TASK.update({"name": "digits-100", "n_train": 100, "n_test": 50})
    N_HYPOTHESES, CHUNK = 200, 100
    LARGE_N_TRAIN, LARGE_N_TEST, MAX_N_TRAIN_SIZES = 200, 100, "200,400"


def synthetic_task(n_train: int, n_test: int) -> dict[str, Any]:
    return {"name": f"synthetic-{n_train}", "n_train": n_train, "n_test": n_test,
            "eps": [0.1], "source": {"kind": "synthetic", "intrinsic_dim": 8,
                                     "ambient_dim": 64, "n_classes": 10,
                                     "n_points": n_train + n_test, "seed": 0}}


def _load(task: dict[str, Any]) -> Any:
    from ibdb.data.task import load_task
    from ibdb.spec.sources import Task

    return load_task(Task.model_validate(task), spec_dir=Path("."))


def _seeds(start: int, stop: int) -> np.ndarray:
    from ibdb.run.plan import hypothesis_seeds

    return hypothesis_seeds(SEED, np.arange(start, stop))


# ------------------------------------------------------------------ the three implementations


def ibdb_losses(data: Any, jitter: float, n: int) -> dict[str, np.ndarray]:
    import torch

    from ibdb.runners.gp import GPRunner
    from ibdb.spec.spaces import GPSpace

    runner = GPRunner(GPSpace(name="rbf", bandwidth=BANDWIDTH, jitter=jitter), data,
                      device=torch.device("cpu"))
    parts = [runner.sample(np.arange(s, min(s + CHUNK, n)), _seeds(s, min(s + CHUNK, n)))
             for s in range(0, n, CHUNK)]
    spectrum = runner.spectrum()
    return {"test_mse": np.concatenate([p["test_mse"] for p in parts]),
            "test_error": np.concatenate([p["test_error"] for p in parts]),
            "eigenvalue": spectrum["eigenvalue"], "residuals": spectrum["residuals"]}


def torch_normals(seeds: np.ndarray, m: int, k: int) -> np.ndarray:
    """(m, B, k) float32: hypothesis b's (m, k) standard normals from a torch generator seeded
    with seeds[b], the convention ibdb's gp runner follows
    (docs/decisions/0028-normals-float32-on-cpu.md)."""
    import torch

    out = np.empty((m, len(seeds), k), dtype=np.float32)
    draw = torch.empty((m, k), dtype=torch.float32)
    generator = torch.Generator()
    for b, seed in enumerate(seeds.tolist()):
        generator.manual_seed(seed)
        torch.randn((m, k), generator=generator, out=draw)
        out[:, b, :] = draw.numpy()
    return out


def numpy_losses(data: Any, jitter: float, n: int) -> dict[str, np.ndarray]:
    from scipy.linalg import cholesky, eigh, solve_triangular

    def rbf(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = a @ b.T  # the one (len(a), len(b)) array; everything else is in place
        out *= -2.0
        out += np.einsum("ij,ij->i", a, a)[:, None]
        out += np.einsum("ij,ij->i", b, b)[None, :]
        np.maximum(out, 0.0, out=out)
        out *= -0.5 / BANDWIDTH**2
        return np.exp(out, out=out)

    x, x_test = data.x_train, data.x_test
    k_train = rbf(x, x)
    k_train.flat[:: len(x) + 1] += jitter
    chol = cholesky(k_train, lower=True, overwrite_a=True, check_finite=False)
    v = solve_triangular(chol, rbf(x, x_test), lower=True, overwrite_b=True,
                         check_finite=False)
    mean = v.T @ solve_triangular(chol, data.y_train, lower=True, check_finite=False)
    cov = rbf(x_test, x_test)
    cov -= v.T @ v
    lam, q = eigh(cov, overwrite_a=True, check_finite=False)
    np.maximum(lam, 0.0, out=lam)
    residuals = q.T @ (mean - data.y_test)
    m, k = mean.shape
    root = np.sqrt(lam)
    root32, q32, mean32 = root.astype(np.float32), q.astype(np.float32), mean.astype(np.float32)
    mse, err = [], []
    for start in range(0, n, CHUNK):
        z = torch_normals(_seeds(start, min(start + CHUNK, n)), m, k)
        dev = z.astype(np.float64)
        dev *= root[:, None, None]
        dev += residuals[:, None, :]
        mse.append(np.einsum("ibk,ibk->b", dev, dev) / (m * k))
        z *= root32[:, None, None]
        preds = (q32 @ z.reshape(m, -1)).reshape(z.shape)
        preds += mean32[:, None, :]
        err.append((preds.argmax(axis=2) != data.labels_test[:, None]).mean(axis=0))
    return {"test_mse": np.concatenate(mse), "test_error": np.concatenate(err),
            "eigenvalue": lam, "residuals": residuals}


def sklearn_losses(data: Any, jitter: float, n: int) -> dict[str, np.ndarray]:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF

    gpr = GaussianProcessRegressor(kernel=RBF(length_scale=BANDWIDTH), optimizer=None,
                                   alpha=jitter).fit(data.x_train, data.y_train)
    samples = gpr.sample_y(data.x_test, n, random_state=SEED)  # (m, k, n)
    mse = np.empty(n)
    err = np.empty(n)
    for start in range(0, n, CHUNK):  # in chunks: a second (m, k, n) array would double memory
        part = samples[:, :, start:start + CHUNK]
        mse[start:start + CHUNK] = ((part - data.y_test[:, :, None]) ** 2).mean(axis=(0, 1))
        wrong = part.argmax(axis=1) != data.labels_test[:, None]
        err[start:start + CHUNK] = wrong.mean(axis=0)
    return {"test_mse": mse, "test_error": err, "gpr": gpr}


def _child_compare(impl: str, jitter: float, n: int, out_dir: str) -> dict[str, Any]:
    data = _load(DIGITS_TASK)
    run = {"ibdb": ibdb_losses, "numpy": numpy_losses, "sklearn": sklearn_losses}[impl]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run(data, jitter, n)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if impl == "sklearn":  # its spectrum, for the check only: not timed
        _, cov = result.pop("gpr").predict(data.x_test, return_cov=True)
        cov = cov[:, :, 0] if cov.ndim == 3 else cov
        result["eigenvalue"] = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    np.savez(Path(out_dir) / f"{impl}.npz", **result)
    return {"cpu_s": cpu, "wall_s": wall,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ------------------------------------------------------------------ whole runs (large, max n)

RUN_CHILD_SPEC = """
name: bench
tasks:
  - {task}
spaces:
  - {{name: rbf, kind: gp, bandwidth: {bandwidth}, jitter: {jitter:.1e}}}
budgets:
  - {{name: b, n_hypotheses: {n}, chunk_size: {chunk}, seed: 0}}
"""


def _child_run(task: dict[str, Any], jitter: float, n: int, out_dir: str) -> dict[str, Any]:
    import torch  # noqa: F401  (imports are not part of the run)

    from ibdb.api import Ibdb
    from ibdb.stats.bound import task_statistics

    spec = Path(out_dir) / "bench.yaml"
    spec.write_text(RUN_CHILD_SPEC.format(task=json.dumps(task), bandwidth=BANDWIDTH,
                                          jitter=jitter, n=n, chunk=CHUNK))
    usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    report = Ibdb(Path(out_dir) / "b.duckdb", device="cpu").run(spec, estimate=False)
    usage1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall0
    assert report.ingest is not None and report.ingest.hypotheses_inserted == n, report.ingest
    data = _load(task)  # the task statistics once more, timed alone, for the breakdown
    cpu_stats = time.process_time()
    task_statistics(data.x_train, data.y_train.argmax(axis=1))
    cpu_stats = time.process_time() - cpu_stats
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall, "task_statistics_cpu_s": cpu_stats,
            "peak_mib": usage1.ru_maxrss / 1024}


def _spawn(payload: dict[str, Any], threads: int) -> dict[str, Any]:
    payload = {**payload, "smoke": SMOKE}  # the child's sizes, as ours
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(payload)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {payload} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(payload: dict[str, Any]) -> None:
    import torch

    if payload.get("smoke"):
        use_smoke_sizes()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    if payload["mode"] == "compare":
        # every implementation's imports happen before its clock starts
        import scipy.linalg  # noqa: F401
        import sklearn.gaussian_process  # noqa: F401

        import ibdb.runners.gp  # noqa: F401

        result = _child_compare(payload["impl"], payload["jitter"], payload["n"],
                                payload["out_dir"])
    else:
        result = _child_run(payload["task"], payload["jitter"], payload["n"],
                            payload["out_dir"])
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


# ------------------------------------------------------------------ modes


def _standard_error(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x)))


def check_agreement(folder: Path, n: int) -> list[str]:
    """What the three implementations agree on; raises if they do not.

    Hypothesis i is mu + Q sqrt(lam) Z_i, so it depends on the signs LAPACK gives Q's columns,
    and two eigensolvers need not choose alike: ibdb and the numpy pipeline, drawing the same
    Z_i, agree hypothesis by hypothesis only up to those signs. So the check compares what is
    sign-free: the eigenvalues, each component's residual energy sum_c R_jc^2, every
    hypothesis's MSE recomputed from the implementation's own (lam, R) and the shared normals,
    and mean losses (within 5 standard errors) against each other and the closed form.
    """
    res = {impl: dict(np.load(folder / f"{impl}.npz")) for impl in IMPLEMENTATIONS}
    ours, ref, skl = res["ibdb"], res["numpy"], res["sklearn"]
    lam = ours["eigenvalue"]
    top = lam.max()
    lines = []
    for name, other in (("numpy", ref), ("sklearn", skl)):
        gap = np.abs(np.sort(other["eigenvalue"]) - np.sort(lam)).max() / top
        lines.append(f"spectrum ibdb vs {name}: max |eigenvalue gap| / max eigenvalue = "
                     f"{gap:.1e}")
        assert gap < 1e-8, lines[-1]
    energy = {name: (r["residuals"] ** 2).sum(1) for name, r in (("ibdb", ours), ("np", ref))}
    gap = np.abs(energy["np"] - energy["ibdb"]).max() / energy["ibdb"].max()
    lines.append(f"residual energy per component, ibdb vs numpy: max gap / max = {gap:.1e}")
    assert gap < 1e-8, lines[-1]
    m, k = ours["residuals"].shape
    z = torch_normals(_seeds(0, 100), m, k).astype(np.float64)  # (m, 100, k)
    for name, r in (("ibdb", ours), ("numpy", ref)):
        dev = r["residuals"][:, None, :] + np.sqrt(r["eigenvalue"])[:, None, None] * z
        again = (dev**2).mean(axis=(0, 2))
        gap = np.abs(again / r["test_mse"][:100] - 1).max()
        lines.append(f"{name}: test MSE of hypotheses 0-99 recomputed from its own spectrum "
                     f"and the shared normals: max relative gap {gap:.1e}")
        assert gap < 1e-10, lines[-1]
    for loss in ("test_mse", "test_error"):
        a = ours[loss]
        parts = []
        for name, other in (("numpy", ref), ("sklearn", skl)):
            b = other[loss]
            se = np.hypot(_standard_error(a), _standard_error(b))
            parts.append(f"{name} {b.mean():.6f} ({(b.mean() - a.mean()) / se:+.2f} SE)")
            assert abs(a.mean() - b.mean()) < 5 * se, (loss, name, a.mean(), b.mean(), se)
        lines.append(f"mean {loss}: ibdb {a.mean():.6f}, " + ", ".join(parts))
    exact = (k * lam.sum() + (ours["residuals"] ** 2).sum()) / (m * k)
    off = ", ".join(f"{name} {(r['test_mse'].mean() - exact) / _standard_error(r['test_mse']):+.2f}"
                    for name, r in res.items())
    lines.append(f"closed-form mean test MSE {exact:.6f}; sample means off by (SE): {off}")
    for r in res.values():
        assert abs(r["test_mse"].mean() - exact) < 5 * _standard_error(r["test_mse"]), off
    return lines


def compare(repeats: int, thread_counts: list[int]) -> None:
    n, jitter = N_HYPOTHESES, 1e-8
    print(f"implementation comparison: digits n_train {DIGITS_TASK['n_train']}, n_test "
          f"{DIGITS_TASK['n_test']}, RBF {BANDWIDTH}, "
          f"jitter {jitter:g}, {n} hypotheses (chunks of {CHUNK}); {repeats} alternating "
          "rounds per thread count, each implementation in a fresh process")
    for threads in thread_counts:
        times: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLEMENTATIONS}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                for impl in IMPLEMENTATIONS:
                    times[impl].append(_spawn({"mode": "compare", "impl": impl,
                                               "jitter": jitter, "n": n, "out_dir": tmp},
                                              threads))
            checks = check_agreement(Path(tmp), n)
        print(f"{threads} thread(s) (torch, OpenBLAS and OpenMP pools alike):")
        for line in checks:
            print("  check: " + line)
        cpu = {impl: statistics.median(t["cpu_s"] for t in times[impl]) for impl in times}
        for impl in IMPLEMENTATIONS:
            each = ", ".join(f"{t['cpu_s']:.2f}" for t in times[impl])
            wall = statistics.median(t["wall_s"] for t in times[impl])
            peak = max(t["peak_mib"] for t in times[impl])
            print(f"  {impl:8s} CPU median {cpu[impl]:6.2f} s ({each}); wall median "
                  f"{wall:.2f} s; peak RSS {peak:.0f} MiB")
        print(f"  ratio ibdb / numpy CPU: {cpu['ibdb'] / cpu['numpy']:.2f} (target <= 1.1); "
              f"ibdb / sklearn CPU: {cpu['ibdb'] / cpu['sklearn']:.2f} "
              f"(sklearn takes {cpu['sklearn'] / cpu['ibdb']:.1f}x ibdb's)")


def _run_at(n_train: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return _spawn({"mode": "run", "task": synthetic_task(n_train, LARGE_N_TEST),
                       "jitter": 1e-6,
                       "n": N_HYPOTHESES, "out_dir": tmp}, threads)


def _describe(n_train: int, r: dict[str, Any]) -> str:
    return (f"n_train {n_train}, n_test {LARGE_N_TEST}, {N_HYPOTHESES} hypotheses: CPU "
            f"{r['cpu_s']:.1f} s, "
            f"wall {r['wall_s']:.1f} s, peak RSS {r['peak_mib'] / 1024:.2f} GiB, task statistics "
            f"{r['task_statistics_cpu_s']:.2f} s CPU ({r['threads']} threads)")


def large(threads: int) -> None:
    r = _run_at(LARGE_N_TRAIN, threads)
    print("whole Ibdb.run, synthetic (8-dim manifold in 64 dims, 10 classes), RBF 1.0, "
          "jitter 1e-6:")
    print("  " + _describe(LARGE_N_TRAIN, r) + " (target: under 60 s CPU)")


def max_n_train(sizes: list[int], threads: int, resolution: int) -> None:
    budget_cpu = TIME_LIMIT_S * threads
    print(f"largest n_train within {MEMORY_LIMIT_GIB:g} GiB peak RSS and {TIME_LIMIT_S:.0f} s on "
          f"{threads} cores (CPU time <= {budget_cpu:.0f} s), whole Ibdb.run as in --large:")

    def within(n_train: int) -> bool:
        r = _run_at(n_train, threads)
        ok = r["peak_mib"] / 1024 <= MEMORY_LIMIT_GIB and r["cpu_s"] <= budget_cpu
        print(("  within: " if ok else "  over:   ") + _describe(n_train, r), flush=True)
        return ok

    best, over = None, None
    for n_train in sizes:  # the given sizes, in order, until one is over a limit
        if not within(n_train):
            over = n_train
            break
        best = n_train
    # then halve the gap between the last size within and the first over, to `resolution`
    while best is not None and over is not None and over - best > resolution:
        middle = (best + over) // 2 // 100 * 100
        if within(middle):
            best = middle
        else:
            over = middle
    print(f"largest n_train within both: {best}" + (f" (first over: {over})" if over else ""))


def time_ibdb_whole_run() -> dict:
    """The whole `ibdb run` of the digits task in a fresh process (for the paper comparison)."""
    child = (
        "import json, resource, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from ibdb.api import Ibdb\n"
        "import torch\n"
        "t1 = time.perf_counter()\n"
        "report = Ibdb(sys.argv[1] + '/b.duckdb', device='cpu').run(sys.argv[2], estimate=False)\n"
        "t2 = time.perf_counter()\n"
        "assert report.ingest.hypotheses_inserted == int(sys.argv[3]), report.ingest\n"
        "print(json.dumps({'run_s': t2 - t1, 'imports_s': t1 - t0, 'peak_mib': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "'threads': torch.get_num_threads()}))\n")
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(RUN_CHILD_SPEC.format(task=json.dumps(DIGITS_TASK), bandwidth=BANDWIDTH,
                                              jitter=1e-8, n=N_HYPOTHESES, chunk=CHUNK))
        out = subprocess.run([sys.executable, "-c", child, tmp, str(spec), str(N_HYPOTHESES)],
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def time_paper_procedure(epochs: int) -> dict:
    """The paper's Adam fits of the kernel inverse, timed for `epochs` epochs per phase."""
    import torch

    data = _load(DIGITS_TASK)
    x_train, y_train = torch.tensor(data.x_train), torch.tensor(data.y_train)
    x_test = torch.tensor(data.x_test)

    def rbf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b) ** 2 / (2.0 * BANDWIDTH**2))

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


def paper(repeats: int, epochs: int) -> None:
    print("algorithm comparison (exact solve against the paper's Adam fits; not an "
          "implementation comparison):")
    ours = [time_ibdb_whole_run() for _ in range(repeats)]
    base = [time_paper_procedure(epochs) for _ in range(repeats)]
    run_s = statistics.median(r["run_s"] for r in ours)
    base_s = statistics.median(b["extrapolated_s"] for b in base)
    each = ", ".join(f"{r['run_s']:.2f}" for r in ours)
    print(f"ibdb whole run (posterior, spectrum, {N_HYPOTHESES} hypotheses, shards, store): median "
          f"{run_s:.2f} s wall over {repeats} ({each}); imports "
          f"{statistics.median(r['imports_s'] for r in ours):.2f} s; peak memory "
          f"{max(r['peak_mib'] for r in ours):.0f} MiB; torch threads {ours[0]['threads']}")
    print(f"paper procedure (Adam kernel inverse, extrapolated from {epochs} epochs per phase): "
          f"alpha epoch {statistics.median(b['alpha_epoch_s'] for b in base) * 1e3:.1f} ms, "
          f"test-kernel group epoch "
          f"{statistics.median(b['group_epoch_s'] for b in base) * 1e3:.1f} ms x "
          f"{base[0]['groups']} groups; total median {base_s:.0f} s ({base_s / 3600:.1f} h)")
    print(f"algorithm ratio, paper procedure / ibdb (wall): {base_s / run_s:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--large", action="store_true", help="the 8000 x 2000 synthetic run")
    mode.add_argument("--max-n-train", action="store_true",
                      help="the largest n_train within 8 GiB and 5 minutes")
    mode.add_argument("--paper", action="store_true",
                      help="algorithm comparison against the paper's Adam procedure")
    mode.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true",
                        help="smallest sizes, to check that the script runs (timings mean nothing)")
    parser.add_argument("--epochs", type=int, default=3, help="--paper: epochs per phase")
    parser.add_argument("--threads", default=None,
                        help="thread counts, comma-separated (compare: default 1 and the "
                        "machine's cores; the others: the machine's cores)")
    parser.add_argument("--sizes", default=None,
                        help="--max-n-train: n_train values to try, in order, before bisecting "
                        f"(default {MAX_N_TRAIN_SIZES}; 200,400 with --smoke)")
    parser.add_argument("--resolution", type=int, default=1000,
                        help="--max-n-train: bisect until the bracket is this narrow")
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    if args.smoke:
        use_smoke_sizes()
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    if args.large:
        large(threads[0] if threads else cores)
    elif args.max_n_train:
        max_n_train([int(s) for s in (args.sizes or MAX_N_TRAIN_SIZES).split(",")],
                    threads[0] if threads else cores,
                    args.resolution)
    elif args.paper:
        paper(args.repeats, args.epochs)
    else:
        compare(args.repeats, threads or sorted({1, cores}))


if __name__ == "__main__":
    main()
