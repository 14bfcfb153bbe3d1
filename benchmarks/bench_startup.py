"""Start-up cost of interactive commands against `python -c "import duckdb"`, in the same run.

An SQL tool is used interactively, so `ibdb --help`, `ibdb sql "select 1"` and `ibdb check`
should cost little more than the DuckDB import they cannot avoid. Each command runs in a fresh
process (as a user types it); its CPU time (user + system, from the kernel's accounting of the
finished child) is what counts, since wall time on a shared 2-core machine mostly measures the
neighbours. Medians of --repeats rounds, the commands interleaved in each round.

Usage: python benchmarks/bench_startup.py [--repeats 15]
Smallest settings (what tests/test_benchmarks.py runs, a few seconds):
       python benchmarks/bench_startup.py --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _child_cpu(argv: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of ``argv`` to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    ibdb = shutil.which("ibdb")
    entry = [ibdb] if ibdb else [sys.executable, "-c", "from ibdb.cli import main; main()"]
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.duckdb")
        subprocess.run([*entry, "--db", db, "init"], check=True, stdout=subprocess.DEVNULL)
        commands = {
            'python -c "import duckdb"': [sys.executable, "-c", "import duckdb"],
            "ibdb --help": [*entry, "--help"],
            'ibdb sql "select 1"': [*entry, "--db", db, "sql", "select 1"],
            "ibdb sql over ib_estimates": [*entry, "--db", db, "sql",
                                           "SELECT count(*) FROM ib_estimates"],
            "ibdb check": [*entry, "--db", db, "check"],
            'ibdb sql "select ib_fit(...)"': [*entry, "--db", db, "sql",
                                              "SELECT ib_fit([0.1, 0.2, 0.3], 0.2, "
                                              "'empirical').bits"],
        }
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        wall: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # one warm-up each (page cache, .pyc files)
            _child_cpu(argv)
        for _ in range(args.repeats):
            for name, argv in commands.items():
                c, w = _child_cpu(argv)
                cpu[name].append(c)
                wall[name].append(w)

    base = statistics.median(cpu['python -c "import duckdb"'])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; medians of {args.repeats} fresh processes each")
    print(f"{'command':34s} {'CPU (s)':>8s} {'wall (s)':>9s} {'CPU / import duckdb':>20s}")
    for name in commands:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"{name:34s} {c:8.3f} {w:9.3f} {c / base:19.2f}x")


if __name__ == "__main__":
    main()
