"""Progress (issue 14): the facade's callbacks for runs, estimates and reports, and the
throttled one-line rendering the CLI uses when stderr is not a terminal."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.cli.render import ProgressBars
from ibdb.core.errors import IbdbError
from ibdb.progress import ProgressLines, format_seconds, interval_from, progress_line

from conftest import make_npz, spec_dict, write_spec


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_with_rate_and_time_left_and_always_a_final_line():
    clock, lines = Clock(), []
    render = ProgressLines(lines.append, interval=10, clock=clock)
    for second in range(1, 26):  # 100 hypotheses a second for 25 s, of 2500
        clock.now = 100.0 + second
        render("run a", 100 * second, 2500)
    # one line at most every 10 s (at 10 s and 20 s), then the final one at once
    assert lines == [
        "run a: 1000/2500 (40%), 100/s, about 15 s left",
        "run a: 2000/2500 (80%), 100/s, about 5.0 s left",
        "run a: 2500/2500 done in 25 s (100/s)",
    ]
    render.close()  # nothing pending: the final line was written
    assert len(lines) == 3


def test_the_throttle_is_shared_and_every_label_gets_its_final_line():
    clock, lines = Clock(), []
    with ProgressLines(lines.append, interval=10, clock=clock) as render:
        clock.now += 1
        render("sample", 5, 10)  # within 10 s of the start: not written
        clock.now += 1
        render("sample", 10, 10)  # final: always written
        clock.now += 1
        render("estimate", 1, 4)
        clock.now += 1
        render("estimate", 2, 4)
        # the context's end writes the pending state of "estimate" (a total that was an
        # estimate, say, and never reached)
    assert lines == ["sample: 10/10 done in 2.0 s (5/s)", "estimate: 2/4 ended after 2.0 s (1/s)"]


def test_a_growing_total_and_a_label_begun_again():
    clock, lines = Clock(), []
    render = ProgressLines(lines.append, interval=0, clock=clock)
    render("levels", 1, 1)  # an estimated total, reached at once
    clock.now += 2
    render("levels", 2, 2)  # it grew: written as an ordinary line (interval 0)
    clock.now += 2
    render("levels", 1, 3)  # fewer done than before: the label begins again
    assert lines[0] == "levels: 1/1 done in 0.0 s"
    assert lines[1].startswith("levels: 2/2 done in 2.0 s (0.5/s)")
    assert lines[2] == "levels: 1/3 (33%)"  # a new start: no rate before a second update


def test_interval_from_the_environment_value():
    assert interval_from(None) == 10 and interval_from("") == 10
    assert interval_from("0") == 0 and interval_from(" 2.5 ") == 2.5
    for bad in ("x", "-1", "nan", "inf"):
        with pytest.raises(IbdbError, match="IBDB_PROGRESS_INTERVAL"):
            interval_from(bad)


def test_format_seconds_and_lines():
    assert [format_seconds(s) for s in (0.42, 12.4, 185, 7620)] == \
        ["0.4 s", "12 s", "3 min 05 s", "2 h 07 min"]
    assert progress_line("x", 0, 0, rate=None) == "x: 0/0"


def _toy(tmp_path, **kw):
    make_npz(tmp_path / "toy.npz")
    return write_spec(tmp_path, spec_dict(**kw))


def test_api_run_estimate_recompute_and_report_take_a_progress_callback(tmp_path):
    spec = _toy(tmp_path)
    api = Ibdb(tmp_path / "p.duckdb", device="cpu")
    calls: list[tuple[str, int, int]] = []

    def progress(label: str, done: int, total: int) -> None:
        calls.append((label, done, total))

    api.run(spec, progress=progress)
    sampled = [c for c in calls if c[0] == "tiny/toy/gp/b"]
    assert sampled == [("tiny/toy/gp/b", d, 200) for d in (64, 128, 192, 200)]
    # then the estimating step: one call per (run, loss, method): the 5 default methods
    # (splitting among them, which finds nothing to read in this run)
    assert calls[len(sampled):] == [("estimate", d, 5) for d in (1, 2, 3, 4, 5)]

    calls.clear()
    api.estimate(methods=["ncx2", "empirical"], eps=[0.25], progress=progress)
    assert calls == [("estimate", 1, 2), ("estimate", 2, 2)]

    calls.clear()
    api.recompute([0.15, 0.12], methods=["exact"], progress=progress)
    assert calls == [("estimate", 1, 1)]

    pytest.importorskip("matplotlib")
    calls.clear()
    result = api.report(out=tmp_path / "rep", progress=progress)
    read = [c for c in calls if c[0] == "report: read runs"]
    written = [c for c in calls if c[0] == "report: write files"]
    assert read == [("report: read runs", 1, 1)]
    assert len(written) == len(result.files) and written[-1][1] == written[-1][2]
    assert [c[1] for c in written] == list(range(1, len(written) + 1))
    assert len(calls) == len(read) + len(written)


def _invoke(tmp_path, *args: str, interval: str | None = "0"):
    env = {"IBDB_PROGRESS_INTERVAL": interval}
    return CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "--shards",
                                     str(tmp_path / "shards"), "--device", "cpu", *args],
                              env=env)


def test_cli_without_a_terminal_writes_progress_lines_to_stderr(tmp_path):
    spec = _toy(tmp_path)
    result = _invoke(tmp_path, "run", str(spec))
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert err[0] == "tiny/toy/gp/b: 64/200 (32%)"  # no rate before a second chunk
    assert re.fullmatch(r"tiny/toy/gp/b: 128/200 \(64%\), [\d.e+]+/s, about [\d.]+ s left",
                        err[1]), err
    assert re.fullmatch(r"tiny/toy/gp/b: 200/200 done in [\d.]+ s \([\d.e+]+/s\)", err[3]), err
    assert err[4] == "estimate: 1/5 (20%)" and err[-1].startswith("estimate: 5/5 done in ")
    assert "done in" not in result.stdout  # progress goes to stderr only

    estimated = _invoke(tmp_path, "estimate", "--eps", "0.25")
    assert estimated.exit_code == 0, estimated.output
    assert estimated.stderr.splitlines()[-1].startswith("estimate: 5/5 done in ")


def test_cli_progress_is_throttled_by_default(tmp_path):
    spec = _toy(tmp_path)
    started = time.monotonic()
    result = _invoke(tmp_path, "run", str(spec), interval=None)  # unset: one line per 10 s
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert [line for line in err if "done in" in line] == [err[-2], err[-1]]
    assert err[-2].startswith("tiny/toy/gp/b: 200/200 done in ")
    assert err[-1].startswith("estimate: 5/5 done in ")
    if took < 9.5:  # (a run of a few seconds here; a slow machine may pass the 10 s mark)
        assert len(err) == 2, err


def test_a_bad_progress_interval_is_a_usage_error(tmp_path):
    spec = _toy(tmp_path)
    result = _invoke(tmp_path, "run", str(spec), interval="soon")
    assert result.exit_code == 2
    assert "IBDB_PROGRESS_INTERVAL='soon' is not a number of seconds" in result.output
    assert not (tmp_path / "cli.duckdb").exists()


def test_cli_report_progress(tmp_path):
    pytest.importorskip("matplotlib")
    spec = _toy(tmp_path)
    assert _invoke(tmp_path, "run", str(spec)).exit_code == 0
    result = _invoke(tmp_path, "report", "--out", str(tmp_path / "rep"))
    assert result.exit_code == 0, result.output
    err = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert err[0].startswith("report: read runs: 1/1 done in ")
    assert re.match(r"report: write files: (\d+)/\1 done in ", err[-1]), err


def test_on_a_terminal_a_bar_not_lines(capsys):
    with ProgressBars(interactive=True) as bars:
        for done in (1, 2, 3):
            bars.update("tiny", done, 3)
    err = capsys.readouterr().err
    assert "tiny" in err and "done in" not in err
