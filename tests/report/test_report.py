"""`ibdb report`: valid PNG files, and figures whose data are the store's data (not pixels)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.report.format import format_bits
from ibdb.report.model import ReportError
from ibdb.store.database import Store

from conftest import make_npz, spec_dict, write_spec

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Ibdb, list[str]]:
    """Two gp runs of one toy task that differ only in n_train (20 and 30): a sweep."""
    folder = tmp_path_factory.mktemp("report")
    make_npz(folder / "toy.npz")
    spec = spec_dict(n_hypotheses=100, chunk_size=100)
    spec["tasks"] = [dict(spec["tasks"][0], name=f"toy{n}", n_train=n) for n in (30, 20)]
    path = write_spec(folder, spec)
    api = Ibdb(folder / "r.duckdb", shards=folder / "shards", device="cpu")
    result = api.run(path)
    return api, [p.run_id for p in result.planned]


@pytest.fixture(scope="module")
def report(two_runs, tmp_path_factory):
    api, _ = two_runs
    return api.report(out=tmp_path_factory.mktemp("out") / "rep")


def _sql(api: Ibdb, query: str, params: list | None = None) -> list[tuple]:
    with Store.open(api.db, read_only=True) as store:
        return store.con.execute(query, params or []).fetchall()


def test_files_are_valid_small_pngs_and_a_markdown_summary(report, two_runs):
    from matplotlib.image import imread

    _, run_ids = two_runs
    names = {p.name for p in report.files}
    expected = {"report.md", "compare_ib_vs_eps.png", "sweep_task_n_train.png"}
    for run_id in run_ids:
        expected |= {f"loss_hist_{run_id}.png", f"ib_vs_eps_{run_id}.png"}
    assert names == expected
    for path in report.figures.values():
        raw = path.read_bytes()
        assert raw[:8] == PNG_SIGNATURE and raw[12:16] == b"IHDR"
        width, height = struct.unpack(">II", raw[16:24])
        assert (width, height) == (640, 420)
        assert 5_000 < len(raw) < 200_000
        assert imread(path).shape[:2] == (420, 640)
    text = report.markdown.read_text()
    assert "Inductive bias in **bits** = -log2 P[test MSE <= eps]" in text
    assert "| eps (test MSE) | exact (bits) | ncx2 (bits) | empirical (bits) | bound (bits) |" \
        in text
    for run_id in run_ids:
        assert f"`{run_id}`" in text and f"(loss_hist_{run_id}.png)" in text
    assert "`task.n_train` (20, 30)" in text


def test_histograms_are_the_stored_losses(report, two_runs):
    api, run_ids = two_runs
    for run_id in run_ids:
        panel = report.data.panels[run_id]
        stored = [r[0] for r in _sql(api, "SELECT test_mse FROM losses WHERE run_id = ? AND "
                                     "fitted IS NOT FALSE ORDER BY hypothesis_id", [run_id])]
        np.testing.assert_array_equal(panel.values, stored)
        assert panel.counts.sum() == len(stored) == 100
        assert panel.edges[0] == min(stored) and panel.edges[-1] == max(stored)
        np.testing.assert_array_equal(panel.eps, [0.1, 0.2, 0.3])


def test_densities_are_the_stored_fit_and_the_exact_law(report, two_runs):
    from scipy import stats

    from ibdb.stats.spectrum import gp_loss_distribution

    api, run_ids = two_runs
    for run_id in run_ids:
        panel = report.data.panels[run_id]
        fit, exact = panel.densities  # ncx2 (paper was not asked for), then exact
        params = {json.dumps(json.loads(r[0]), sort_keys=True) for r in _sql(
            api, "SELECT params FROM ib_estimates WHERE run_id = ? AND method = 'ncx2'",
            [run_id])}
        assert len(params) == 1  # one fit per run, stored with every eps
        p = json.loads(params.pop())
        np.testing.assert_allclose(
            fit.y, stats.ncx2.pdf(fit.x, p["df"], p["nc"], scale=p["scale"]) if p["nc"] > 0
            else stats.chi2.pdf(fit.x, p["df"], scale=p["scale"]), rtol=1e-12)
        # The exact density integrates to the exact CDF's mass over the plotted range.
        with Store.open(api.db, read_only=True) as store:
            facts = store.run_facts(run_id)
            dist = gp_loss_distribution(*store.spectrum(run_id), n_test=facts["n_test"],
                                        n_outputs=facts["n_outputs"])
        mass = np.exp(dist.logcdf(exact.x[-1])) - np.exp(dist.logcdf(exact.x[0]))
        assert np.trapezoid(exact.y, exact.x) == pytest.approx(mass, abs=2e-3)
        assert (exact.y >= -1e-9).all()
        # and its mean is the law's mean (the histogram's range holds nearly all its mass)
        mean = np.trapezoid(exact.x * exact.y, exact.x) / np.trapezoid(exact.y, exact.x)
        assert mean == pytest.approx(dist.mean(), rel=0.02)


def test_curves_are_the_stored_estimates(report, two_runs):
    api, run_ids = two_runs
    for run_id in run_ids:
        rows = _sql(api, "SELECT method, eps, bits, lower_bits, upper_bits, bound FROM "
                    "ib_estimates WHERE run_id = ? AND loss = 'test_mse'", [run_id])
        plotted = {(c.method, float(e)): (b, lo, hi, s)
                   for c in report.data.curves[run_id]
                   for e, b, lo, hi, s in zip(c.eps, c.bits, c.lower, c.upper, c.bound,
                                              strict=True)}
        assert set(plotted) == {(r[0], r[1]) for r in rows}
        for method, eps, bits, lower, upper, bound in rows:
            got = plotted[(method, eps)]
            assert got[0] == bits and got[3] == bound
            for value, want in ((got[1], lower), (got[2], upper)):
                assert (np.isnan(value) if want is None else value == want)


def _check_series(api: Ibdb, series, field: str) -> None:
    """A sweep series plots each run's spec value and its stored bits, in that order."""
    column = field.split(".")[-1]
    for run_id, x in zip(series.run_ids, series.x, strict=True):
        spec = json.loads(_sql(api, "SELECT spec FROM specs WHERE run_id = ?", [run_id])[0][0])
        section = spec[field.split(".")[0]]
        if column not in section:  # a gp space's kernel field, stored in its kernel
            section = section["kernel"]
        assert section[column] == x
    assert list(series.x) == sorted(series.x)
    for (method, eps), bits in series.bits.items():
        stored = [_sql(api, "SELECT bits FROM ib_estimates WHERE run_id = ? AND method = ? AND "
                       "eps = ?", [r, method, eps])[0][0] for r in series.run_ids]
        np.testing.assert_array_equal(bits, stored)
    assert {m for m, _ in series.bits} == {"exact", "ncx2", "empirical"}


