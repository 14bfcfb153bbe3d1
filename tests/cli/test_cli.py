"""The CLI as a user drives it: messages, exit codes, and numbers that survive recomputation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from ibdb.cli import main
from ibdb.store.database import Store

from conftest import make_npz, spec_dict, write_spec


def invoke(tmp_path, *args: str):
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "--shards",
                                       str(tmp_path / "shards"), "--device", "cpu", *args])
    return result


def test_help_is_true_and_does_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from ibdb.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'quickstart' in r.output and 'sql' in r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_validate_lists_runs(tmp_path, toy_spec):
    result = invoke(tmp_path, "validate", str(toy_spec))
    assert result.exit_code == 0, result.output
    assert "valid; experiment 'tiny' has 1 run(s)" in result.output
    assert "tiny/toy/gp/b" in result.output
    assert not (tmp_path / "cli.duckdb").exists()


BAD_INPUTS = [
    ("unknown field", lambda s: s["spaces"][0].update(colour=1), "spaces.0.colour: Extra inputs"),
    ("negative count", lambda s: s["budgets"][0].update(n_hypotheses=-1),
     "budgets.0.n_hypotheses: Input should be greater than 0 (got -1)"),
    ("too many points", lambda s: s["tasks"][0].update(n_train=45),
     "n_train = 45, but"),
    ("eps <= 0", lambda s: s["tasks"][0].update(eps=[-0.1]), "tasks.0.eps.0: Input should be "
                                                             "greater than 0 (got -0.1)"),
    ("missing npz", lambda s: s["tasks"][0]["source"].update(path="nope.npz"),
     "source.path"),
    ("npz without arrays", lambda s: s["tasks"][0]["source"].update(path="partial.npz"),
     "missing arrays X_test, y_test"),
]


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
@pytest.mark.parametrize(("case", "mutate", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_short_error_and_writes_nothing(tmp_path, command, case, mutate, message):
    make_npz(tmp_path / "toy.npz", n_test=30)
    np.savez(tmp_path / "partial.npz", X_train=np.zeros((40, 2)), y_train=np.zeros(40, int))
    spec = spec_dict()
    mutate(spec)
    path = write_spec(tmp_path, spec)
    result = invoke(tmp_path, command, str(path))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "cli.duckdb").exists()
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize("content", [None, "name: [unclosed\n"], ids=["missing", "malformed"])
def test_missing_or_malformed_spec_file(tmp_path, content):
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_text(content)
    result = invoke(tmp_path, "run", str(path))
    assert result.exit_code == 2
    assert "spec.yaml" in result.output and result.output.startswith("Error: ")
    assert not (tmp_path / "cli.duckdb").exists()


def _estimates(tmp_path) -> list[dict]:
    result = invoke(tmp_path, "sql", "SELECT run_id, method, eps, bits, lower_bits, upper_bits, "
                    "bound, n FROM estimates ORDER BY ALL", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_run_plan_estimate_and_recompute_without_resampling(tmp_path, toy_spec):
    result = invoke(tmp_path, "run", str(toy_spec))
    assert result.exit_code == 0, result.output
    assert "1 run(s): 1 sampled, 0 already stored" in result.output
    assert "ingested 200 hypotheses from 5 shard file(s)" in result.output
    for header in ("exact (bits)", "ncx2 (bits)", "empirical (bits)", "eps (test MSE)"):
        assert header in result.output
    first = _estimates(tmp_path)
    assert {r["method"] for r in first} == {"exact", "ncx2", "empirical", "bound"}
    assert len(first) == 12  # 4 default methods x 3 eps

    plan = invoke(tmp_path, "plan", str(toy_spec))
    assert "stored, nothing to do" in plan.output and "0 of 1 run(s) to sample" in plan.output
    again = invoke(tmp_path, "run", str(toy_spec))
    assert "0 sampled, 1 already stored" in again.output

    deleted = invoke(tmp_path, "sql", "DELETE FROM estimates", "--write")
    assert deleted.exit_code == 0, deleted.output
    assert _estimates(tmp_path) == []
    recomputed = invoke(tmp_path, "estimate")
    assert recomputed.exit_code == 0 and "stored 12 estimate(s)" in recomputed.output
    assert _estimates(tmp_path) == first


def test_sql_functions_reproduce_stored_estimates(tmp_path, toy_spec):
    assert invoke(tmp_path, "run", str(toy_spec)).exit_code == 0
    stored = {(r["method"], r["eps"]): r["bits"] for r in _estimates(tmp_path)}
    fit = invoke(tmp_path, "sql", """
        SELECT m.method, e.eps,
               ib_fit(list(l.test_mse ORDER BY l.hypothesis_id), e.eps, m.method).bits AS bits
        FROM losses l, (SELECT unnest([0.3, 0.2, 0.1]::DOUBLE[]) AS eps) e,
             (SELECT unnest(['ncx2', 'empirical']) AS method) m
        GROUP BY m.method, e.eps ORDER BY ALL""", "--format", "json")
    assert fit.exit_code == 0, fit.output
    exact = invoke(tmp_path, "sql", """
        SELECT 'exact' AS method, e.eps,
               ib_exact(list(c.eigenvalue ORDER BY c.component),
                        list(c.residual_sq ORDER BY c.component),
                        any_value(r.n_test), any_value(r.n_outputs), e.eps).bits AS bits
        FROM gp_components c JOIN runs r USING (run_id),
             (SELECT unnest([0.3, 0.2, 0.1]::DOUBLE[]) AS eps) e
        GROUP BY e.eps""", "--format", "json")
    assert exact.exit_code == 0, exact.output
    rows = json.loads(fit.output) + json.loads(exact.output)
    assert len(rows) == 9
    for row in rows:
        assert row["bits"] == stored[(row["method"], row["eps"])], row


def test_estimate_with_other_eps_and_method(tmp_path, toy_spec):
    assert invoke(tmp_path, "run", str(toy_spec), "--no-estimate").exit_code == 0
    assert _estimates(tmp_path) == []
    result = invoke(tmp_path, "estimate", "--method", "exact", "--eps", "0.25", "--eps", "0.15")
    assert result.exit_code == 0, result.output
    rows = _estimates(tmp_path)
    assert [(r["method"], r["eps"]) for r in rows] == [("exact", 0.15), ("exact", 0.25)]
    assert rows[0]["bits"] > rows[1]["bits"] > 0  # a smaller target error needs more bits


@pytest.mark.parametrize(("args", "message"), [
    (["estimate", "--method", "magic"], "Invalid value for '--method': 'magic' is not one of"),
    (["estimate", "--eps", "0"], "eps must be finite and > 0 (a target test MSE), got 0.0"),
    (["estimate", "--run", "deadbeef"], "run 'deadbeef' is not in"),
    (["sql", "SELECT * FROM nowhere"], "SQL error: Catalog Error"),
    (["sql", "DELETE FROM losses"], "SQL error"),
])
def test_estimate_and_sql_errors(tmp_path, toy_spec, args, message):
    assert invoke(tmp_path, "run", str(toy_spec), "--no-estimate").exit_code == 0
    result = invoke(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_sql_csv(tmp_path, toy_spec):
    assert invoke(tmp_path, "run", str(toy_spec), "--no-estimate").exit_code == 0
    result = invoke(tmp_path, "sql", "SELECT n_stored, complete FROM run_summary",
                    "--format", "csv")
    assert result.output == "n_stored,complete\n200,True\n"


def test_sql_runs_several_statements_and_writes_all_or_nothing(tmp_path, toy_spec):
    assert invoke(tmp_path, "run", str(toy_spec), "--no-estimate").exit_code == 0
    count = "SELECT count(*) AS n FROM losses"
    last = invoke(tmp_path, "sql", f"SELECT 1 AS a; {count}", "--format", "csv")
    assert last.exit_code == 0 and last.output == "n\n200\n"  # the last statement's rows
    # the first DELETE would succeed alone; the typo after it must undo it
    failed = invoke(tmp_path, "sql", "--write",
                    "DELETE FROM losses WHERE hypothesis_id < 50; SELECT * FROM nowhere")
    assert failed.exit_code == 2 and "Nothing was written" in failed.output
    assert invoke(tmp_path, "sql", count, "--format", "csv").output == "n\n200\n"
    for own in ("BEGIN; DELETE FROM losses; COMMIT", "DELETE FROM losses; COMMIT; SELEC 1",
                "DELETE FROM losses; COMMIT"):
        refused = invoke(tmp_path, "sql", "--write", own)
        assert refused.exit_code == 2, refused.output
        assert "SQL error" in refused.output
        assert invoke(tmp_path, "sql", count, "--format", "csv").output == "n\n200\n"
    done = invoke(tmp_path, "sql", "--write", "DELETE FROM losses WHERE hypothesis_id < 50; "
                  "DELETE FROM losses WHERE hypothesis_id >= 150")
    assert done.exit_code == 0, done.output
    assert invoke(tmp_path, "sql", count, "--format", "csv").output == "n\n100\n"


def test_sql_help_names_every_view_and_function(tmp_path):
    from ibdb.store.database import view_definitions

    text = " ".join(invoke(tmp_path, "sql", "--help").output.split())
    store = Store.open(tmp_path / "h.duckdb")
    functions = {r[0] for r in store.con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_name LIKE 'ib\\_%' "
        "ESCAPE '\\'").fetchall()}
    tables = {r[0] for r in store.con.execute("SELECT table_name FROM duckdb_tables() WHERE "
                                              "table_name <> 'ibdb_meta'").fetchall()}
    store.close()
    assert functions == {"ib_fit", "ib_exact", "ib_bound", "ib_splitting"}
    for name in [*(n for n, _ in view_definitions()), *functions, *tables]:
        assert name in text, name


def test_run_against_a_locked_store(tmp_path, toy_spec):
    db = tmp_path / "cli.duckdb"
    assert invoke(tmp_path, "init").exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(30)", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = invoke(tmp_path, "run", str(toy_spec))
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2
    assert f"the store is locked by process {holder.pid}" in result.output
    assert "Traceback" not in result.output


def test_quickstart_writes_its_spec_and_prints_all_methods(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--device", "cpu", "quickstart"])
    assert result.exit_code == 0, result.output
    assert "wrote examples/quickstart.yaml" in result.output
    assert (tmp_path / "ibdb.duckdb").exists()
    for header in ("exact (bits)", "ncx2 (bits)", "empirical (bits)"):
        assert header in result.output
    # the gp run's loss decomposition: expected test MSE = posterior mean's + spread
    note = result.output.split("expected test MSE ", 1)[1].split(")", 1)[0]
    total, parts = note.split(" = posterior mean's ")
    of_mean, spread = parts.split(" + spread ")
    assert float(total) == pytest.approx(float(of_mean) + float(spread), rel=2e-3)
    second = CliRunner().invoke(main, ["--device", "cpu", "quickstart"])
    assert "wrote" not in second.output and "0 sampled, 1 already stored" in second.output


def test_ibdb_db_environment_variable_names_the_store(tmp_path, toy_spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env_db = tmp_path / "from-env.duckdb"
    result = CliRunner().invoke(main, ["--device", "cpu", "run", str(toy_spec)],
                                env={"IBDB_DB": str(env_db)})
    assert result.exit_code == 0, result.output
    assert env_db.exists() and not (tmp_path / "ibdb.duckdb").exists()
    assert (tmp_path / "from-env.shards").is_dir()  # shards sit beside the store


def test_changed_losses_make_estimates_stale_until_recomputed(tmp_path, toy_spec):
    assert invoke(tmp_path, "run", str(toy_spec)).exit_code == 0
    stale = "SELECT method, count(*) AS n FROM stale_estimates GROUP BY method ORDER BY method"
    assert json.loads(invoke(tmp_path, "sql", stale, "--format", "json").output) == []
    changed = invoke(tmp_path, "sql", "UPDATE losses SET test_mse = test_mse * 1.001 "
                     "WHERE hypothesis_id = 7", "--write")
    assert changed.exit_code == 0, changed.output
    rows = json.loads(invoke(tmp_path, "sql", stale, "--format", "json").output)
    # sample-based estimates are stale; exact (from the spectrum) and bound are not
    assert rows == [{"method": "empirical", "n": 3}, {"method": "ncx2", "n": 3}]
    assert invoke(tmp_path, "estimate").exit_code == 0
    assert json.loads(invoke(tmp_path, "sql", stale, "--format", "json").output) == []


def test_method_agreement_and_the_other_methods(tmp_path, toy_spec):
    assert invoke(tmp_path, "run", str(toy_spec)).exit_code == 0
    paper = invoke(tmp_path, "estimate", "--method", "paper")
    assert paper.exit_code == 0, paper.output
    assert "paper (bits)" in paper.output
    rows = json.loads(invoke(tmp_path, "sql", "SELECT * FROM method_agreement ORDER BY eps",
                             "--format", "json").output)
    assert [r["eps"] for r in rows] == [0.1, 0.2, 0.3]
    for r in rows:
        assert r["ncx2_minus_exact"] == pytest.approx(r["ncx2_bits"] - r["exact_bits"])
        assert r["paper_bits"] is not None and r["bound_bits"] > r["exact_bits"]
    bound = json.loads(invoke(tmp_path, "sql", "SELECT bound, params FROM ib_estimates "
                              "WHERE method = 'bound' LIMIT 1", "--format", "json").output)
    assert bound[0]["bound"] == "upper" and "intrinsic_dim" in bound[0]["params"]


def test_estimates_on_the_zero_one_error(tmp_path, toy_spec):
    assert invoke(tmp_path, "run", str(toy_spec), "--no-estimate").exit_code == 0
    result = invoke(tmp_path, "estimate", "--loss", "test_error", "--eps", "0.3",
                    "--method", "empirical", "--method", "exact")
    assert result.exit_code == 0, result.output
    assert "exact: no closed-form law for the test_error of a gp run" in result.output
    assert "eps (0-1 error)" in result.output
    rows = json.loads(invoke(tmp_path, "sql", "SELECT loss, method, n FROM estimates",
                             "--format", "json").output)
    assert rows == [{"loss": "test_error", "method": "empirical", "n": 200}]


def test_the_2023_bound_on_the_zero_one_error_reads_eps_as_an_error_rate(tmp_path, toy_spec):
    """The paper's bound is stated for a target error rate: with --loss test_error its rows are
    bound_bits(run's task statistics, eps) at the error rates asked for, stored under that loss
    beside the test-MSE rows (the same formula, read at another loss)."""
    from ibdb.stats.bound import TaskStatistics, bound_bits

    assert invoke(tmp_path, "run", str(toy_spec), "--no-estimate").exit_code == 0
    result = invoke(tmp_path, "estimate", "--loss", "test_error", "--eps", "0.3",
                    "--eps", "0.1", "--method", "bound")
    assert result.exit_code == 0, result.output
    assert "eps (0-1 error)" in result.output and "bound (bits)" in result.output
    rows = json.loads(invoke(tmp_path, "sql", "SELECT loss, eps, bits, bound, params FROM "
                             "estimates WHERE method = 'bound' ORDER BY eps",
                             "--format", "json").output)
    assert [(r["loss"], r["eps"], r["bound"]) for r in rows] == [
        ("test_error", 0.1, "upper"), ("test_error", 0.3, "upper")]
    params = json.loads(rows[0]["params"]) if isinstance(rows[0]["params"], str) \
        else rows[0]["params"]
    fields = {k: params[k] for k in TaskStatistics.__dataclass_fields__}
    for row in rows:
        assert row["bits"] == pytest.approx(bound_bits(TaskStatistics(**fields), row["eps"])[0],
                                            rel=1e-12)
    assert rows[0]["bits"] > rows[1]["bits"]  # a smaller target error needs more bits


def test_the_legend_says_what_each_interval_covers(tmp_path, toy_spec):
    """The ncx2 interval is a bootstrap of the fit: sampling error only, and the table says
    so, naming each shown method's interval from the registry."""
    out = " ".join(invoke(tmp_path, "run", str(toy_spec)).output.split())
    assert "ncx2: bootstrap: sampling error only, not the misfit of the ncx2 model" in out
    assert "empirical: Clopper-Pearson" in out
    assert "paper:" not in out  # not shown, not listed


def test_a_gp_that_does_not_interpolate_is_flagged(tmp_path):
    """Duplicated training points with different labels: no function interpolates them, the
    posterior mean misses by ~0.5. The run is flagged in run_summary and the printed table
    warns; an interpolating run is not."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    x_train = np.concatenate([x, x])  # each point twice ...
    y_train = np.concatenate([np.arange(20) % 3, (np.arange(20) + 1) % 3])  # ... two labels
    np.savez(tmp_path / "toy.npz", X_train=x_train, y_train=y_train,
             X_test=rng.normal(size=(20, 4)), y_test=np.arange(20) % 3)
    spec = write_spec(tmp_path, spec_dict(n_train=40, n_test=20))
    result = invoke(tmp_path, "--device", "cpu", "run", str(spec))
    assert result.exit_code == 0, result.output
    assert "WARNING: does not interpolate its training data (a residual of 0.5" in result.output
    got = invoke(tmp_path, "sql", "SELECT interpolates, interp_error > 0.4 FROM run_summary")
    assert "false" in got.output.lower() and "true" in got.output.lower()
    make_npz(tmp_path / "toy.npz")
    fine = invoke(tmp_path, "--device", "cpu", "run", str(spec))
    assert fine.exit_code == 0 and "does not interpolate" not in fine.output


def test_estimate_on_a_missing_store_is_an_error_and_creates_nothing(tmp_path):
    """It used to create an empty store and print "stored 0 estimate(s)" with exit 0."""
    result = invoke(tmp_path, "estimate")
    assert result.exit_code == 2 and "no such store" in result.output
    assert not (tmp_path / "cli.duckdb").exists()


def test_sql_table_of_ib_estimates_is_ordered_and_narrow(tmp_path, toy_spec):
    """Issue 14: ib_estimates came in no order and its JSON columns made each table row ~1000
    characters wide; the table format now cuts long cells (csv and json keep them whole)."""
    assert invoke(tmp_path, "run", str(toy_spec)).exit_code == 0
    table = invoke(tmp_path, "sql", "SELECT * FROM ib_estimates")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert "cells over 60 characters are cut" in lines[-1]
    assert max(len(line) for line in lines[:-1]) < 700
    as_json = json.loads(invoke(tmp_path, "sql", "SELECT * FROM ib_estimates",
                                "--format", "json").output)
    keys = [(r["run_id"], r["loss"], r["method"], -r["eps"]) for r in as_json]
    assert keys == sorted(keys) and len(keys) > 3
    assert any(len(json.dumps(r["diagnostics"])) > 60 for r in as_json)  # kept whole there
