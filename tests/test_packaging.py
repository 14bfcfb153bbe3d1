"""The README's install, as written, in a fresh virtual environment (issue 14): its install block
(`python3 -m venv .venv && . .venv/bin/activate && pip install "torch==2.13.0" -e . && ibdb
quickstart`) runs through bash in a copy of the source tree, an editable install the way a user
of a clone gets it. In that one environment (a module-scoped fixture, built once): the quickstart
runs in the clone and away from it; the README's notebook block runs as written, also from the
clone's root; `ibdb report` writes its figures and report.md. The wheel (`pip install .`, for use
away from a clone) is built from the same copy and carries runners/, schemas/, queries/ and the
bundled spec inside the package, and runs the quickstart from them. pip may use its cache;
nothing else is fetched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import quickstart_table, readme_blocks

ROOT = Path(__file__).resolve().parents[1]
# what a clone does not have, or what the README's commands make in it (`ibdb report`'s folder
# at the root only: ibdb/report/ is the package)
_IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                  ".pytest_cache", ".hypothesis", ".ruff_cache", "ibdb.duckdb*",
                                  "ibdb.shards")


def _not_in_a_clone(folder: str, names: list[str]) -> set[str]:
    ignored = set(_IGNORED(folder, names))
    if Path(folder) == ROOT and "report" in names:
        ignored.add("report")
    return ignored


def _block(lang: str, start: str) -> str:
    (block,) = [b for b in readme_blocks() if b.lang == lang and b.key[1].startswith(start)]
    return block.text


INSTALL = 'python3 -m venv .venv && . .venv/bin/activate && pip install "torch==2.13.0" -e . '


def _env() -> dict[str, str]:
    """A shell as a user opens it: no virtual environment active (this suite's venv is dropped
    from PATH when another python3 remains), no store or shard settings, and the CPU (the
    README's table is the CPU's)."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "IBDB_DB", "IBDB_SHARDS")}
    ours = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in out.get("PATH", "").split(os.pathsep) if p != ours)
    if shutil.which("python3", path=path):
        out["PATH"] = path
    out["CUDA_VISIBLE_DEVICES"] = ""
    return out


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A copy of the source tree after the README's install block ran in it, as written."""
    folder = tmp_path_factory.mktemp("clone") / "ibdb"
    shutil.copytree(ROOT, folder, ignore=_not_in_a_clone)
    line = _block("bash", INSTALL).strip()
    result = subprocess.run(["bash", "-c", line], cwd=folder, env=_env(), capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, f"{line}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return folder, result.stdout


def _venv(clone, *args: str, cwd: Path, timeout: float = 300,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    folder, _ = clone
    env = {**_env(), **(env or {})}
    env["PATH"] = f"{folder / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"  # as if activated
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _table() -> str:
    return _block("text", "run ")


@pytest.mark.slow
def test_readme_install_block_makes_a_working_venv(clone, tmp_path):
    folder, out = clone
    assert quickstart_table(out, _table().splitlines()[0]) == _table()
    # away from the clone, ibdb and its mapped folders are the clone's (the editable install)
    code = ("import ibdb, ibdb.runners.gp, ibdb.schemas, ibdb.queries; print(ibdb.__file__); "
            "print(ibdb.runners.gp.__file__)")
    where = _venv(clone, "python", "-c", code, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    package, runner = (Path(p) for p in where.stdout.splitlines())
    assert package == folder / "ibdb" / "__init__.py" and runner == folder / "runners" / "gp.py"
    away = _venv(clone, "ibdb", "quickstart", cwd=tmp_path, timeout=600)
    assert away.returncode == 0, away.stderr
    assert "wrote examples/quickstart.yaml" in away.stdout  # the spec bundled in the package
    assert quickstart_table(away.stdout, _table().splitlines()[0]) == _table()


@pytest.mark.slow
def test_the_wheel_carries_the_mapped_folders_and_runs_the_quickstart(clone, tmp_path):
    """`pip install .`'s wheel, built from the clone: every stage package, runners/, schemas/,
    queries/ and the bundled spec inside ibdb/; unpacked alone on the path (no clone in sight),
    it runs the quickstart to the README's table."""
    folder, _ = clone
    built = _venv(clone, "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                  str(tmp_path / "dist"), str(folder), cwd=tmp_path, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("ibdb-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    stages = ("core", "stats", "spec", "data", "run", "store", "estimate", "report", "cli")
    for needed in ("ibdb/runners/gp.py", "ibdb/schemas/001_core.sql",
                   "ibdb/schemas/experiment.schema.json", "ibdb/queries/run_summary.sql",
                   "ibdb/queries/checks/incomplete_runs.sql", "ibdb/examples/quickstart.yaml",
                   *(f"ibdb/{stage}/__init__.py" for stage in stages)):
        assert needed in names, needed
    assert not any(n.startswith(("runners/", "schemas/", "queries/")) for n in names)
    work = tmp_path / "work"
    work.mkdir()
    env = {"PYTHONPATH": str(tmp_path / "site")}
    code = ("import ibdb.runners, sys; assert ibdb.runners.__file__.startswith(sys.argv[1]); "
            "from ibdb.cli import main; main(['quickstart'])")
    run = _venv(clone, "python", "-c", code, str(tmp_path / "site"), cwd=work, timeout=600,
                env=env)
    assert run.returncode == 0, run.stderr
    assert quickstart_table(run.stdout, _table().splitlines()[0]) == _table()


def _notebook_check(block: str) -> str:
    """The README's notebook block, then assertions on what it made."""
    ncx2_at_05 = [r.split()[2] for r in _table().splitlines()[3:] if r.split()[0] == "0.5"][0]
    return block + (
        "\nassert len(runs) == 1 and losses.num_rows == 4000 and len(curve) == 24"
        "\nassert prov.num_rows == 1 and again.num_rows == 1"
        "\nbits = again.column('bits')[0].as_py()"
        "\nassert fit['bits'][0] == bits"
        f"\nassert f'{{bits:.3g}}' == {ncx2_at_05!r}, bits  # the README table's ncx2 at 0.5\n")


@pytest.mark.slow
def test_readme_notebook_block_runs_in_the_fresh_venv(clone, tmp_path):
    """The block as written, where the store is `ibdb.duckdb` (a copy of the one the install
    block's quickstart made, in a folder of its own), and the README's script line."""
    folder, _ = clone
    shutil.copy(folder / "ibdb.duckdb", tmp_path / "ibdb.duckdb")
    block = _block("python", "from ibdb import Ibdb")
    result = _venv(clone, "python", "-c", _notebook_check(block), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    script = _venv(clone, "python", "examples/notebook_example.py", str(tmp_path / "ibdb.duckdb"),
                   cwd=folder)
    assert script.returncode == 0, script.stderr
    assert "4000 losses; mean test MSE" in script.stdout


@pytest.mark.slow
def test_readme_notebook_block_runs_in_the_clone_root(clone):
    """Where the README leaves a user: a notebook (here `python -c`) started in the clone,
    beside the ibdb.duckdb the quickstart made, so that the clone's root is on sys.path."""
    folder, _ = clone
    work = folder.parent / "root-copy"  # a copy, so the block's recompute leaves the clone be
    shutil.copytree(folder, work, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    block = _block("python", "from ibdb import Ibdb")
    result = _venv(clone, "python", "-c", _notebook_check(block), cwd=work)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_ibdb_report_works_after_the_readme_install(clone, tmp_path):
    folder, _ = clone
    for name in ("ibdb.duckdb", "ibdb.shards"):
        (shutil.copytree if (folder / name).is_dir() else shutil.copy)(folder / name,
                                                                       tmp_path / name)
    result = _venv(clone, "ibdb", "report", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = tmp_path / "report"
    markdown = (report / "report.md").read_text(encoding="utf-8")
    figures = sorted(report.glob("*.png"))
    assert len(figures) >= 2  # the loss histogram and IB against eps
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert figure.name in markdown
    exact_at_06 = [r.split()[1] for r in _table().splitlines()[3:] if r.split()[0] == "0.6"][0]
    assert re.search(rf"^\| 0\.6 \| {re.escape(exact_at_06)} \|", markdown, re.M)
