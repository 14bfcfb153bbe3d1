"""Interactive commands start fast: they import neither torch nor scipy.stats (nor numpy,
which DuckDB's function registration would pull in, unless the SQL calls an ib_ function).

Each command runs in a fresh interpreter, since an import made by another test would hide one
made here. Timings are benchmarks/bench_startup.py's business; this checks the cause.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ibdb.api import Ibdb

_PROBE = """
import contextlib, io, json, sys
from ibdb.cli import main
sys.argv = ["ibdb", *json.loads(sys.argv[1])]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main()
    except SystemExit as exc:
        code = exc.code
print(json.dumps([code, sorted(m for m in ("torch", "scipy.stats", "numpy", "sklearn")
                                if m in sys.modules)]))
"""


def _imports(args: list[str]) -> tuple[int, list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    code, modules = json.loads(out.strip().splitlines()[-1])
    return code, modules


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding one small gp run and its estimates, and the spec it came from."""
    from conftest import make_npz, spec_dict, write_spec

    folder = tmp_path_factory.mktemp("startup")
    make_npz(folder / "toy.npz")
    spec = write_spec(folder, spec_dict())
    Ibdb(folder / "s.duckdb", shards=folder / "shards", device="cpu").run(spec)
    return folder / "s.duckdb", spec


@pytest.mark.parametrize("command", [
    ["--help"], ["sql", "SELECT count(*) FROM ib_estimates"], ["check"], ["estimate", "--help"],
])
def test_interactive_commands_import_nothing_heavy(stored, command):
    db, _ = stored
    code, modules = _imports(["--db", str(db), *command])
    assert code in (0, None) and modules == []


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_spec_commands_load_data_but_no_torch_or_scipy_stats(stored, command):
    db, spec = stored
    code, modules = _imports(["--db", str(db), command, str(spec)])
    assert code in (0, None)
    assert "torch" not in modules and "scipy.stats" not in modules


def test_sql_calling_an_estimator_loads_it_then(stored):
    db, _ = stored
    code, modules = _imports(["--db", str(db), "sql", "SELECT ib_fit(list(test_mse), 0.2, "
                              "'empirical').bits FROM losses"])
    assert code in (0, None) and "scipy.stats" in modules and "torch" not in modules
