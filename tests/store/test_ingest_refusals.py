"""Hardening of ingest: a run folder ibdb did not write as it should is rejected by name, with
a fix, exit code 2 and no traceback, and nothing of the call is stored: an incomplete or wrong
run.json (checked against a model), a second spectrum of a run that differs from the stored
one, a loss shard beyond the run's budget, and folders or broken links under shard names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.run.shards import write_spectrum

from conftest import make_npz, spec_dict, write_spec

MAX_OUTPUT = 10_000
TABLES = ("specs", "runs", "shards", "losses", "spectra", "estimates", "loss_set_digests")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A store holding run A (100 hypotheses, estimated), A's shard root, and the shard root
    of run B (another seed: 100 hypotheses in chunks of 64, not ingested)."""
    folder = tmp_path_factory.mktemp("ingest_hardening")
    make_npz(folder / "toy.npz")
    api = Ibdb(folder / "s.duckdb", shards=folder / "a", device="cpu")
    api.run(write_spec(folder, spec_dict(n_hypotheses=100), "a.yaml"))
    other = Ibdb(folder / "s.duckdb", shards=folder / "b", device="cpu")
    other.run(write_spec(folder, spec_dict(n_hypotheses=100, seed=7), "b.yaml"), ingest=False)
    return folder / "s.duckdb", folder / "a", folder / "b"


@pytest.fixture
def setup(built, tmp_path) -> tuple[Path, Path, Path]:
    """Private copies: (store, A's run folder, B's run folder)."""
    db, a, b = built
    shutil.copy(db, tmp_path / "s.duckdb")
    shutil.copytree(a, tmp_path / "a")
    shutil.copytree(b, tmp_path / "b")
    (run_a,) = (tmp_path / "a").iterdir()
    (run_b,) = (tmp_path / "b").iterdir()
    return tmp_path / "s.duckdb", run_a, run_b


def contents(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall()))
                for t in TABLES}
    finally:
        con.close()


def ingest(db: Path, *folders: Path):
    return CliRunner().invoke(main, ["--db", str(db), "ingest", *map(str, folders)])


def rejected(db: Path, folders: list[Path], *needles: str) -> str:
    before = contents(db)
    result = ingest(db, *folders)
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out and len(out.encode()) < MAX_OUTPUT, out
    assert "nothing was ingested" in out.lower(), out
    for needle in needles:
        assert needle in out, (needle, out)
    assert contents(db) == before  # nothing of the call is stored
    return out


def _edit(run: Path, change) -> None:
    manifest = json.loads((run / "run.json").read_text())
    change(manifest)
    (run / "run.json").write_text(json.dumps(manifest))


WRONG_MANIFESTS = [
    ("no provenance", lambda m: m.pop("provenance"), "provenance: Field required"),
    ("no budget", lambda m: m["spec"].pop("budget"), "spec.budget: Field required"),
    ("count as text", lambda m: m["spec"]["budget"].update(n_hypotheses="ten"),
     "spec.budget.n_hypotheses: Input should be a valid integer (got 'ten')"),
    ("negative count", lambda m: m["task"].update(n_test=-3), "task.n_test: Input should be "
                                                               "greater than 0"),
    ("bad time", lambda m: m["provenance"].update(started_at="yesterday"),
     "provenance.started_at: Input should be a valid datetime"),
    ("run id a number", lambda m: m.update(run_id=5), "run_id: Input should be a valid string"),
    ("eps as text", lambda m: m["spec"]["task"].update(eps="small"), "spec.task.eps"),
    ("eps empty", lambda m: m["spec"]["task"].update(eps=[]), "spec.task.eps"),
    ("huge value", lambda m: m["spec"].update(experiment=["x" * 50_000]),
     "spec.experiment: Input should be a valid string"),
]


@pytest.mark.parametrize(("case", "change", "message"), WRONG_MANIFESTS,
                         ids=[w[0] for w in WRONG_MANIFESTS])
def test_an_incomplete_or_wrong_run_json_is_rejected_by_name(setup, case, change, message):
    db, run_a, run_b = setup
    _edit(run_b, change)
    out = rejected(db, [run_a, run_b], str(run_b / "run.json"), message,
                   "Re-run the spec with `ibdb run`")
    assert len(out) < 2000  # (the 50 000-character value is cut)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "{not json", ""], ids=["array", "broken", "empty"])
def test_a_run_json_that_is_not_a_json_object_is_rejected(setup, text):
    db, _, run_b = setup
    (run_b / "run.json").write_text(text)
    rejected(db, [run_b], str(run_b / "run.json"))


def test_a_manifest_with_keys_a_later_ibdb_adds_still_loads(setup):
    db, _, run_b = setup
    _edit(run_b, lambda m: (m.update(future_key={"x": 1}), m["provenance"].update(gpu="none")))
    result = ingest(db, run_b)
    assert result.exit_code == 0, result.output
    assert "ingested 100 hypotheses" in result.output


