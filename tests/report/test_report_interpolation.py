"""`ibdb report` marks gp runs that do not interpolate their training data (runs.runner_info
'interpolates' false): in the runs table, on every estimates row, in figure titles and legends,
and on the sweep figure; never a run that interpolates, nor one whose runner_info predates the
check. And it shows a gp run's expected test MSE as the posterior mean's plus the spread."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.store.database import Store

from conftest import make_npz, spec_dict, write_spec

pytest.importorskip("matplotlib")

FLAG = "does not interpolate"
ROW_FLAG = "does not interpolate: estimates are not of the definition"
# (bandwidth, jitter): 'fine' interpolates (residual ~2e-7); 'mid' misses a target by ~0.13 and
# 'flat' (a kernel ~ constant, the jitter swamps the rest) by ~0.67.
SPACES = {"fine": (1.5, 1e-8), "mid": (1.5, 1e-2), "flat": (1e4, 1e-2)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Ibdb, dict[str, str]]:
    folder = tmp_path_factory.mktemp("interp")
    make_npz(folder / "toy.npz")
    spec = spec_dict(n_hypotheses=100, chunk_size=100)
    spec["spaces"] = [dict(spec["spaces"][0], name=name, bandwidth=bw, jitter=jitter)
                      for name, (bw, jitter) in SPACES.items()]
    api = Ibdb(folder / "r.duckdb", shards=folder / "shards", device="cpu")
    planned = api.run(write_spec(folder, spec)).planned
    return api, {p.spec.space.name: p.run_id for p in planned}


def _facts(api: Ibdb) -> dict[str, tuple]:
    """run_id -> (interpolates, interp_error, test_mse_of_mean, test_mse_spread)."""
    _, rows = api.sql("SELECT run_id, interpolates, interp_error, test_mse_of_mean, "
                      "test_mse_spread FROM run_summary")
    return {r[0]: r[1:] for r in rows}


class Drawn:
    """Title, title colour, legend texts and lines of each figure as it is saved."""

    def __init__(self) -> None:
        self.figures: dict[str, dict] = {}

    def wrap(self, save):
        def recording(fig, path):
            ax = fig.axes[0]
            legend = ax.get_legend()
            self.figures[path.stem] = {
                "title": ax.get_title(), "color": ax.title.get_color(),
                "legend": [] if legend is None else [t.get_text() for t in legend.get_texts()],
                "lines": ax.get_lines()}
            return save(fig, path)
        return recording


def _report(api: Ibdb, out, run_ids: list[str] | None = None):
    from ibdb.report import figures as plots

    drawn = Drawn()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "save", drawn.wrap(plots.save))
        result = api.report(run_ids=run_ids, out=out)
    return result, drawn


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    api, _ = runs
    return _report(api, tmp_path_factory.mktemp("out") / "rep")


def _table_rows(text: str, run_id: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"| `{run_id}` |")]


def _estimates_section(text: str, run_id: str) -> str:
    (section,) = [s for s in text.split("\n## ") if s.startswith("Estimates:")
                  and f"(`{run_id}`" in s.splitlines()[0]]
    return section


def _table_lines(section: str) -> list[str]:
    """The header and body rows of the section's table (not the '|---|' separator)."""
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_the_runs_are_what_the_test_needs(runs):
    api, ids = runs
    facts = _facts(api)
    assert facts[ids["fine"]][0] is True and facts[ids["fine"]][1] < 1e-3
    assert facts[ids["mid"]][0] is False and 0.05 < facts[ids["mid"]][1] < 0.5
    assert facts[ids["flat"]][0] is False and facts[ids["flat"]][1] > 0.5


def test_runs_table_marks_only_runs_that_do_not_interpolate(report, runs):
    api, ids = runs
    result, _ = report
    text = result.markdown.read_text()
    facts = _facts(api)
    header = next(line for line in text.splitlines() if line.startswith("| run | label |"))
    assert header.endswith("| interpolates training data |")
    for name in ("mid", "flat"):
        run_id = ids[name]
        rows = _table_rows(text, run_id)
        assert len(rows) == 2  # the runs table and the gp table
        for row in rows:
            assert f"**{FLAG}, residual {facts[run_id][1]:.3g}**" in row
    rows = _table_rows(text, ids["fine"])
    assert len(rows) == 2
    for row in rows:
        assert FLAG not in row and f"yes (residual {facts[ids['fine']][1]:.3g})" in row


def test_every_estimates_row_of_a_run_that_does_not_interpolate_is_flagged(report, runs):
    _, ids = runs
    result, _ = report
    text = result.markdown.read_text()
    for name in ("mid", "flat"):
        section = _estimates_section(text, ids[name])
        assert FLAG in section.splitlines()[0]  # the heading
        header, *body = _table_lines(section)
        assert header.endswith("| note |")
        assert len(body) == 3  # eps 0.3, 0.2, 0.1
        assert all(row.endswith(f"| {ROW_FLAG} |") for row in body)
    section = _estimates_section(text, ids["fine"])
    header, *body = _table_lines(section)
    assert len(body) == 3 and "note" not in header
    assert FLAG not in section


