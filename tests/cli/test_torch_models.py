"""A researcher's own model, in a file outside the repository on PYTHONPATH, through the CLI as
a user runs it: i.i.d. losses, splitting, estimates, report; run ids; bad factories."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

MODEL_FILE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width, n_outputs):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.Tanh())
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.head(self.body(x))


def make(width=8, n_outputs=10):
    return Net(width, n_outputs)


def raises(**kw):
    raise RuntimeError("no GPU budget for this model")


def not_a_module(**kw):
    return {"layers": 3}


def wrong_outputs(**kw):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(7))


class Rounded(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.reshape(len(x), -1)).round().long()


def integer_outputs(**kw):
    return Rounded()


def no_parameters(**kw):
    return nn.Sequential(nn.Flatten(), nn.AdaptiveAvgPool1d(10))  # (N, 64) -> (N, 10)


def frozen(**kw):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    net[1].weight.requires_grad_(False)
    return net
'''

SPEC = """
name: mine
tasks:
  - name: digits-80
    source: {kind: digits}
    n_train: 80
    n_test: 100
    eps: [0.08, 0.06]
spaces:
  - name: LABEL
    kind: torch
    model: "MODEL"
    model_args: ARGS
    optimizer: {kind: adam, lr: 0.02, epochs: 3, batch_size: 40}
    fit: {criterion: train_mse, train_mse_max: 0.5}
budgets:
  - name: b
    n_hypotheses: 40
    chunk_size: 20
    seed: 0
    SPLITTING
"""


def _write(folder: Path, *, model: str = "usermodels:make", args: str = "{width: 8}",
           label: str = "my-net", splitting: str = "") -> Path:
    spec = folder / "spec.yaml"
    text = (SPEC.replace("MODEL", model).replace("ARGS", args).replace("LABEL", label)
            .replace("SPLITTING", splitting))
    spec.write_text(text)
    return spec


@pytest.fixture
def user(tmp_path):
    """A user's folder (spec, store) and a separate folder holding their model's file."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "usermodels.py").write_text(textwrap.dedent(MODEL_FILE))
    work = tmp_path / "work"
    work.mkdir()
    return work, code


def _ibdb(work: Path, code: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(code)}
    main = "import sys; from ibdb.cli import main; sys.argv[0] = 'ibdb'; main()"
    return subprocess.run([sys.executable, "-c", main, "--device", "cpu", *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)


def _run_ids(work: Path, code: Path, spec: Path) -> list[str]:
    out = _ibdb(work, code, "plan", str(spec))
    assert out.returncode == 0, out.stderr
    return re.findall(r"^\s+([0-9a-f]{16})\s", out.stdout, flags=re.M)


def test_a_users_model_runs_end_to_end(user):
    work, code = user
    spec = _write(work, splitting="splitting: {particles: 30, p0: 0.2, target_bits: 6, "
                                  "repeats: 2}")
    out = _ibdb(work, code, "run", str(spec))
    assert out.returncode == 0, out.stderr
    with duckdb.connect(str(work / "ibdb.duckdb"), read_only=True) as con:
        n, fitted = con.execute("select count(*), count(*) filter (where fitted) "
                                "from losses").fetchone()
        info = json.loads(con.execute("select runner_info from runs").fetchone()[0])
        levels = con.execute("select count(*) from splitting_levels").fetchone()[0]
        methods = {r[0] for r in
                   con.execute("select distinct method from ib_estimates").fetchall()}
    assert n == 40 and 0 < fitted <= 40
    assert info["model"] == "usermodels:make" and info["training"] == "vmap"
    assert levels >= 2  # both repeats' first levels at least
    assert "splitting" in methods and "empirical" in methods
    report = _ibdb(work, code, "report", "--out", str(work / "report"))
    assert report.returncode == 0, report.stderr
    assert "my-net" in (work / "report" / "report.md").read_text()


def test_run_ids_follow_the_model_not_the_label(user):
    work, code = user
    base = _run_ids(work, code, _write(work))
    assert len(base) == 1
    assert _run_ids(work, code, _write(work, label="renamed")) == base
    assert _run_ids(work, code, _write(work, args="{width: 9}")) != base
    source = code / "usermodels.py"
    source.write_text(source.read_text().replace("nn.Tanh()", "nn.ReLU()"))
    changed = _run_ids(work, code, _write(work))
    assert changed != base
    # an unrelated function in the same file is not part of the model
    source.write_text(source.read_text() + "\n\ndef helper():\n    return 1\n")
    assert _run_ids(work, code, _write(work)) == changed


BAD = [
    ("nowhere.models:make", "{}", r"no module 'nowhere' on the Python path"),
    ("usermodels:missing", "{}", r"'usermodels' has no attribute 'missing'.*make"),
    ("usermodels:raises", "{}", r"factory raised RuntimeError: no GPU budget"),
    ("usermodels:not_a_module", "{}", r"returned a dict, not a torch.nn.Module"),
    ("usermodels:wrong_outputs", "{}", r"returned \(2, 7\) for a batch of shape \(2, 1, 8, 8\).*"
                                       r"\(N, k\) = \(2, 10\)"),
    ("usermodels:integer_outputs", "{}", r"returned torch.int64 outputs.*floating-point"),
    ("usermodels:no_parameters", "{}", r"has no parameters"),
    ("usermodels:frozen", "{}", r"parameters 1.weight have requires_grad False.*buffer"),
    ("usermodels:make", "{width: .nan}", r"model_args of 'usermodels:make' must be JSON"),
    ("usermodels:make; import os", "{}", r"is not 'package.module:factory'"),
]

# Every bad case through the CLI (click's runner) in one Python process with the user's folder
# on sys.path: one torch start-up for all of them instead of one each.
RUN_CASES = """
import json, sys
from click.testing import CliRunner
from ibdb.cli import main
out = []
for spec, db in json.loads(sys.argv[1]):
    result = CliRunner().invoke(main, ["--db", db, "--device", "cpu", "run", spec])
    out.append([result.exit_code, result.output])
print(json.dumps(out))
"""


def test_bad_factories_exit_2_and_store_nothing(user):
    work, code = user
    jobs = []
    for i, (model, args, _) in enumerate(BAD):
        folder = work / f"case{i}"
        folder.mkdir()
        jobs.append([str(_write(folder, model=model, args=args)), str(folder / "ibdb.duckdb")])
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", RUN_CASES, json.dumps(jobs)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for (model, _, message), (exit_code, output), (_, db) in zip(
            BAD, json.loads(done.stdout.splitlines()[-1]), jobs, strict=True):
        assert exit_code == 2, (model, output)
        assert re.search(message, " ".join(output.split())), (model, output)
        assert "Traceback" not in output
        assert not Path(db).exists()
        shards = Path(db).parent / "ibdb.shards"
        assert not shards.exists() or not any(shards.glob("*/*"))
