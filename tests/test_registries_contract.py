"""Every kind that varies has one registry, and a toy entry added to it (and nothing else)
reaches spec validation, the JSON Schema, `ibdb validate` and a run: a task source, a kernel, a
hypothesis space with its runner, and an estimation method.

Each toy also has a known answer, checked against an oracle of its own (numpy or scipy), so
that a run that silently fell back on a built-in kind would fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from ibdb.api import Ibdb
from ibdb.cli import main
from ibdb.core.estimate import Estimate
from ibdb.core.methods import METHODS, Method
from ibdb.data.task import RawData, TaskData
from ibdb.spec.base import NonNegativeInt, PositiveFloat, PositiveInt
from ibdb.spec.file import experiment_json_schema, load_experiment
from ibdb.spec.kernels import KERNELS, Bandwidth, KernelKind, KernelSpec
from ibdb.spec.sources import SOURCES, SourceKind, SourceSpec, Task
from ibdb.spec.spaces import SPACES, SpaceKind, SpaceSpec

from conftest import write_spec

# -- a toy task source: three Gaussian blobs, generated from a seed ----------------------------


class BlobsSource(SourceSpec):
    """Three Gaussian blobs in 4 dimensions."""

    kind: Literal["toy-blobs"]
    n_points: PositiveInt = 120
    seed: NonNegativeInt = 0


def read_blobs(task: Task, source: BlobsSource, spec_dir: Path) -> RawData:
    rng = np.random.default_rng(source.seed)
    labels = np.arange(source.n_points) % 3
    x = rng.normal(size=(3, 4))[labels] + 0.3 * rng.normal(size=(source.n_points, 4))
    fingerprint = "toy-blobs:" + json.dumps(source.identity(), sort_keys=True)
    return RawData(x, labels, None, None, fingerprint, None, 3)


BLOBS = SourceKind("toy-blobs", BlobsSource, read_blobs, "three Gaussian blobs")

# -- a toy kernel: the Cauchy kernel 1 / (1 + r^2 / l^2) ---------------------------------------


class CauchyKernel(KernelSpec):
    kind: Literal["toy-cauchy"]
    bandwidth: Bandwidth = 1.0


def cauchy(kernel: CauchyKernel, a: torch.Tensor, b: torch.Tensor, *, bandwidth: float,
           image_shape: Any = None) -> torch.Tensor:
    return 1.0 / (1.0 + torch.cdist(a, b).square() / bandwidth**2)


CAUCHY = KernelKind("toy-cauchy", CauchyKernel, cauchy, "1 / (1 + r^2 / l^2)")

# -- a toy space: outputs that ignore the inputs, N(0, scale^2) per test point and output ------


class NoiseSpace(SpaceSpec):
    kind: Literal["toy-noise"]
    scale: PositiveFloat = 1.0


class NoiseRunner:
    """Hypothesis i predicts scale * Z, Z (m, k) standard normals from its own seed; its test
    MSE is (scale^2 / (m k)) chi'^2(m k, |Y|^2 / scale^2), a generalized chi-squared with
    eigenvalue scale^2 per test point and residuals -Y (the spectrum it hands the store)."""

    kind: ClassVar[str] = "toy-noise"

    def __init__(self, space: NoiseSpace, data: TaskData, *, device: torch.device) -> None:
        self.scale, self.y, self.labels = space.scale, data.y_test, data.labels_test

    @property
    def info(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def spectrum(self) -> dict[str, np.ndarray]:
        return {"eigenvalue": np.full(len(self.y), self.scale**2), "residuals": -self.y}

    def sample(self, hypothesis_ids: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        preds = np.stack([self.scale * np.random.default_rng(int(s)).standard_normal(self.y.shape)
                          for s in seeds])
        return {"test_mse": ((preds - self.y) ** 2).mean(axis=(1, 2)),
                "test_error": (preds.argmax(axis=2) != self.labels).mean(axis=1)}


NOISE = SpaceKind("toy-noise", NoiseSpace, NoiseRunner, "1",
                  sane_space={"name": "sane-noise", "kind": "toy-noise"})

# -- a toy estimation method: the plain sample fraction, in bits --------------------------------


def fraction_estimates(losses: Any, eps: list[float]) -> list[Estimate]:
    x = np.asarray(losses, dtype=np.float64)
    return [Estimate(method="", method_version="", eps=e,
                     bits=float(-np.log2(max(np.mean(x <= e), 1 / (2 * x.size)))),
                     lower_bits=None, upper_bits=None, bound="point", n=int(x.size))
            for e in eps]


FRACTION = Method(name="toy_fraction", version="1", reads="losses",
                  function=fraction_estimates, summary="the sample fraction, in bits",
                  default=False)


def _spec(tmp_path: Path, *, source: dict | None = None, space: dict | None = None,
          n: int = 400, name: str = "spec.yaml") -> Path:
    return write_spec(tmp_path, name=name, spec={
        "name": "toys",
        "tasks": [{"name": "t", "source": source or {"kind": "digits"}, "n_train": 60,
                   "n_test": 40, "eps": [1.2, 1.0, 0.8]}],
        "spaces": [space or {"name": "rbf", "kind": "gp", "kernel": {"kind": "rbf"}}],
        "budgets": [{"name": "b", "n_hypotheses": n, "chunk_size": 200}]})


def _members(schema: dict, where: str) -> set[str]:
    """The kinds the JSON Schema's union at <model>.<field> admits (Experiment: the root)."""
    model, field = where.split(".")
    node = schema if model == "Experiment" else schema["$defs"][model]
    union = node["properties"][field]
    union = union.get("items", union)
    kinds = set()
    for member in union["oneOf"]:
        if "$ref" in member:
            member = schema["$defs"][member["$ref"].rsplit("/", 1)[1]]
        kind = member["properties"]["kind"]
        kinds |= {kind["const"]} if "const" in kind else set(kind["enum"])
    return kinds