def test_figure_titles_and_legends_mark_runs_that_do_not_interpolate(report, runs):
    api, ids = runs
    _, drawn = report
    facts = _facts(api)
    for name in ("mid", "flat"):
        run_id = ids[name]
        for kind in ("loss_hist", "ib_vs_eps"):
            fig = drawn.figures[f"{kind}_{run_id}"]
            assert f"({FLAG}, residual {facts[run_id][1]:.3g}: estimates are not of the " \
                   "definition)" in fig["title"]
            assert fig["color"] == "red"
    for kind in ("loss_hist", "ib_vs_eps"):
        fig = drawn.figures[f"{kind}_{ids['fine']}"]
        assert FLAG not in fig["title"] and fig["color"] != "red"
    legend = drawn.figures["compare_ib_vs_eps"]["legend"]
    for name in SPACES:
        entries = [t for t in legend if t.startswith(f"tiny/toy/{name} ")]
        assert entries  # one per compared method
        marked = [t for t in entries if f"({FLAG}, residual " in t]
        assert len(marked) == (0 if name == "fine" else len(entries))


def test_a_sweep_crosses_out_the_runs_that_do_not_interpolate(runs, tmp_path):
    """fine and mid differ only in the jitter: a sweep, whose point at jitter 1e-2 is crossed."""
    api, ids = runs
    result, drawn = _report(api, tmp_path / "s", [ids["fine"], ids["mid"]])
    series = result.data.sweep.series[0]
    assert result.data.sweep.field == "space.jitter"
    assert series.run_ids == [ids["fine"], ids["mid"]]
    assert series.flags[0] is None and series.flags[1].startswith(f"{FLAG}, residual ")
    fig = drawn.figures["sweep_space_jitter"]
    assert "runs that do not interpolate" in fig["title"] and fig["color"] == "red"
    assert fig["legend"][-1] == "does not interpolate (not of the definition)"
    crosses = [line for line in fig["lines"] if line.get_marker() == "x"
               and line.get_color() == "red" and len(line.get_xdata())]
    assert crosses  # one per (method, eps) drawn
    for line in crosses:
        assert list(line.get_xdata()) == [1e-2]  # only mid's point, never fine's
    text = result.markdown.read_text()
    assert f"Marked on it (crossed out): `{ids['mid']}` ({FLAG}, residual" in text
    assert f"`{ids['fine']}` ({FLAG}" not in text


def test_gp_runs_show_the_expected_test_mse_as_mean_plus_spread(report, runs):
    api, ids = runs
    result, _ = report
    text = result.markdown.read_text()
    assert "### Expected test MSE: the mean hypothesis and the spread around it" in text
    header = next(line for line in text.splitlines()
                  if line.startswith("| run | label | mean hypothesis |"))
    assert header == ("| run | label | mean hypothesis | its test MSE | spread | expected test "
                      "MSE | interpolates training data |")
    for run_id, (_, _, of_mean, spread) in _facts(api).items():
        row = _table_rows(text, run_id)[1]  # the decomposition table's row
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:6] == ["posterior mean", f"{of_mean:.4g}", f"{spread:.4g}",
                              f"{of_mean + spread:.4g}"]
    info = {r.run_id: r for r in result.data.runs}
    assert info[ids["fine"]].test_mse_spread == _facts(api)[ids["fine"]][3]


def test_cli_report_notes_a_run_that_does_not_interpolate(runs, tmp_path):
    api, ids = runs
    result = CliRunner().invoke(main, ["--db", api.db, "report", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    for name in ("mid", "flat"):
        assert re.search(rf"note: run {ids[name]} {FLAG} its training data \(its posterior "
                         r"mean misses a training target by 0\.\d+\)", result.output)
    assert f"note: run {ids['fine']} {FLAG}" not in result.output


def test_a_run_recorded_before_the_check_is_not_marked(runs, tmp_path):
    """An old run's runner_info has no 'interpolates' (run_summary: NULL): not reported as one
    that does not interpolate, though this one (flat) would be."""
    api, ids = runs
    copy = tmp_path / "old.duckdb"
    shutil.copy(api.db, copy)
    with Store.open(copy) as store:
        for run_id in (ids["flat"], ids["mid"]):
            (info,), = store.con.execute("SELECT runner_info FROM runs WHERE run_id = ?",
                                         [run_id]).fetchall()
            info = json.loads(info)
            del info["interpolates"], info["train_interp_max_abs_error"]
            store.con.execute("UPDATE runs SET runner_info = ? WHERE run_id = ?",
                              [json.dumps(info), run_id])
    old = Ibdb(copy, shards=tmp_path / "shards", device="cpu")
    assert _facts(old)[ids["flat"]][:2] == (None, None)
    result, drawn = _report(old, tmp_path / "r")
    text = result.markdown.read_text()
    for name in ("mid", "flat"):
        run_id = ids[name]
        for row in _table_rows(text, run_id):
            assert row.endswith("| not recorded |")
        assert not any(ROW_FLAG in row for row in _table_lines(_estimates_section(text, run_id)))
        assert FLAG not in drawn.figures[f"ib_vs_eps_{run_id}"]["title"]
    assert FLAG not in text and "does not interpolate" not in " ".join(result.data.notes)
    assert not any(FLAG in t for t in drawn.figures["compare_ib_vs_eps"]["legend"])
    # the untouched run still reads as interpolating
    assert f"yes (residual {_facts(old)[ids['fine']][1]:.3g})" in _table_rows(text, ids["fine"])[0]