def _stored_spectrum(db: Path, run_id: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        got = con.execute("SELECT eigenvalue, residuals FROM spectra WHERE run_id = ? ORDER BY "
                          "component", [run_id]).fetchall()
    finally:
        con.close()
    import numpy as np

    return np.array([g[0] for g in got]), np.array([g[1] for g in got])


def test_a_second_spectrum_that_differs_is_rejected(setup):
    db, run_a, _ = setup
    eig, residuals = _stored_spectrum(db, run_a.name)
    (old,) = run_a.glob("spectrum-*.parquet")
    old.unlink()
    eig[3] *= 1.01
    new = write_spectrum(run_a, run_a.name, eig, residuals)
    rejected(db, [run_a], str(new), "a second spectrum of run", "1 of its components differ",
             "delete the wrong spectrum file")


def test_a_second_spectrum_that_agrees_up_to_signs_and_rounding_is_accepted(setup):
    """Another device may flip eigenvectors' signs and round differently: the same loss
    distribution, so the same spectrum."""
    db, run_a, _ = setup
    eig, residuals = _stored_spectrum(db, run_a.name)
    (old,) = run_a.glob("spectrum-*.parquet")
    old.unlink()
    residuals[::2] *= -1
    write_spectrum(run_a, run_a.name, eig * (1 + 1e-12), residuals)
    before = contents(db)["spectra"]
    result = ingest(db, run_a)
    assert result.exit_code == 0, result.output
    assert "ingested 0 hypotheses from 1 shard file(s)" in result.output
    assert contents(db)["spectra"] == before  # the first spectrum stays


def test_a_loss_shard_beyond_the_budget_is_rejected(setup):
    db, run_a, run_b = setup
    _edit(run_b, lambda m: m["spec"]["budget"].update(n_hypotheses=64))
    (beyond,) = run_b.glob("losses-000000064-000000099-*.parquet")
    rejected(db, [run_a, run_b], str(beyond), "holds hypotheses 64..99",
             "beyond the run's budget of 64", "n_hypotheses of at least 100")


@pytest.mark.parametrize("kind", ["folder", "broken link", "link loop"])
@pytest.mark.parametrize("name", ["losses-000000100-000000163-0123456789abcdef.parquet",
                                  "spectrum-0123456789abcdef.parquet"], ids=["losses", "spectrum"])
def test_a_folder_or_broken_link_under_a_shard_name_is_damage(setup, kind, name):
    db, run_a, run_b = setup
    bad = run_b / name
    if kind == "folder":
        bad.mkdir()
        what = "a folder under a shard's name"
    elif kind == "broken link":
        bad.symlink_to(run_b / "gone.parquet")
        what = "a broken symbolic link"
    else:
        bad.symlink_to(bad)
        what = "a broken symbolic link"
    if name.startswith("spectrum"):
        for old in run_b.glob("spectrum-*.parquet"):
            if old != bad:
                old.unlink()
    rejected(db, [run_a, run_b], str(bad), what, "Remove it")


def test_a_run_folder_without_its_manifest_is_named(setup):
    db, _, run_b = setup
    (run_b / "run.json").unlink()
    (run_b / "run.json").mkdir()  # a folder where the manifest should be
    result = ingest(db, run_b.parent)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert str(run_b.parent) in result.output


def _tmpfs_prefix(folder: Path, size: str) -> list[str] | None:
    """A command prefix that runs under a private tmpfs of ``size`` mounted on ``folder``
    (a real full disk), or None where mount namespaces are not allowed."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs "
                            f"'{folder}'"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c",
            f"mount -t tmpfs -o size={size} tmpfs '{folder}' && \"$@\"; code=$?; "
            f"echo; echo LISTING; ls -R '{folder}'; exit $code", "sh"]


def test_a_full_disk_while_sampling_says_where_and_keeps_the_shards_written(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    prefix = _tmpfs_prefix(full, "96k")
    if prefix is None:
        pytest.skip("no mount namespaces here (unshare)")
    make_npz(tmp_path / "toy.npz")
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=20_000, chunk_size=1000))
    got = subprocess.run([*prefix, sys.executable, "-c", "import sys; from ibdb.cli import "
                          "main; sys.argv[0] = 'ibdb'; main()", "--db", str(tmp_path / "s.duckdb"),
                          "--shards", str(full), "--device", "cpu", "run", str(spec)],
                         capture_output=True, text=True, timeout=300)
    printed, listing = got.stdout.split("LISTING", 1)
    out = printed + got.stderr
    assert got.returncode == 2, got.stdout + got.stderr
    assert "Traceback" not in out and len(out.encode()) < MAX_OUTPUT
    assert "No space left on device" in out and str(full) in out
    assert "shards written before are kept" in out and "resumes" in out
    assert "losses-000000000-000000999-" in listing  # the first chunks are kept
    assert not (tmp_path / "s.duckdb").exists()


def test_a_space_that_fails_does_not_strand_the_others(tmp_path):
    """Issue 13: one run failing (here a gp space whose conditioning ibdb refuses when its
    runner is built) used to end the command before anything was ingested. Now the other runs
    are sampled, stored and estimated, their tables printed, and the failure named (exit 2)."""
    import duckdb
    from click.testing import CliRunner

    from ibdb.cli import main

    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(n_hypotheses=100, chunk_size=50)
    spec["spaces"].append({"name": "refused", "kind": "gp", "bandwidth": 1.5,
                           "fit": {"train_mse_max": 1e-6, "proposal_noise": 1e4}})
    spec["spaces"].append({"name": "also-fine", "kind": "gp", "bandwidth": 0.7})
    path = write_spec(tmp_path, spec)
    db = tmp_path / "s.duckdb"
    result = CliRunner().invoke(main, ["--db", str(db), "run", str(path)])
    assert result.exit_code == 2, result.output
    assert "1 of 3 run(s) failed" in result.output and "tiny/toy/refused/b" in result.output
    assert "accepts about" in result.output and "Traceback" not in result.output
    con = duckdb.connect(str(db), read_only=True)
    stored = dict(con.execute("SELECT space_name, n_stored FROM run_summary").fetchall())
    estimated = {r[0] for r in con.execute(
        "SELECT DISTINCT space_name FROM ib_estimates").fetchall()}
    assert stored == {"gp": 100, "also-fine": 100}  # (the refused run never began)
    assert estimated == {"gp", "also-fine"}