def _validate_and_run(tmp_path: Path, spec: Path) -> tuple[str, Ibdb]:
    db = tmp_path / "toys.duckdb"
    got = CliRunner().invoke(main, ["--db", str(db), "validate", str(spec)])
    assert got.exit_code == 0, got.output
    run_id = got.output.splitlines()[1].split()[0]
    got = CliRunner().invoke(main, ["--db", str(db), "run", str(spec)])
    assert got.exit_code == 0, got.output
    return run_id, Ibdb(db)


def test_a_toy_task_source_validates_appears_in_the_schema_and_runs(tmp_path):
    spec = _spec(tmp_path, source={"kind": "toy-blobs", "n_points": 150, "seed": 3})
    with pytest.raises(Exception, match="toy-blobs"):
        load_experiment(spec)  # not registered: refused, naming the kind
    with SOURCES.added(BLOBS):
        assert load_experiment(spec).tasks[0].source == BlobsSource(kind="toy-blobs",
                                                                    n_points=150, seed=3)
        assert "toy-blobs" in _members(experiment_json_schema(), "Task.source")
        run_id, api = _validate_and_run(tmp_path, spec)
        _, rows = api.sql(f"SELECT count(*), min(test_mse) FROM losses WHERE run_id = "
                          f"'{run_id}'")
        assert rows[0][0] == 400 and rows[0][1] > 0
        _, facts = api.sql(f"SELECT data_fingerprint FROM runs WHERE run_id = '{run_id}'")
        assert facts[0][0].startswith("toy-blobs:")
        # the data the run used are the reader's: 60 of its points train, 40 others test
        data = api.plan(spec)[0].data
        pool = read_blobs(None, BlobsSource(kind="toy-blobs", n_points=150, seed=3),
                          tmp_path).x_train
        used = {tuple(r) for r in data.x_train} | {tuple(r) for r in data.x_test}
        assert len(used) == 100 and used <= {tuple(r) for r in pool}
    assert "toy-blobs" not in SOURCES


