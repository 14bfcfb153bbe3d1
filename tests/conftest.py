"""Shared fixtures: small tasks with known structure, spec files, and a store per test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ibdb.genchi2 import GenChi2


def make_npz(path: Path, *, n_train: int = 40, n_test: int = 30, n_features: int = 5,
             n_classes: int = 3, seed: int = 0, one_hot: bool = False) -> Path:
    """A small classification problem: class means on a simplex plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, n_features))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % n_classes
        x = centers[labels] + 0.5 * rng.normal(size=(n, n_features))
        return x, labels

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    if one_hot:
        y_train, y_test = np.eye(n_classes)[y_train], np.eye(n_classes)[y_test]
    np.savez(path, X_train=x_train, y_train=y_train, X_test=x_test, y_test=y_test)
    return path


def spec_dict(*, source: dict | None = None, n_train: int = 30, n_test: int = 20,
              n_hypotheses: int = 200, chunk_size: int = 64, eps: list[float] | None = None,
              bandwidth: float | str = 1.5, seed: int = 0, name: str = "tiny") -> dict:
    return {
        "name": name,
        "tasks": [{"name": "toy", "source": source or {"kind": "npz", "path": "toy.npz"},
                   "n_train": n_train, "n_test": n_test, "eps": eps or [0.3, 0.2, 0.1]}],
        "spaces": [{"name": "gp", "kind": "gp", "bandwidth": bandwidth, "jitter": 1e-8}],
        "budgets": [{"name": "b", "n_hypotheses": n_hypotheses, "chunk_size": chunk_size,
                     "seed": seed}],
    }


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def toy_spec(tmp_path: Path) -> Path:
    """A spec over a small npz task that samples in well under a second."""
    make_npz(tmp_path / "toy.npz")
    return write_spec(tmp_path, spec_dict())


@pytest.fixture
def store(tmp_path: Path):
    from ibdb.store import Store

    s = Store.open(tmp_path / "store.duckdb")
    yield s
    s.close()


@pytest.fixture(scope="module")
def mixed() -> GenChi2:
    """Non-integer dofs, some central components, an offset: N ~ 22 degrees of freedom."""
    return GenChi2.from_arrays(
        weights=[0.5, 1.0, 2.0, 0.3, 1.5, 0.8],
        dofs=[0.7, 2.5, 5.0, 1.0, 3.0, 10.0],
        noncentralities=[0.0, 4.0, 1.0, 0.0, 8.0, 2.0],
        offset=0.4,
    )


def mp_cumulants(comps):
    """(K, K', K'') of a generalized chi-squared in mpmath: the cumulant generating function of
    sum_j w_j chi2_{d_j}(nc_j) and its first two derivatives, for ``comps`` = [(w, d, nc)] as
    mpmath numbers (the oracles of tests/test_genchi2*.py)."""
    import mpmath as mp

    def k(t):
        return mp.fsum(-(dj / 2) * mp.log(1 - 2 * t * wj) + cj * wj * t / (1 - 2 * t * wj)
                       for wj, dj, cj in comps)

    def k1(t):
        return mp.fsum(dj * wj / (1 - 2 * t * wj) + cj * wj / (1 - 2 * t * wj) ** 2
                       for wj, dj, cj in comps)

    def k2(t):
        return mp.fsum(2 * dj * wj**2 / (1 - 2 * t * wj) ** 2
                       + 4 * cj * wj**2 / (1 - 2 * t * wj) ** 3 for wj, dj, cj in comps)

    return k, k1, k2