def test_sweep_is_ib_against_n_train(report, two_runs):
    api, run_ids = two_runs
    sweep = report.data.sweep
    assert sweep.field == "task.n_train" and len(sweep.series) == 1
    series = sweep.series[0]
    assert series.space == "" and sorted(series.run_ids) == sorted(run_ids)
    np.testing.assert_array_equal(series.x, [20, 30])
    _check_series(api, series, "task.n_train")


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory) -> tuple[Ibdb, dict[tuple[int, float], str]]:
    """n_train 20 and 30, each on two gp spaces (bandwidth 1.5 and 3): a sweep per space."""
    folder = tmp_path_factory.mktemp("report4")
    make_npz(folder / "toy.npz")
    spec = spec_dict(n_hypotheses=100, chunk_size=100)
    spec["tasks"] = [dict(spec["tasks"][0], name=f"toy{n}", n_train=n) for n in (20, 30)]
    spec["spaces"] = [dict(spec["spaces"][0], name=f"bw{b}", bandwidth=b) for b in (1.5, 3.0)]
    api = Ibdb(folder / "r.duckdb", shards=folder / "shards", device="cpu")
    planned = api.run(write_spec(folder, spec)).planned
    return api, {(p.spec.task.n_train, p.spec.space.kernel.bandwidth): p.run_id for p in planned}


def test_a_task_sweep_on_several_spaces_is_one_series_per_space(four_runs, tmp_path):
    api, ids = four_runs
    result = api.report(out=tmp_path / "r")
    sweep = result.data.sweep
    assert sweep.field == "task.n_train"
    assert [s.space for s in sweep.series] == ["bw1.5", "bw3.0"]
    for series, bandwidth in zip(sweep.series, (1.5, 3.0), strict=True):
        assert series.run_ids == [ids[(20, bandwidth)], ids[(30, bandwidth)]]
        _check_series(api, series, "task.n_train")
    assert result.figures["sweep_task_n_train"].read_bytes()[:8] == PNG_SIGNATURE
    text = result.markdown.read_text()
    assert "The runs on space bw1.5 differ in one spec field, `task.n_train` (20, 30)" in text


