"""Every benchmark runs as shipped: each script in benchmarks/ at its smallest settings.

Each case runs ``python benchmarks/NAME.py <smallest args>`` as a subprocess from the repository
root (temporary files under the test's own folder), then checks that it exits 0 and that its
output holds the result lines the benchmark exists to print: every number each pattern
captures must be finite and positive. The smallest settings are the ones each script's
docstring gives; they run the same code as a full run, only smaller, so their timings mean
nothing. They run with OMP_NUM_THREADS=1: two torch threads on a busy 2-core machine run several
times slower than one. A new script in benchmarks/ without an entry in SMALLEST fails
``test_every_benchmark_has_smallest_settings`` and its own case. Cases that cannot go below
about 10 s are marked slow (CI runs them; the default run deselects them).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    # regular expressions (searched line by line, MULTILINE), each must match at least once;
    # every group they capture is a number that must be finite and > 0
    results: tuple[str, ...]
    slow: bool = False


def _ratio_lines(*patterns: str) -> tuple[str, ...]:
    return tuple(p.replace("{N}", NUMBER) for p in patterns)


# script name -> its smallest-settings runs (a script with several modes has one per mode)
SMALLEST: dict[str, list[Case]] = {
    "bench_bootstrap_memory.py": [Case(
        ("--repeats", "1", "--sizes", "1000", "--n-boot", "20", "--boots", "20"),
        # the first table's row: ibdb's peak, the naive bootstrap's peak, their ratio
        _ratio_lines(r"^1e\+03 \| 20 \| \S+ \| {N} \| \S+ \| \S+ \| \S+ \| \S+ \| \S+ \| "
                     r"{N}x \| \S+x$",
                     r"^20 \| \S+ \| {N} \| {N}$"))],
    "bench_estimate_recompute.py": [Case(
        ("--runs", "2", "--paper-runs", "1", "--repeats", "1", "--losses", "1000"),
        _ratio_lines(r"^ibdb estimate .*: 60 rows, median {N} s",
                     r"^baseline \(paper.*: {N} s per run, extrapolated",
                     r"^ratio baseline / ibdb: {N}x$"))],
    "bench_frames.py": [Case(
        ("1000", "1"),
        _ratio_lines(r"^  ratio api/plain arrow +{N}  \(vs unsorted {N}\)$",
                     r"^  ratio api/plain pandas +{N}  \(vs unsorted {N}\)$"))],
    "bench_gp_runner.py": [
        Case(("--smoke", "--repeats", "1", "--threads", "1"),
             _ratio_lines(r"^  ibdb +CPU median +{N} s",
                          r"^  numpy +CPU median +{N} s",
                          r"^  sklearn +CPU median +{N} s",
                          r"^  ratio ibdb / numpy CPU: {N} \(target <= 1.1\); ibdb / sklearn CPU: "
                          r"{N} \(sklearn takes {N}x ibdb's\)$"),
             slow=True),
        Case(("--smoke", "--large"),
             _ratio_lines(r"^  n_train 200, n_test 100, 200 hypotheses: CPU {N} s, wall {N} s, "
                          r"peak RSS {N} GiB")),  # the script's one case in the default run
        Case(("--smoke", "--max-n-train"),
             _ratio_lines(r"^  within: n_train 400, .*: CPU {N} s",
                          r"^largest n_train within both: {N}$"), slow=True),
        Case(("--smoke", "--paper", "--repeats", "1", "--epochs", "1"),
             _ratio_lines(r"^ibdb whole run .*: median {N} s wall",
                          r"^algorithm ratio, paper procedure / ibdb \(wall\): {N}x$"),
             slow=True),
    ],
    "bench_ib_estimates.py": [Case(
        ("--runs", "2", "--repeats", "1", "--sizes", "100", "1000"),
        # the two stores' rows: ib_estimates, stale_estimates, version-2 digests, their ratio
        _ratio_lines(r"^ +2e\+02 +{N} ms +{N} ms +\S+ s +{N}x +\S+ s$",
                     r"^ +2e\+03 +{N} ms +{N} ms +\S+ s +{N}x +\S+ s$",
                     r"^ib_estimates at 2e\+03 losses / at 2e\+02: {N}x"))],
    "bench_ingest.py": [Case(
        ("--rows", "10000", "--shards", "4", "--repeats", "1"),
        _ratio_lines(r"^ibdb ingest .*: wall {N} s = [\d,]+ rows/s, CPU {N} s",
                     r"^baseline INSERT .*: wall {N} s = [\d,]+ rows/s, CPU {N} s",
                     r"^ratio ibdb/baseline throughput: {N}; ratio ibdb/baseline CPU: {N}; "
                     r"with the baseline hashing too: throughput {N}, CPU {N}$"))],
    "bench_mlp.py": [Case(
        ("--quick", "--hypotheses", "8", "--baseline-networks", "2", "--check-networks", "2",
         "--repeats", "1", "--threads", "1"),
        _ratio_lines(r'^  "ibdb_hypotheses_per_s": {N},$',
                     r'^  "ratio": {N},$',
                     r'^  "ratio_to_vmap": {N},$',
                     r'^  "ratio_to_vmap_torch_adam": {N},$',
                     r'^    "loop_over_ibdb": {N},$'))],
    "bench_ncx2_fit.py": [Case(
        ("--repeats", "1", "--scipy-repeats", "1", "--n", "1000"),
        _ratio_lines(*(rf"^{name} \| {{N}} \| {{N}} \| {{N}}x \| " for name in
                       ("ncx2", "gp-like", "misspecified"))))],
    "bench_splitting.py": [Case(
        ("--repeats", "5", "--n", "100", "--dim", "10", "--depths", "5"),
        # bits, mean error (any sign), sd, Au-Beck SE, coverages, levels, evaluations, 1/p
        _ratio_lines(r"^ +5 +[-+]\d+\.\d+ +{N} +{N} +\d+/5 +\d+/1 +{N} +{N} +{N} +\S+$"))],
    "bench_splitting_gp.py": [Case(
        ("--n-train", "50", "--n-test", "50", "--depths", "5", "--repeats", "5",
         "--particles", "100"),
        _ratio_lines(r"^ +50 +{N} +[-+]\d+\.\d+ +{N} +{N} +\d+/5 +[-+]\d+\.\d+ +\d+/1 +{N} +"
                     r"{N} +\S+$"))],
    "bench_splitting_mlp.py": [Case(
        ("--bits", "6", "--particles", "100", "--iid", "100"),
        _ratio_lines(r"^whole run: {N} s wall",
                     r"^baseline, plain Monte Carlo at this run's rate \({N} networks/s\): .* "
                     r"splitting trained {N} \({N}x fewer\)$",
                     # method_agreement's rows: eps, ncx2, empirical (>= when a bound), splitting
                     r"^ +{N} +{N} +(?:>=)? *{N} +{N}$"),
        slow=True)],
    "bench_startup.py": [Case(
        ("--repeats", "1"),
        _ratio_lines(*(rf"^{re.escape(name)} +{{N}} +{{N}} +{{N}}x$" for name in
                       ('python -c "import duckdb"', "ibdb --help", 'ibdb sql "select 1"',
                        "ibdb check"))))],
    "bench_torch_space.py": [Case(
        ("--networks", "8", "--repeats", "1", "--epochs", "2", "--n-train", "100",
         "--check-networks", "2"),
        _ratio_lines(*(rf"^{name} +\({letter}\) .*: {{N}} networks/s, {{N}} ms CPU per network"
                       for name, letter in (("torch", "a"), ("mlp", "b"), ("func", "c"),
                                            ("bmm", "d"))),
                     *(rf"^ratio {pair}: {{N}} \(rate, wall\); {{N}} \(CPU time "
                       for pair in ("torch/func", "torch/bmm", "mlp/bmm")),
                     r"^requirement \(a\) torch >= 1\.0x \(c\) func and \(d\) bmm: "
                     r"(?:met|NOT met) \(wall rate\), (?:met|NOT met) \(CPU time\)$"))],
    "gpu_check.py": [Case(
        ("--smoke",),
        # without CUDA (the test machines): the CPU half's rows (hypotheses, sampling seconds,
        # hypotheses per second), nothing compared
        _ratio_lines(r"^no CUDA device: ",
                     *(rf"^{name} +\| +{{N}} \| +[\d.]+ \| +{{N}} \| +{{N}} \| +- \|"
                       for name in ("gp", "mlp", "cnn", "torch-mlp", "torch-conv",
                                    "torch-attention"))))],
}


def _scripts() -> list[str]:
    return sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def _cases() -> list:
    params = []
    for name in _scripts():
        cases = SMALLEST.get(name) or [None]
        for k, case in enumerate(cases):
            marks = [pytest.mark.slow] if case is not None and case.slow else []
            params.append(pytest.param(name, case, id=f"{name}-{k}", marks=marks))
    return params


def test_every_benchmark_has_smallest_settings() -> None:
    scripts = _scripts()
    assert scripts, f"no benchmarks found in {BENCHMARKS}"
    missing = [s for s in scripts if not SMALLEST.get(s)]
    assert not missing, (f"benchmarks without smallest settings in tests/test_benchmarks.py "
                         f"SMALLEST: {missing}")
    stale = sorted(set(SMALLEST) - set(scripts))
    assert not stale, f"SMALLEST names scripts that are not in benchmarks/: {stale}"


@pytest.mark.parametrize(("name", "case"), _cases())
def test_benchmark_runs_at_smallest_settings(name: str, case: Case | None,
                                             tmp_path: Path) -> None:
    if case is None:
        pytest.fail(f"benchmarks/{name} has no smallest-settings entry in SMALLEST")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(Path("benchmarks") / name), *case.args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    shown = f"stdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-4000:]}"
    assert out.returncode == 0, f"benchmarks/{name} {' '.join(case.args)} failed\n{shown}"
    for pattern in case.results:
        matches = list(re.finditer(pattern, out.stdout, re.MULTILINE))
        assert matches, f"benchmarks/{name}: no line matches {pattern!r}\n{shown}"
        for match in matches:
            for text in match.groups():
                value = float(text)
                assert math.isfinite(value) and value > 0, (
                    f"benchmarks/{name}: {value} in {match.group(0)!r} is not finite and "
                    f"positive\n{shown}")
