"""The built wheel carries runners/, schemas/ and queries/ and runs the quickstart from a fresh
virtual environment (not editable), away from the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_quickstart(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = dist.glob("ibdb-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("ibdb/runners/gp.py", "ibdb/schemas/001_core.sql",
                   "ibdb/schemas/experiment.schema.json", "ibdb/queries/run_summary.sql",
                   "ibdb/examples/quickstart.yaml"):
        assert needed in names, needed

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([str(venv / "bin" / "ibdb"), "--device", "cpu", "quickstart"],
                            cwd=work, capture_output=True, text=True, check=True)
    assert "wrote examples/quickstart.yaml" in result.stdout
    assert "exact (bits)" in result.stdout and "ncx2 (bits)" in result.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import ibdb.runners.gp as m; print(m.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed copy, not the source tree