def _collect(api: Ibdb, run_ids: list[str]):
    from ibdb.report.collect import collect

    with Store.open(api.db, read_only=True) as store:
        return collect(store, run_ids)


def test_a_space_field_sweep(four_runs):
    api, ids = four_runs
    sweep = _collect(api, [ids[(20, 3.0)], ids[(20, 1.5)]]).sweep
    assert sweep.field == "space.bandwidth" and len(sweep.series) == 1
    np.testing.assert_array_equal(sweep.series[0].x, [1.5, 3.0])
    _check_series(api, sweep.series[0], "space.bandwidth")


def test_no_sweep_when_runs_differ_in_two_fields(four_runs):
    api, ids = four_runs
    data = _collect(api, [ids[(20, 1.5)], ids[(30, 3.0)]])
    assert data.sweep is None and len(data.curves) == 2


def test_cli_report_one_run(two_runs, tmp_path):
    api, run_ids = two_runs
    out = tmp_path / "one"
    result = CliRunner().invoke(main, ["--db", api.db, "report", "--run", run_ids[0],
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote 3 file(s) to {out}:" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.md", f"loss_hist_{run_ids[0]}.png", f"ib_vs_eps_{run_ids[0]}.png"])


def test_cli_report_test_error_without_estimates_says_what_to_do(two_runs, tmp_path):
    api, run_ids = two_runs
    result = CliRunner().invoke(main, ["--db", api.db, "report", "--run", run_ids[1],
                                       "--loss", "test_error", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert (f"note: run {run_ids[1]} has no stored estimates of the test_error; make them with "
            f"`ibdb estimate --run {run_ids[1]} --loss test_error`.") in result.output
    text = (tmp_path / "e" / "report.md").read_text()
    assert "test 0-1 error" in text and "mean test 0-1 error" in text


def test_unknown_run_is_a_short_error(two_runs, tmp_path):
    api, _ = two_runs
    result = CliRunner().invoke(main, ["--db", api.db, "report", "--run", "nope",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: run 'nope' is not in {api.db}. List the runs with")
    assert not (tmp_path / "x").exists()


def test_missing_matplotlib_names_the_extra(two_runs, tmp_path, monkeypatch):
    api, _ = two_runs
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ReportError, match=r"pip install 'ibdb\[report\]'"):
        api.report(out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_importing_the_cli_and_report_does_not_import_matplotlib():
    code = ("import sys, ibdb.report.collect, ibdb.cli, ibdb.api; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("args", "text"), [
    ((8.239, 7.1, 8.6, "point"), "8.24 [7.1, 8.6]"),
    ((10.08, 10.08, float("nan"), "lower"), ">= 10.1"),
    ((1.1e9, float("nan"), float("nan"), "upper"), "<= 1.100e+09"),
    ((float("inf"), float("nan"), float("nan"), "point"), "inf"),
    ((float("nan"), float("nan"), float("nan"), "point"), "n/a"),
])
def test_format_bits(args, text):
    assert format_bits(*args, exponent_digits=3) == text


def test_report_out_must_be_a_folder(two_runs, tmp_path):
    api, _ = two_runs
    (tmp_path / "f").write_text("")
    with pytest.raises(ReportError, match="is a file; name a folder"):
        api.report(out=Path(tmp_path / "f"))


# -- progress ---------------------------------------------------------------------------------


def test_progress_is_called_after_each_run_and_each_file(two_runs, tmp_path):
    from ibdb.report.collect import collect
    from ibdb.report.writer import write_report

    api, run_ids = two_runs
    seen: list[tuple[str, int, int]] = []
    with Store.open(api.db, read_only=True) as store:
        data = collect(store, run_ids, progress=lambda *a: seen.append(a))
    assert seen == [("tiny/toy30/gp", 1, 2), ("tiny/toy20/gp", 2, 2)]
    seen.clear()
    result = write_report(data, tmp_path / "p", progress=lambda *a: seen.append(a))
    names = [p.name for p in result.figures.values()] + ["report.md"]
    assert seen == [(name, i, len(names)) for i, name in enumerate(names, 1)]
    assert len(names) == 7 and seen[-1] == ("report.md", 7, 7)
    for name, *_ in seen:
        assert (tmp_path / "p" / name).is_file()  # called after the file is written


def test_progress_is_optional_and_a_failing_callback_propagates(two_runs, tmp_path):
    from ibdb.report.collect import collect

    api, run_ids = two_runs

    def boom(label: str, done: int, total: int) -> None:
        raise RuntimeError(f"stop at {done}/{total}")

    with Store.open(api.db, read_only=True) as store:
        with pytest.raises(RuntimeError, match="stop at 1/1"):
            collect(store, run_ids[:1], progress=boom)
        assert len(collect(store, run_ids[:1], progress=None).runs) == 1


# -- figures named by run label (issue 14) ------------------------------------------------------


def _drawn(data) -> dict[str, dict]:
    """Each planned figure's caption, title and legend texts, read from the Figure object."""
    from ibdb.report.writer import figure_plan

    out = {}
    for planned in figure_plan(data):
        ax = planned.draw().axes[0]
        legend = ax.get_legend()
        out[planned.key] = {"caption": planned.caption, "title": ax.get_title(),
                            "legend": [t.get_text() for t in legend.get_texts()]}
    return out


def test_figures_and_captions_name_runs_by_label(report, two_runs):
    _, run_ids = two_runs
    labels = {r.run_id: r.label for r in report.data.runs}
    assert sorted(labels.values()) == ["tiny/toy20/gp", "tiny/toy30/gp"]
    drawn = _drawn(report.data)
    text = report.markdown.read_text()
    for run_id in run_ids:
        label = labels[run_id]  # unique: shown without an id
        for kind in ("loss_hist", "ib_vs_eps"):
            fig = drawn[f"{kind}_{run_id}"]
            assert fig["title"] == label and label in fig["caption"]
            assert run_id not in fig["title"] + fig["caption"]
            assert f"*Figure: {fig['caption']}.*" in text
            assert f"![{fig['caption']}]({kind}_{run_id}.png)" in text
    compare = drawn["compare_ib_vs_eps"]
    for label in labels.values():
        assert label in compare["caption"]
        assert [t for t in compare["legend"] if t.startswith(f"{label} ")]
    assert all(t.split(" ")[0] in labels.values() for t in compare["legend"])
    assert "tiny/toy20/gp" in drawn["sweep_task_n_train"]["caption"]


@pytest.fixture(scope="module")
def same_label(tmp_path_factory) -> tuple[Ibdb, list[str]]:
    """Two runs labelled tiny/toy/gp that differ only in their seed."""
    folder = tmp_path_factory.mktemp("same")
    make_npz(folder / "toy.npz")
    api = Ibdb(folder / "r.duckdb", shards=folder / "shards", device="cpu")
    ids = []
    for seed in (0, 1):
        spec = write_spec(folder, spec_dict(n_hypotheses=60, chunk_size=60, seed=seed),
                          name=f"s{seed}.yaml")
        ids += [p.run_id for p in api.run(spec).planned]
    return api, ids


def test_runs_that_share_a_label_show_their_short_ids(same_label, tmp_path):
    api, ids = same_label
    result = api.report(out=tmp_path / "r")
    assert {r.label for r in result.data.runs} == {"tiny/toy/gp"}
    names = result.data.names
    assert names == {i: f"tiny/toy/gp ({i[:8]})" for i in ids}
    drawn = _drawn(result.data)
    text = result.markdown.read_text()
    for run_id in ids:
        for kind in ("loss_hist", "ib_vs_eps"):
            fig = drawn[f"{kind}_{run_id}"]
            assert fig["title"] == names[run_id]
            assert f"*Figure: {fig['caption']}.*" in text and names[run_id] in fig["caption"]
    legend = drawn["compare_ib_vs_eps"]["legend"]
    for run_id in ids:
        assert [t for t in legend if t.startswith(f"{names[run_id]} ")]


def test_run_names_lengthen_short_ids_that_would_collide():
    from ibdb.report.model import RunInfo, run_names

    def info(run_id: str, label: str) -> RunInfo:
        return RunInfo(run_id=run_id, label=label, space_kind="gp", n_train=1, n_test=1,
                       n_outputs=1, n_stored=1, n_not_fitted=0, mean_loss=None, min_loss=None,
                       wall_seconds=None, spec={})

    runs = [info("abcdef0123456789", "e/t/s"), info("abcdef0199999999", "e/t/s"),
            info("1111111111111111", "e/t/other")]
    assert run_names(runs) == {"abcdef0123456789": "e/t/s (abcdef012)",
                               "abcdef0199999999": "e/t/s (abcdef019)",
                               "1111111111111111": "e/t/other"}
