"""Hardening: absurd sizes are refused before anything is allocated, with the number, the
estimate and the machine's memory (exit 2, one paragraph); alias bombs and huge values never
flood the terminal or hang (issue "Hardening: no traceback, no hang")."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from ibdb.cli import main
from ibdb.core import memory
from ibdb.data import datasets

from conftest import make_npz, spec_dict, write_spec

MAX_OUTPUT = 10_000  # bytes a refusal may print
MAX_SECONDS = 5.0
GIB = 1 << 30


def run_cli(tmp_path: Path, *args: str) -> tuple[int, str, float]:
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "store.duckdb"), *args])
    elapsed = time.perf_counter() - start
    return result.exit_code, result.output, elapsed


def assert_refused(tmp_path: Path, spec: Path, *needles: str, command: str = "validate") -> str:
    code, output, elapsed = run_cli(tmp_path, command, str(spec))
    assert code == 2, output
    assert "Traceback" not in output
    assert len(output.encode()) < MAX_OUTPUT, len(output)
    assert elapsed < MAX_SECONDS, elapsed
    for needle in needles:
        assert needle in output, (needle, output)
    return output


@pytest.fixture
def small_machine(monkeypatch: pytest.MonkeyPatch) -> int:
    """A machine of 16 GiB, whatever this one has, so that the limits are deterministic."""
    monkeypatch.setattr(memory, "machine_memory_bytes", lambda: 16 * GIB)
    return 16 * GIB


# -- 1. alias bombs and huge values ------------------------------------------------------------

BOMB = "\n".join(
    [f'l0: &l0 [{", ".join(["lol"] * 9)}]']
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)])


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BOMB + "\nname: *l8\n")
    output = assert_refused(tmp_path, spec, "values once its YAML aliases", "100000", "alias")
    assert int(output.split("expands to ")[1].split()[0]) > 387_420_489  # 9^9 strings
    assert output.startswith("Error: ")


def test_alias_bomb_inside_a_field_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BOMB + "\n" + yaml.safe_dump(spec_dict())
                    .replace("name: tiny", "name: *l8"))
    assert_refused(tmp_path, spec, "alias")


def test_medium_alias_expansion_is_shown_truncated(tmp_path: Path) -> None:
    """Under the node limit, a big value in an error is shown cut to a few hundred characters."""
    lines = BOMB.splitlines()[:4]  # 9^4 = 6561 strings: allowed, but long when printed
    spec = tmp_path / "wide.yaml"
    spec.write_text("\n".join(lines) + "\nname: x\ntasks: *l3\nspaces: *l3\nbudgets: *l3\n")
    output = assert_refused(tmp_path, spec, "tasks.0", "more characters", "Fix these fields")
    assert len(output) < 5000


def test_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "cycle.yaml"
    spec.write_text("name: &a [*a]\n")
    assert_refused(tmp_path, spec, "contains itself")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    for depth in (200, 5000):
        spec = tmp_path / f"deep{depth}.yaml"
        spec.write_text("name: " + "[" * depth + "]" * depth + "\n")
        assert_refused(tmp_path, spec, "deep")


def test_huge_string_value_is_truncated(tmp_path: Path) -> None:
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict()
    spec["spaces"][0]["kernel"] = "x" * 500_000
    output = assert_refused(tmp_path, write_spec(tmp_path, spec), "spaces.0.kernel",
                            "xxx...xxx")
    assert output.count("x") < 1000


def test_huge_unknown_key_is_truncated(tmp_path: Path) -> None:
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict()
    spec["budgets"][0]["y" * 300_000] = 1
    output = assert_refused(tmp_path, write_spec(tmp_path, spec), "budgets.0.yyy")
    assert output.count("y") < 1000


def test_legit_aliases_still_work(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("sweep_n_train_shared.yaml", "matched_cnn_kernels.yaml"):
        code, output, _ = run_cli(tmp_path, "validate", str(examples / name))
        assert code == 0, output


def test_merge_keys_and_anchors_still_work(tmp_path: Path) -> None:
    make_npz(tmp_path / "toy.npz")
    spec = tmp_path / "merge.yaml"
    spec.write_text("""
name: merged
tasks:
  - &task {name: a, source: {kind: npz, path: toy.npz}, n_train: 30, n_test: 20, eps: &eps [0.3]}
  - {<<: *task, name: b, eps: *eps}
