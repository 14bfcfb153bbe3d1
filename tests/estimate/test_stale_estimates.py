"""CLI papercuts of issue 14: stale values in printed tables, `estimate --run` refreshing every
stored eps, and `ibdb check` after an interrupted first run (shards, no store)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main

from conftest import interrupt_gp_sampling, make_npz, spec_dict, write_spec

RUN_LABEL = "tiny/toy/gp"


def invoke(tmp_path, *args: str):
    return CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "--shards",
                                     str(tmp_path / "shards"), "--device", "cpu", *args])


def _spec(tmp_path, n: int):
    make_npz(tmp_path / "toy.npz")
    return write_spec(tmp_path, spec_dict(n_hypotheses=n))


def _sql(tmp_path, query: str) -> list[dict]:
    result = invoke(tmp_path, "sql", query, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _table(output: str) -> dict[str, dict[str, str]]:
    """The printed IB table: {eps: {method: cell}}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("eps (test MSE)"))
    header = [h.strip().removesuffix(" (bits)") for h in lines[start].split("  ") if h.strip()]
    widths = [len(w) for w in lines[start + 1].split("  ")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip() or not line[0].isspace() and not line[0].isdigit():
            break
        cells, at = [], 0
        for w in widths:
            cells.append(line[at:at + w].strip())
            at += w + 2
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return rows


def _run_and_extend(tmp_path, *extend_args: str) -> tuple[str, object]:
    """200 hypotheses, estimates at the spec's eps and at 0.25 (ncx2, empirical, exact, bound)
    and the 0-1 error at 0.3; then the spec asks for 300 and is run again."""
    spec = _spec(tmp_path, 200)
    assert invoke(tmp_path, "run", str(spec)).exit_code == 0
    assert invoke(tmp_path, "estimate", "--eps", "0.25").exit_code == 0
    assert invoke(tmp_path, "estimate", "--loss", "test_error", "--eps", "0.3",
                  "--method", "empirical").exit_code == 0
    run_id = _sql(tmp_path, "SELECT run_id FROM runs")[0]["run_id"]
    _spec(tmp_path, 300)
    return run_id, invoke(tmp_path, "run", str(tmp_path / "spec.yaml"), *extend_args)


def test_an_extended_run_recomputes_its_stale_estimates_before_printing(tmp_path):
    """It used to print the 0.25 row (estimated from 200 hypotheses) under "300 hypotheses"."""
    run_id, extended = _run_and_extend(tmp_path)
    assert extended.exit_code == 0, extended.output
    # ncx2 and empirical at the 3 spec eps and 0.25 (test MSE), and empirical at 0.3 (0-1
    # error); exact reads the spectrum and bound the task statistics, which did not change
    assert "recomputed 9 stale estimate(s)" in extended.output
    assert f"run {run_id}  {RUN_LABEL}  (300 hypotheses" in extended.output
    assert "* stale" not in extended.output and "*" not in _table(extended.output)["0.25"]["ncx2"]
    table = _table(extended.output)
    assert set(table) == {"0.3", "0.25", "0.2", "0.1"}
    assert _sql(tmp_path, "SELECT * FROM stale_estimates") == []
    stored = _sql(tmp_path, "SELECT loss, method, n, bits FROM estimates WHERE method IN "
                  "('ncx2', 'empirical') ORDER BY ALL")
    assert {r["n"] for r in stored} == {300}  # every one from the 300 hypotheses
    at_025 = {r["method"]: r["bits"] for r in _sql(
        tmp_path, "SELECT method, bits FROM estimates WHERE eps = 0.25 AND loss = 'test_mse'")}
    assert table["0.25"]["ncx2"].startswith(f"{at_025['ncx2']:.3g} [")


def test_stale_values_left_in_a_table_are_marked(tmp_path):
    run_id, extended = _run_and_extend(tmp_path, "--no-estimate")
    assert extended.exit_code == 0, extended.output
    table = _table(extended.output)
    for eps in ("0.3", "0.25", "0.2", "0.1"):  # sample-based: from 200 of the 300 hypotheses
        assert table[eps]["ncx2"].endswith(" *") and table[eps]["empirical"].endswith(" *")
        assert not table[eps]["exact"].endswith("*") and not table[eps]["bound"].endswith("*")
    assert (f"* stale (8 value(s)): computed before this run's samples changed (e.g. it "
            f"gained hypotheses), so not of the count above; `ibdb estimate --run {run_id}` "
            "recomputes them.") in extended.output
    # the marked cells are exactly the view's stale rows of this loss
    stale = _sql(tmp_path, "SELECT method, eps FROM stale_estimates WHERE loss = 'test_mse'")
    assert len(stale) == 8


def test_estimate_run_refreshes_every_stored_eps_so_that_check_passes(tmp_path):
    run_id, extended = _run_and_extend(tmp_path, "--no-estimate")
    assert extended.exit_code == 0, extended.output
    check = invoke(tmp_path, "check")
    assert check.exit_code == 1 and "PROBLEM  stale_estimates: 9 row(s)" in check.output

    # without refresh only what was asked (the spec's eps, default methods) is recomputed:
    # 0.25 and the 0-1 error stay stale, and the table says so
    kept = invoke(tmp_path, "estimate", "--run", run_id, "--no-refresh")
    assert kept.exit_code == 0, kept.output
    assert "stored 12 estimate(s)\n" in kept.output
    assert _table(kept.output)["0.25"]["ncx2"].endswith(" *")
    assert "* stale (2 value(s))" in kept.output
    check = invoke(tmp_path, "check")
    assert check.exit_code == 1 and "PROBLEM  stale_estimates: 3 row(s)" in check.output

    refreshed = invoke(tmp_path, "estimate", "--run", run_id)
    assert refreshed.exit_code == 0, refreshed.output
    assert "stored 15 estimate(s), 3 of them recomputing stale ones" in refreshed.output
    assert "*" not in refreshed.output
    check = invoke(tmp_path, "check")
    assert check.exit_code == 0, check.output
    assert "0 of 6 check(s) found problems" in check.output
    rows = _sql(tmp_path, "SELECT loss, method, eps, n FROM estimates WHERE method = "
                "'empirical' ORDER BY loss, eps")
    assert [(r["loss"], r["eps"], r["n"]) for r in rows] == [
        ("test_error", 0.3, 300), *[("test_mse", e, 300) for e in (0.1, 0.2, 0.25, 0.3)]]


def test_check_after_an_interrupted_first_run_lists_its_shards(tmp_path, monkeypatch):
    spec = _spec(tmp_path, 200)
    interrupt_gp_sampling(monkeypatch, at_chunk=3)
    api = Ibdb(tmp_path / "cli.duckdb", shards=tmp_path / "shards", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        api.run(spec)
    assert not (tmp_path / "cli.duckdb").exists()

    check = invoke(tmp_path, "check")
    assert check.exit_code == 1, check.output
    shards = tmp_path / "shards"
    folder = next(shards.iterdir())
    assert "no such store" not in check.output
    assert (f"PROBLEM  unloaded_shards: 1 row(s). there is no store at {tmp_path / 'cli.duckdb'}"
            f", but the shard folder {shards} holds 1 run folder(s)") in check.output
    assert f"`ibdb ingest {shards}` loads them" in check.output
    row = next(line for line in check.output.splitlines() if line.startswith(str(folder)))
    # two loss shards of 64 written, and the spectrum
    assert row.split() == [str(folder), "tiny/toy/gp/b", "2", "128", "of", "200", "1"]
    assert check.output.splitlines()[-1] == "1 of 1 check(s) found problems: unloaded_shards"
    assert not (tmp_path / "cli.duckdb").exists()  # checking creates no store
    fixing = invoke(tmp_path, "check", "--fix")  # nothing to repair; the shards are listed
    assert fixing.exit_code == 1, fixing.output
    assert "no store at" in fixing.output and "unloaded_shards" in fixing.output
    assert not (tmp_path / "cli.duckdb").exists() and len(list(folder.iterdir())) > 2

    loaded = invoke(tmp_path, "ingest", str(shards))
    assert loaded.exit_code == 0 and "ingested 128 hypotheses" in loaded.output
    check = invoke(tmp_path, "check")  # now a store: the ordinary checks (a run short of 200)
    assert check.exit_code == 1 and "PROBLEM  incomplete_runs" in check.output
    assert "unloaded_shards" not in check.output


def test_check_without_a_store_or_shards_is_still_an_error(tmp_path):
    check = invoke(tmp_path, "check")
    assert check.exit_code == 2 and "no such store" in check.output
    (tmp_path / "shards").mkdir()  # an empty shard folder: nothing to list either
    check = invoke(tmp_path, "check")
    assert check.exit_code == 2 and "no such store" in check.output