def test_a_toy_kernel_validates_appears_in_the_schema_and_runs(tmp_path):
    spec = _spec(tmp_path, space={"name": "cauchy", "kind": "gp",
                                  "kernel": {"kind": "toy-cauchy", "bandwidth": "median"}})
    with KERNELS.added(CAUCHY):
        space = load_experiment(spec).spaces[0]
        assert space.kernel == CauchyKernel(kind="toy-cauchy", bandwidth="median")
        assert "toy-cauchy" in _members(experiment_json_schema(), "GPSpace.kernel")
        # the flat spelling reads the same
        flat = load_experiment(_spec(tmp_path, space={"name": "cauchy", "kind": "gp",
                                                      "kernel": "toy-cauchy"},
                                     name="flat.yaml")).spaces[0]
        assert flat.kernel == CauchyKernel(kind="toy-cauchy")
        run_id, api = _validate_and_run(tmp_path, spec)
        planned = api.plan(spec)[0]
        assert not len(planned.missing_ids)
        # the posterior mean is the Cauchy kernel's, computed here in numpy
        runner = _runner(planned)
        info = runner.info
        assert info["kernel"] == "toy-cauchy" and info["bandwidth_rule"] == "median"
        data, bw = planned.data, info["bandwidth"]

        def k(a, b):
            d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
            return 1.0 / (1.0 + d2 / bw**2)

        gram = k(data.x_train, data.x_train) + 1e-8 * np.eye(len(data.x_train))
        mean = k(data.x_test, data.x_train) @ np.linalg.solve(gram, data.y_train)
        np.testing.assert_allclose(runner.mean.numpy(), mean, atol=1e-8)
        _, rows = api.sql(f"SELECT count(*) FROM estimates WHERE run_id = '{run_id}' AND "
                          "method = 'exact'")
        assert rows[0][0] == 3


def _runner(planned):
    from ibdb.runners import load_runner

    return load_runner(planned.spec.space.kind)(planned.spec.space, planned.data,
                                                device=torch.device("cpu"))


def test_a_toy_space_and_runner_validate_appear_in_the_schema_and_run(tmp_path):
    spec = _spec(tmp_path, space={"name": "noise", "kind": "toy-noise", "scale": 0.5}, n=2000)
    with SPACES.added(NOISE):
        assert load_experiment(spec).spaces[0] == NoiseSpace(name="noise", kind="toy-noise",
                                                            scale=0.5)
        assert "toy-noise" in _members(experiment_json_schema(), "Experiment.spaces")
        run_id, api = _validate_and_run(tmp_path, spec)
        rows = dict(((m, e), b) for m, e, b in api.sql(
            f"SELECT method, eps, bits FROM estimates WHERE run_id = '{run_id}'")[1])
    # the exact law, from scipy: m k L / s^2 ~ ncx2(m k, |Y|^2 / s^2) with |Y|^2 = m
    m, k, s2 = 40, 10, 0.25
    for eps in (1.2, 1.0, 0.8):
        truth = -stats.ncx2.logcdf(eps * m * k / s2, m * k, m / s2) / np.log(2)
        assert rows[("exact", eps)] == pytest.approx(truth, rel=1e-3, abs=1e-3)
    # and the samples agree with it where they resolve it (2000 samples: a few bits)
    assert abs(rows[("empirical", 1.2)] - rows[("exact", 1.2)]) < 0.5


def test_a_toy_method_is_asked_for_by_name_in_the_cli_and_in_sql(tmp_path):
    spec = _spec(tmp_path, n=300)
    db = tmp_path / "m.duckdb"
    assert CliRunner().invoke(main, ["--db", str(db), "run", str(spec)]).exit_code == 0
    with METHODS.added(FRACTION):
        got = CliRunner().invoke(main, ["--db", str(db), "estimate", "--method", "toy_fraction",
                                        "--eps", "1.0"])
        assert got.exit_code == 0, got.output
        api = Ibdb(db)
        _, in_sql = api.sql("SELECT ib_fit(list(test_mse), 1.0, 'toy_fraction').bits "
                            "FROM losses")
        _, stored = api.sql("SELECT bits FROM estimates WHERE method = 'toy_fraction'")
        _, losses = api.sql("SELECT test_mse FROM losses")
    truth = -np.log2(np.mean(np.array([r[0] for r in losses]) <= 1.0))
    assert 0 < truth < 8
    assert in_sql[0][0] == pytest.approx(truth) and stored[0][0] == pytest.approx(truth)
