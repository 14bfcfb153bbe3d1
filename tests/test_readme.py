"""Every fenced block of README.md is run or checked by a test (issue 14), so the README cannot
drift again.

How each block is covered is written down in CLAIMS below; test_every_readme_block_is_claimed
fails when a block appears that no claim matches, or a claim names a block or test that is gone.

- The install block (`python3 -m venv .venv && ... && ibdb quickstart`): its last command is what
  the `quickstart` fixture here runs, as written; the whole line (fresh venv, `pip install` from a
  copy of the source tree) runs in the slow tests/test_packaging.py, not twice.
- The ```text block: compared, character for character, with what that quickstart printed.
- The test-suite block (`pip install ... -e ".[test]" && pytest`): it is the command that made the
  environment this suite runs in, so it is not run from inside it (that would recurse); its
  extras, pytest's default deselection of the slow tests and .ci/run are checked against the
  README's words instead.
- The tour block: each line runs through bash, as written, in a fresh copy of the directory the
  quickstart left (its store, shards and spec), with the documented placeholders replaced (see
  PLACEHOLDERS); its handler checks what the line's comment says. Ray runs a local cluster (slow);
  Slurm cannot run here, so its line is checked to stop with a message naming Slurm.
- The SQL block: each statement runs through `ibdb sql` against a copy of the quickstart's store
  (a gp run) and must equal the value `ibdb estimate` stored, also after some hypotheses are
  marked as not fitting the training data.
- The Python block: tests/store/test_notebook_api.py runs it as written (and the example
  script), and tests/test_packaging.py runs it in the fresh venv against the quickstart's store.
- The YAML block (a budget's `splitting` block): validated inside a spec by `ibdb validate`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from conftest import (
    make_npz,
    quickstart_table,
    readme_block,
    readme_blocks,
    spec_dict,
    write_spec,
)

ROOT = Path(__file__).resolve().parents[1]

VENV = 'python3 -m venv .venv && . .venv/bin/activate && pip install "torch==2.13.0"'
INSTALL = ("bash", f"{VENV} -e . ")
TESTS = ("bash", f'{VENV} -e ".[test]"')
TOUR = ("bash", "ibdb validate examples/quickstart.yaml")
OUTPUT = ("text", "run ")
SQL = ("sql", "-- the paper's fit")
PYTHON = ("python", "from ibdb import Ibdb")
SPLITTING = ("yaml", "budgets:")
TORCH = ("yaml", "spaces:")

# (language, first line's start) -> the tests that run or check that block. A new README block
# needs an entry here and a test that runs it (or checks it, saying why it cannot run).
CLAIMS = {
    INSTALL: ["tests/test_readme.py::quickstart",
              "tests/test_packaging.py::test_readme_install_block_makes_a_working_venv"],
    OUTPUT: ["tests/test_readme.py::test_quickstart_prints_the_readme_table"],
    TESTS: ["tests/test_readme.py::test_test_block_matches_pyproject_and_ci"],
    TOUR: ["tests/test_readme.py::test_tour_line",
           "tests/test_readme.py::test_executor_lines_options_and_extras"],
    SQL: ["tests/test_readme.py::test_sql_block_equals_ibdb_estimate"],
    PYTHON: ["tests/store/test_notebook_api.py::test_readme_notebook_section_runs",
             "tests/test_packaging.py::test_readme_notebook_block_runs_in_the_fresh_venv"],
    SPLITTING: ["tests/test_readme.py::test_splitting_block_is_a_valid_budget"],
    TORCH: ["tests/test_readme.py::test_torch_block_runs_a_users_model"],
}

# The tour's placeholders and what a test puts in their place.
PLACEHOLDERS = [
    (r"\bSPEC\b", "spec.yaml"),  # a small spec the test writes: 200 gp hypotheses, 40 points
    (r"/shared\b", "shared"),  # a folder in the working directory (/ is not writable)
    (r" \[--ray-address HOST:PORT\]", ""),  # optional; without it Ray starts a local cluster
]


def claimed_by(block) -> tuple[str, str] | None:
    found = [key for key in CLAIMS if block.lang == key[0] and block.key[1].startswith(key[1])]
    assert len(found) <= 1, f"{block} matches several CLAIMS: {found}"
    return found[0] if found else None


def the_block(key: tuple[str, str]):
    found = [b for b in readme_blocks() if claimed_by(b) == key]
    assert len(found) == 1, f"README.md has {len(found)} ```{key[0]} blocks starting {key[1]!r}"
    return found[0]


def tour_lines() -> list[str]:
    return [t for t in the_block(TOUR).text.splitlines() if t.strip()]


def command_of(line: str) -> str:
    """A tour line without its trailing comment."""
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def env() -> dict[str, str]:
    """This interpreter's `ibdb` first on PATH, no store or shard folder from the caller's
    environment, and no GPU: the README's numbers are the CPU's ("CPU only is fine")."""
    out = {k: v for k, v in os.environ.items() if k not in ("IBDB_DB", "IBDB_SHARDS")}
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out["CUDA_VISIBLE_DEVICES"] = ""
    return out


def sh(command: str, cwd: Path, *, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def ok(command: str, cwd: Path, **kwargs) -> str:
    result = sh(command, cwd, **kwargs)
    assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n" \
                                   f"{result.stdout}\n{result.stderr}"
    return result.stdout


def sql(cwd: Path, query: str) -> list[dict]:
    con = duckdb.connect(str(cwd / "ibdb.duckdb"), read_only=True)
    try:
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def count(cwd: Path, table: str, where: str = "") -> int:
    return sql(cwd, f"SELECT count(*) AS n FROM {table} {where}")[0]["n"]


def toy_spec(folder: Path) -> Path:
    make_npz(folder / "toy.npz")
    return write_spec(folder, spec_dict())


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The install block's last command (`ibdb quickstart`), run as written in an empty folder:
    (folder, stdout, seconds)."""
    folder = tmp_path_factory.mktemp("quickstart")
    command = the_block(INSTALL).text.strip().split(" && ")[-1]
    assert command == "ibdb quickstart"
    start = time.perf_counter()
    out = ok(command, folder)
    return folder, out, time.perf_counter() - start