spaces: [{name: gp, kind: gp}]
budgets: [{name: b, n_hypotheses: 10}]
""")
    code, output, _ = run_cli(tmp_path, "validate", str(spec))
    assert code == 0, output
    assert "2 run(s)" in output


# -- 2. resource limits ------------------------------------------------------------------------


def test_trillion_hypotheses_refused_by_plan(tmp_path: Path, small_machine: int) -> None:
    make_npz(tmp_path / "toy.npz")
    spec = write_spec(tmp_path, spec_dict(n_hypotheses=10**12, chunk_size=1000))
    for command in ("validate", "plan"):
        assert_refused(tmp_path, spec, "n_hypotheses = 1000000000000", "36.4 TiB", "16 GiB",
                       "Lower budget.n_hypotheses", command=command)


def test_synthetic_huge_dimension_refused(tmp_path: Path, small_machine: int) -> None:
    source = {"kind": "synthetic", "intrinsic_dim": 2, "ambient_dim": 10**8, "n_points": 3000}
    spec = write_spec(tmp_path, spec_dict(source=source))
    assert_refused(tmp_path, spec, "ambient_dim = 100000000", "n_points = 3000", "16 GiB",
                   "Lower source.n_points or source.ambient_dim")


def test_synthetic_huge_n_points_refused(tmp_path: Path, small_machine: int) -> None:
    source = {"kind": "synthetic", "intrinsic_dim": 2, "ambient_dim": 4, "n_points": 10**12}
    spec = write_spec(tmp_path, spec_dict(source=source))
    assert_refused(tmp_path, spec, "n_points = 1000000000000", "16 GiB")


def test_synthetic_generator_refuses_alone(small_machine: int) -> None:
    from ibdb.core.errors import SpecError

    with pytest.raises(SpecError, match="ambient_dim = 100000000"):
        datasets.synthetic_task(n_points=3000, intrinsic_dim=2, ambient_dim=10**8, n_classes=3,
                                nonlinearity="none", teacher_width=8, seed=0)


def test_pendulum_huge_bins_refused(tmp_path: Path, small_machine: int) -> None:
    source = {"kind": "pendulum", "n_points": 3000, "n_bins": 10**9}
    spec = write_spec(tmp_path, spec_dict(source=source))
    assert_refused(tmp_path, spec, "n_bins = 1000000000", "16 GiB")


def test_huge_chunk_refused_with_what_fits(tmp_path: Path, small_machine: int) -> None:
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(n_hypotheses=10**8, chunk_size=10**8)
    spec["spaces"] = [{"name": "mlp", "kind": "mlp", "width": 512, "depth": 2,
                       "optimizer": {"kind": "adam", "lr": 0.01, "epochs": 1,
                                     "batch_size": "full"}}]
    output = assert_refused(tmp_path, write_spec(tmp_path, spec), "chunk_size = 100000000",
                            "per hypothesis", "16 GiB", "Lower budget.chunk_size to at most")
    fits = int(output.split("at most ")[1].split()[0])
    assert 100 < fits < 10**6


def test_one_enormous_network_refused(tmp_path: Path, small_machine: int) -> None:
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(n_hypotheses=10, chunk_size=10)
    spec["spaces"] = [{"name": "mlp", "kind": "mlp", "width": 10**6, "depth": 3,
                       "optimizer": {"kind": "sgd", "lr": 0.01, "epochs": 1, "batch_size": 8}}]
    assert_refused(tmp_path, write_spec(tmp_path, spec), "Even one hypothesis does not fit")


def test_gp_chunk_refused(tmp_path: Path, small_machine: int) -> None:
    make_npz(tmp_path / "toy.npz", n_test=400, n_classes=10)
    spec = write_spec(tmp_path, spec_dict(n_test=400, n_hypotheses=10**8, chunk_size=10**8))
    assert_refused(tmp_path, spec, "gp space", "12 bytes x n_test x k", "16 GiB")


def test_npz_huge_label_refused(tmp_path: Path, small_machine: int) -> None:
    make_npz(tmp_path / "toy.npz")
    with np.load(tmp_path / "toy.npz") as npz:
        arrays = dict(npz)
    arrays["y_train"] = arrays["y_train"].astype(np.int64)
    arrays["y_train"][0] = 10**12
    np.savez(tmp_path / "toy.npz", **arrays)
    spec = write_spec(tmp_path, spec_dict())
    assert_refused(tmp_path, spec, "largest label 1000000000000", "16 GiB", "renumber")


def test_real_machine_memory_is_known() -> None:
    assert memory.machine_memory_bytes() > GIB


def test_examples_fit_on_this_machine(tmp_path: Path) -> None:
    make_npz(tmp_path / "toy.npz")
    code, output, _ = run_cli(tmp_path, "plan", str(write_spec(tmp_path, spec_dict())))
    assert code == 0, output


def test_splitting_level_refused_with_what_fits(tmp_path: Path, small_machine: int) -> None:
    """A splitting level holds every particle's noise (n_test k normals for a gp) a few times:
    a million particles of a 400 x 10 gp's noise are refused with the number that fits."""
    make_npz(tmp_path / "toy.npz", n_test=400, n_classes=10)
    spec = spec_dict(n_test=400)
    spec["budgets"][0]["splitting"] = {"particles": 10**6, "max_evaluations": 10**7,
                                      "target_bits": 20}
    output = assert_refused(tmp_path, write_spec(tmp_path, spec), "particles = 1000000",
                            "noise_dim = 4000", "16 GiB",
                            "Lower budget.splitting.particles to at most")
    fits = int(output.split("at most ")[1].split()[0])
    # half of 16 GiB over 32 bytes x 4000 normals (+ one evaluation's 48 KB): about 45 000
    assert 40_000 < fits < 70_000
    spec["budgets"][0]["splitting"]["particles"] = fits
    code, out, _ = run_cli(tmp_path, "validate", str(write_spec(tmp_path, spec)))
    assert code == 0, out
