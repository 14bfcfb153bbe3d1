"""Shared fixtures: small tasks with known structure, spec files, and a store per test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ibdb.stats.genchi2 import GenChi2


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
    from ibdb.store.database import Store

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


# The README's fenced blocks (tests/test_readme.py claims each one; tests/test_packaging.py runs
# the install block and the notebook block in a fresh virtual environment).
README = Path(__file__).resolve().parents[1] / "README.md"


class ReadmeBlock:
    """One fenced block of README.md: its language, its text and the line of its opening fence;
    ``key`` (the language and first non-blank line) is how tests claim it."""

    def __init__(self, lang: str, text: str, line: int) -> None:
        self.lang, self.text, self.line = lang, text, line
        first = next((t for t in text.splitlines() if t.strip()), "")
        self.key = (lang, first.strip())

    def __repr__(self) -> str:
        return f"README.md:{self.line} ```{self.lang} {self.key[1]!r}"


def readme_blocks(path: Path = README) -> list[ReadmeBlock]:
    """Every fenced block (``` at the start of a line) of the README, in order."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number, []
            else:
                blocks.append(ReadmeBlock(lang, "\n".join(body) + "\n", start))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md:{start}: a fenced block is never closed"
    return blocks


def readme_block(lang: str, first_line: str) -> ReadmeBlock:
    """The one README block in ``lang`` whose first non-blank line is ``first_line``."""
    found = [b for b in readme_blocks() if b.key == (lang, first_line)]
    assert len(found) == 1, f"README.md has {len(found)} ```{lang} blocks starting {first_line!r}"
    return found[0]


def quickstart_table(output: str, header: str) -> str:
    """The part of `ibdb quickstart`'s output that the README's ```text block shows: from the
    run's header line through the last row of its table."""
    assert header in output, f"{header!r} not in the output:\n{output}"
    lines = output[output.index(header):].splitlines()
    end = next((i for i, t in enumerate(lines) if i > 2 and not t.strip()), len(lines))
    return "\n".join(lines[:end]).rstrip() + "\n"


def interrupt_gp_sampling(monkeypatch: pytest.MonkeyPatch, at_chunk: int = 3) -> None:
    """Make the gp runner raise KeyboardInterrupt (as Ctrl-C would) when asked for its
    ``at_chunk``-th chunk; the chunks before it are sampled and written as usual."""
    from ibdb.runners import gp as gp_module

    real_sample = gp_module.GPRunner.sample
    calls = {"n": 0}

    def interrupted(self, ids, seeds):
        calls["n"] += 1
        if calls["n"] == at_chunk:
            raise KeyboardInterrupt
        return real_sample(self, ids, seeds)

    monkeypatch.setattr(gp_module.GPRunner, "sample", interrupted)
