"""Bootstrap memory: ibdb.stats.bootstrap.ncx2_bits_interval against a naive numpy bootstrap.

Losses: 0.003 * chi2'(3, 20), as in bench_ncx2_fit.py, at 10^5 and 10^6 values. Every
measurement runs in a fresh Python process (so one does not inherit another's high-water
mark), which draws the losses and fits them, then measures one call:
- ibdb: ``ncx2_bits_interval(x, fit, eps, n_boot=B)`` (resampling, B refits, the interval);
- naive: what one would write with numpy, ``r = rng.choice(x, (B, n))`` and one statistic
  per replicate (``r.mean(axis=1)``): only the resamples, no refits, so a lower bound on what
  a naive bootstrap of the fit needs.
Reported per call: tracemalloc's peak (numpy's arrays are traced) and the growth of the
process's peak resident set (ru_maxrss) over the call, medians over --repeats; then the ratio
naive / ibdb. A second table runs ibdb at 10^5 losses with B = 50, 200 and 800: its peak
should not follow B * n * 8 bytes (what one (B, n) array of doubles takes).

Usage: python benchmarks/bench_bootstrap_memory.py [--repeats 3] [--sizes 100000 1000000]
       [--n-boot 200] [--boots 50 200 800]
Smallest settings (what tests/test_benchmarks.py runs, a few seconds):
       python benchmarks/bench_bootstrap_memory.py --repeats 1 --sizes 1000 --n-boot 20 --boots 20
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np

_MB = 1e6


def _losses(n: int) -> np.ndarray:
    from scipy import stats

    return stats.ncx2.rvs(3.0, 20.0, size=n, random_state=np.random.default_rng(2026)) * 0.003


def measure(method: str, n: int, n_boot: int) -> dict[str, float]:
    """One call of ``method`` on n losses, in this process: peaks in bytes, time in seconds."""
    from ibdb.stats.bootstrap import ncx2_bits_interval
    from ibdb.stats.ncx2fit import fit_scaled_ncx2

    x = _losses(n)
    fit = fit_scaled_ncx2(x)
    eps = [float(np.quantile(x, 0.01)), float(x.min()), float(x.min() * 1e-6)]
    if method == "ibdb":
        def call() -> object:
            return ncx2_bits_interval(x, fit, eps, n_boot=n_boot)
    else:
        def call() -> object:
            return np.random.default_rng(0).choice(x, (n_boot, n)).mean(axis=1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    tracemalloc.start()
    t0 = time.perf_counter()
    call()
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"traced": traced, "rss": rss_after - rss_before, "seconds": seconds}


def in_fresh_process(method: str, n: int, n_boot: int, repeats: int) -> dict[str, float]:
    """Medians over ``repeats`` fresh processes, each running :func:`measure` once."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", method, str(n), str(n_boot)],
            check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--boots", type=int, nargs="+", default=[50, 200, 800],
                    help="the second table's replicate counts")
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "N", "N_BOOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, n, n_boot = args.child
        print(json.dumps(measure(method, int(n), int(n_boot))))
        return

    print(f"# {platform.machine()} {platform.processor() or ''} python "
          f"{platform.python_version()} numpy {np.__version__} repeats={args.repeats} "
          "(medians; MB = 10^6 bytes)")
    b = args.n_boot
    print(" | ".join(("n", "B", "B*n*8 MB", "ibdb peak MB", "ibdb rss+ MB", "ibdb s",
                      "naive peak MB", "naive rss+ MB", "naive s", "naive/ibdb peak",
                      "naive/ibdb rss+")))
    for n in args.sizes:
        ours = in_fresh_process("ibdb", n, b, args.repeats)
        naive = in_fresh_process("naive", n, b, args.repeats)
        print(" | ".join([
            f"{n:.0e}", str(b), f"{b * n * 8 / _MB:.0f}",
            f"{ours['traced'] / _MB:.1f}", f"{ours['rss'] / _MB:.1f}", f"{ours['seconds']:.2f}",
            f"{naive['traced'] / _MB:.0f}", f"{naive['rss'] / _MB:.0f}",
            f"{naive['seconds']:.2f}", f"{naive['traced'] / ours['traced']:.1f}x",
            f"{naive['rss'] / max(ours['rss'], 1.0):.1f}x",
        ]))

    n = min(args.sizes)
    print(f"\n# ibdb peak against B at n = {n:.0e}: B*n*8 grows "
          f"{max(args.boots) / min(args.boots):g}x, the peak should not")
    print(" | ".join(("B", "B*n*8 MB", "ibdb peak MB", "peak / (B*n*8)")))
    for boot in args.boots:
        ours = in_fresh_process("ibdb", n, boot, args.repeats)
        print(" | ".join([str(boot), f"{boot * n * 8 / _MB:.0f}", f"{ours['traced'] / _MB:.1f}",
                          f"{ours['traced'] / (boot * n * 8):.3f}"]))


if __name__ == "__main__":
    main()