@pytest.fixture
def work(quickstart, tmp_path) -> Path:
    """A fresh copy of the folder the quickstart left: ibdb.duckdb, ibdb.shards/, examples/."""
    folder = tmp_path / "work"
    shutil.copytree(quickstart[0], folder)
    return folder


# --- every block is claimed ------------------------------------------------------------------

def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def claim_problems(blocks) -> list[str]:
    """What keeps ``blocks`` (a README's) from being covered: blocks no claim matches, claims
    that match no block (or several) or name a test that is gone, tour lines without a handler."""
    out = [f"{b}: no test covers this README block. Add a test to tests/test_readme.py that runs "
           "it as written (or, where it needs what the test machine lacks, checks it and says "
           "why) and an entry in CLAIMS: (language, start of the first line) -> the tests."
           for b in blocks if claimed_by(b) is None]
    for key, tests in CLAIMS.items():
        if sum(claimed_by(b) == key for b in blocks) != 1:
            out.append(f"CLAIMS entry {key} matches no README block (or several): update it")
        for test in tests:
            path, name = test.split("::")
            if name not in _test_names(ROOT / path):
                out.append(f"{test}, claimed for {key}, does not exist")
    for block in blocks:
        if claimed_by(block) == TOUR:
            out += [f"README tour line {line!r} has no handler in TOUR_HANDLERS "
                    "(tests/test_readme.py): add one that runs the line in a copy of the "
                    "quickstart's folder and checks what its comment says."
                    for line in block.text.splitlines()
                    if line.strip() and command_of(line) not in TOUR_HANDLERS]
    return out


def test_every_readme_block_is_claimed():
    problems = claim_problems(readme_blocks())
    assert not problems, "\n".join(problems)


def test_the_claim_check_catches_a_new_block_and_a_new_tour_line(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = the_block(TOUR).key[1]
    text = text.replace(first, f"{first}\nibdb frobnicate --all   # new", 1)
    text += "\n```bash\nibdb frobnicate\n```\n"
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    problems = claim_problems(readme_blocks(tmp_path / "README.md"))
    assert len(problems) == 2
    assert "'ibdb frobnicate'" in problems[0] and "no test covers" in problems[0]
    assert "'ibdb frobnicate --all   # new'" in problems[1] and "no handler" in problems[1]


def test_block_parser_sees_every_fence():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    fences = [line for line in text.splitlines() if line.startswith("```")]
    assert len(fences) == 2 * len(readme_blocks())
    assert all(b.lang for b in readme_blocks()), "a README block without a language"
    assert readme_block("text", the_block(OUTPUT).key[1]).line == the_block(OUTPUT).line


# --- the quickstart and its output -----------------------------------------------------------

def test_quickstart_prints_the_readme_table(quickstart):
    _, out, seconds = quickstart
    block = the_block(OUTPUT).text
    assert quickstart_table(out, block.splitlines()[0]) == block
    assert seconds < 60, f"the quickstart took {seconds:.1f} s; the README says well under a minute"


def test_quickstart_prose_matches_its_table():
    """The paragraphs around the ```text block quote its numbers."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {r.split()[0]: r.split() for r in the_block(OUTPUT).text.splitlines()[3:]}
    header = the_block(OUTPUT).text.splitlines()[0]
    assert f"2^-{rows['0.6'][1]}, so {rows['0.6'][1]} bits" in text
    n = int(re.search(r"\((\d+) hypotheses;", header).group(1))
    assert f"samples {n} hypotheses" in text and f"from the {n} samples" in text
    mean, spread = re.search(r"posterior mean's ([\d.]+) \+ spread ([\d.]+)\)", header).groups()
    assert f"posterior mean's ({mean}:" in text and f"spread around it ({spread})" in text
    lower = {r[r.index(">=") + 1] for r in rows.values() if ">=" in r}
    assert len(lower) == 1 and 9.5 < float(lower.pop()) < 11  # "more than about 10 bits"
    assert all(1e10 < float(r[-1]) < 3e10 for r in rows.values())  # "some 2e10 bits"
    assert f"{len(rows)} target test-MSE values" in text.replace("six target", "6 target")


# --- the test-suite block --------------------------------------------------------------------

def test_test_block_matches_pyproject_and_ci():
    import tomllib

    block = the_block(TESTS).text.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = project["project"]["optional-dependencies"]
    (extra,) = re.findall(r'-e "\.\[(\w+)\]"', block)
    assert extra == "test" and any(d.startswith("pytest") for d in extras["test"])
    assert block.endswith("&& pytest")
    # "Add `-m "slow or not slow"` to include the slow tests": plain pytest leaves them out
    options = project["tool"]["pytest"]["ini_options"]
    assert '-m "not slow"' in options["addopts"] and options["testpaths"] == ["tests"]
    assert {"ray", "slurm"} <= set(extras)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[test,ray,slurm]"' in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '"torch==2.13.0" -e ".[test,ray,slurm]"' in ci  # "the same tests ... with the extras"
    assert 'pytest -m "slow or not slow"' in ci  # "... and the slow tests"


# --- the tour, line by line ------------------------------------------------------------------

RUN_ID = "888bc2a983520963"


def _validate(work: Path, line: str) -> None:
    out = ok(line, work)
    assert "examples/quickstart.yaml: valid; experiment 'quickstart' has 1 run(s)" in out
    assert RUN_ID in out  # "lists run ids"


def _plan(work: Path, line: str) -> None:
    assert "0 of 1 run(s) to sample." in ok(line, work)  # "nothing if stored"
    fresh = work / "fresh"
    shutil.copytree(work / "examples", fresh / "examples")
    out = ok(line, fresh)
    assert "4000 of 4000 hypotheses to sample" in out and "1 of 1 run(s) to sample." in out
    assert not (fresh / "ibdb.duckdb").exists()


def _run(work: Path, line: str) -> None:
    shards = sorted((work / "ibdb.shards").rglob("*"))
    out = ok(line, work)
    assert "0 sampled, 1 already stored" in out
    block = the_block(OUTPUT).text
    assert quickstart_table(out, block.splitlines()[0]) == block
    assert sorted((work / "ibdb.shards").rglob("*")) == shards


def _estimate(work: Path, line: str) -> None:
    shards = sorted((work / "ibdb.shards").rglob("*"))
    out = ok(line, work)
    rows = sql(work, "SELECT method, bits, n FROM ib_estimates WHERE eps = 0.57")
    assert [(r["method"], r["n"]) for r in rows] == [("ncx2", 4000)]
    assert re.search(rf"^\s+0\.57\s+-\s+{rows[0]['bits']:.3g} \[", out, re.M), out
    # "no resampling": the same shards and losses
    assert sorted((work / "ibdb.shards").rglob("*")) == shards
    assert count(work, "losses") == 4000


def _sql_select(work: Path, line: str) -> None:
    out = ok(line, work)
    n = count(work, "ib_estimates")
    lines = out.rstrip().splitlines()  # header, rule, one line per row, "(n rows...)"
    assert n == 24 and len(lines) == n + 3 and lines[-1].startswith(f"({n} rows")
    assert RUN_ID in out and "ncx2" in out and "exact" in out


def _sql_delete(work: Path, line: str) -> None:
    before = count(work, "estimates")
    assert before > 0
    refused = sh(line.replace(" --write", ""), work)  # "writes need --write"
    assert refused.returncode == 2 and "pass --write" in refused.stdout + refused.stderr
    assert count(work, "estimates") == before
    ok(line, work)
    assert count(work, "estimates") == 0


def _export(work: Path, line: str) -> None:
    ok(line, work)
    want = sql(work, "SELECT * FROM ib_estimates")
    con = duckdb.connect()
    try:
        cursor = con.execute("SELECT * FROM read_parquet(?)", [str(work / "ib.parquet")])
        names = [d[0] for d in cursor.description]
        got = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    assert got == want and len(got) == 24


def _ingest(work: Path, line: str) -> None:
    (work / "ibdb.duckdb").unlink()  # shards written elsewhere, no store yet
    out = ok(line, work)
    assert "ingested 4000 hypotheses from 5 shard file(s)" in out
    assert count(work, "losses") == 4000 and count(work, "runs") == 1


def _no_ingest(work: Path, line: str) -> None:
    toy_spec(work)
    out = ok(line, work)
    assert "load them with `ibdb ingest shared`" in out
    assert len(list((work / "shared").rglob("*.parquet"))) >= 1
    assert count(work, "runs") == 1  # the quickstart's only: nothing ingested
    ok("ibdb ingest shared/", work)
    assert count(work, "runs") == 2 and count(work, "losses") == 4200


def _ray(work: Path, line: str) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed (ibdb[ray])")
    toy_spec(work)
    out = ok(line, work, timeout=600)
    assert count(work, "runs") == 2 and count(work, "losses") == 4200
    assert "exact (bits)" in out


def _slurm(work: Path, line: str) -> None:
    pytest.importorskip("submitit", reason="the slurm extra is not installed (ibdb[slurm])")
    if shutil.which("sbatch") or shutil.which("srun"):
        pytest.skip("a Slurm cluster is reachable from here; the suite does not submit jobs "
                    "(tests/run/test_executors.py runs the executor through submitit's local mode)")
    toy_spec(work)
    result = sh(line, work)
    # without a Slurm cluster: an expected failure (exit 2) that names Slurm, nothing stored
    assert result.returncode == 2, result.stdout + result.stderr
    assert "slurm" in (result.stdout + result.stderr).lower()
    assert "1 failed" in result.stdout and "already stored" in result.stdout
    assert count(work, "runs") == 1


def _report(work: Path, line: str) -> None:
    ok(line, work)
    markdown = (work / "report" / "report.md").read_text(encoding="utf-8")
    figures = sorted(p.name for p in (work / "report").glob("*.png"))
    assert figures and RUN_ID in markdown
    for name in re.findall(r"\(([^()\s]+\.png)\)", markdown):
        assert (work / "report" / name).is_file(), name


def _check(work: Path, line: str) -> None:
    out = ok(line, work)
    assert re.search(r"^0 of \d+ check\(s\) found problems", out, re.M), out
    ok('ibdb sql "DELETE FROM losses WHERE hypothesis_id >= 3990" --write', work)
    found = sh(line, work)  # and it does find something: a run short of its budget
    assert found.returncode == 1 and re.search(r"^[1-9]\d* of \d+ check\(s\) found problems",
                                                found.stdout, re.M), found.stdout


def _init(work: Path, line: str) -> None:
    empty = work / "empty"
    empty.mkdir()
    ok(line, empty)
    assert count(empty, "runs") == 0
    tables = {r["t"] for r in sql(empty, "SELECT table_name AS t FROM information_schema.tables")}
    assert {"runs", "losses", "estimates", "ib_estimates"} <= tables


def _schema(work: Path, line: str) -> None:
    empty = work / "empty"
    empty.mkdir()
    ok(line, empty)
    written = json.loads((empty / "schemas" / "experiment.schema.json").read_text())
    assert written == json.loads((ROOT / "schemas" / "experiment.schema.json").read_text())


TOUR_HANDLERS = {
    "ibdb validate examples/quickstart.yaml": _validate,
    "ibdb plan examples/quickstart.yaml": _plan,
    "ibdb run examples/quickstart.yaml": _run,
    "ibdb estimate --method ncx2 --eps 0.57": _estimate,
    'ibdb sql "SELECT * FROM ib_estimates"': _sql_select,
    'ibdb sql "DELETE FROM estimates" --write': _sql_delete,
    "ibdb export ib_estimates --out ib.parquet": _export,
    "ibdb ingest ibdb.shards/": _ingest,
    "ibdb --shards /shared run SPEC --no-ingest": _no_ingest,
    "ibdb run SPEC --executor ray [--ray-address HOST:PORT]": _ray,
    "ibdb run SPEC --executor slurm": _slurm,
    "ibdb report --out report/": _report,
    "ibdb check": _check,
    "ibdb init": _init,
    "ibdb schema": _schema,
}
SLOW = {"ibdb run SPEC --executor ray [--ray-address HOST:PORT]": "starts a local Ray cluster"}


def _tour_params():
    params = []
    for line in tour_lines():
        command = command_of(line)
        marks = [pytest.mark.slow] if command in SLOW else []
        params.append(pytest.param(line, marks=marks, id=command))
    return params


@pytest.mark.parametrize("line", _tour_params())
def test_tour_line(work, line):
    command = command_of(line)
    handler = TOUR_HANDLERS.get(command)
    assert handler, f"no handler for the README tour line {line!r} (see TOUR_HANDLERS)"
    for pattern, real in PLACEHOLDERS:
        command = re.sub(pattern, real, command)
    assert not re.search(r"\bSPEC\b|HOST|\[", command), f"placeholder left in {command!r}"
    handler(work, command)


def test_executor_lines_options_and_extras(tmp_path):
    """The Ray and Slurm lines' options exist and name their extras (what can be checked
    without a cluster; the lines themselves run in test_tour_line)."""
    out = ok("ibdb run --help", tmp_path)
    assert "--executor [local|ray|slurm]" in out and "--ray-address" in out
    assert "ibdb[ray]" in out and "ibdb[slurm]" in out
    lines = {command_of(t) for t in tour_lines()}
    assert "ibdb run SPEC --executor ray [--ray-address HOST:PORT]" in lines


# --- the SQL block ---------------------------------------------------------------------------

def _statements(text: str) -> list[str]:
    code = "\n".join(t for t in text.splitlines() if not t.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]


def _bits(work: Path, query: str) -> dict[str, float]:
    out = ok(f"ibdb sql {shlex.quote(query)} --format json", work)
    return {r["run_id"]: r["bits"] for r in json.loads(out)}


def _stored(work: Path, method: str) -> dict[str, float]:
    rows = sql(work, f"SELECT run_id, bits FROM ib_estimates WHERE method = '{method}' "
                     "AND eps = 0.6 AND loss = 'test_mse'")
    return {r["run_id"]: r["bits"] for r in rows}


def test_sql_block_equals_ibdb_estimate(work):
    """"These call the same code as `ibdb estimate`, so they return the same numbers"."""
    fit, exact = _statements(the_block(SQL).text)
    assert "ib_fit(" in fit and "ib_exact(" in exact
    assert _bits(work, fit) == pytest.approx(_stored(work, "ncx2"), rel=1e-12)
    assert _bits(work, exact) == pytest.approx(_stored(work, "exact"), rel=1e-12)
    assert len(_stored(work, "exact")) == 1
    # with hypotheses that miss the fit criterion (as network runs have), the fit still equals
    # what `ibdb estimate` stores, and only because the query keeps the fitted ones
    ok('ibdb sql "UPDATE losses SET fitted = (hypothesis_id >= 400)" --write', work)
    ok("ibdb estimate --method ncx2 --eps 0.6", work)
    stored = _stored(work, "ncx2")
    assert _bits(work, fit) == pytest.approx(stored, rel=1e-12)
    unfiltered = _bits(work, fit.replace("WHERE fitted IS NOT FALSE ", ""))
    assert unfiltered[RUN_ID] != pytest.approx(stored[RUN_ID], rel=1e-6)


def test_sql_section_names_what_the_store_has(work):
    """The prose before the SQL block lists the store's tables, views and the functions' STRUCT."""
    from ibdb.store.functions import ESTIMATE_STRUCT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### SQL over the store", 1)[1].split("```sql", 1)[0]
    fields = re.findall(r"`(\w+)`", section.split("STRUCT of", 1)[1].split("as a row", 1)[0])
    assert fields == list(ESTIMATE_STRUCT)
    flat = re.sub(r"\([^()]*\)", "", section)  # drop the parenthesised notes
    tables = re.findall(r"`(\w+)`", flat.split("Tables:", 1)[1].split("Views", 1)[0])
    views = re.findall(r"`(\w+)`", flat.split("Views", 1)[1].split("Functions", 1)[0])
    assert sorted(views) == sorted(p.stem for p in (ROOT / "queries").glob("*.sql"))
    stored = sql(work, "SELECT DISTINCT table_name AS t, table_type AS k "
                       "FROM information_schema.tables")
    assert sorted(tables) == sorted(r["t"] for r in stored
                                    if r["k"] == "BASE TABLE" and r["t"] != "ibdb_meta")
    assert set(views) == {r["t"] for r in stored if r["k"] == "VIEW"}


# --- the YAML block --------------------------------------------------------------------------

def test_splitting_block_is_a_valid_budget(tmp_path):
    budgets = yaml.safe_load(the_block(SPLITTING).text)["budgets"]
    assert budgets[0]["splitting"]["target_bits"] == 40
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict()
    spec["budgets"] = budgets
    write_spec(tmp_path, spec)
    assert "valid; experiment 'tiny' has 1 run(s)" in ok("ibdb validate spec.yaml", tmp_path)
    spec["budgets"][0]["splitting"]["p0"] = 1.5  # and a wrong one is refused
    write_spec(tmp_path, spec)
    assert sh("ibdb validate spec.yaml", tmp_path).returncode == 2


USER_MODEL = """
from torch import nn


def make(width, n_outputs):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(),
                         nn.Linear(width, n_outputs))
"""


def test_torch_block_runs_a_users_model(tmp_path):
    """The block's space, with the mymodels.py its comment describes, in a folder of its own
    on PYTHONPATH, runs on a small digits task."""
    spaces = yaml.safe_load(the_block(TORCH).text)["spaces"]
    code = tmp_path / "code"
    code.mkdir()
    (code / "mymodels.py").write_text(USER_MODEL)
    spec = {"name": "mine", "tasks": [{"name": "digits-50", "source": {"kind": "digits"},
                                       "n_train": 50, "n_test": 100, "eps": [0.1]}],
            "spaces": spaces, "budgets": [{"name": "b", "n_hypotheses": 8, "seed": 0}]}
    write_spec(tmp_path, spec)
    out = ok(f"PYTHONPATH={shlex.quote(str(code))} ibdb --device cpu run spec.yaml", tmp_path)
    assert "mine/digits-50/my-net" in out
    rows = sql(tmp_path, "select count(*) as n, min(test_mse) as low from losses")
    assert rows[0]["n"] == 8 and 0 < rows[0]["low"] < 1
