"""The report's own data model: what a report shows, read from the store by
:func:`ibdb.report.collect.collect`, drawn by :mod:`ibdb.report.figures` and written out by
:mod:`ibdb.report.writer` and :mod:`ibdb.report.markdown`. Plain arrays and dataclasses: nothing
here reads the store or draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ibdb.core.columns import LOSS_UNITS
from ibdb.core.errors import IbdbError

LOSS_TEXT = LOSS_UNITS
LOSS_SHORT = {"test_mse": "test MSE", "test_error": "test 0-1 error"}
# How a gp run whose posterior mean misses a training target (runs.runner_info 'interpolates'
# false) is marked wherever the report shows it: its hypotheses do not fit the training set, so
# its bits are not -log2 P[loss <= eps | fits the training data].
NOT_INTERPOLATING = "does not interpolate"
NOT_OF_DEFINITION = "estimates are not of the definition"
SHORT_ID_LENGTH = 8  # hex digits of a run id shown beside a label that two runs share


class ReportError(IbdbError):
    """A report cannot be made (no such run, nothing stored, matplotlib missing)."""


@dataclass(frozen=True)
class RunInfo:
    """One row of the run summary table."""

    run_id: str
    label: str
    space_kind: str
    n_train: int | None
    n_test: int | None
    n_outputs: int | None
    n_stored: int
    n_not_fitted: int
    mean_loss: float | None
    min_loss: float | None
    wall_seconds: float | None
    spec: dict[str, Any]
    # gp and network runs (None for others): the expected test MSE of a hypothesis = the mean's
    # test MSE + the spread around it; whether the posterior mean interpolates the training
    # targets and its largest training residual. None where not recorded (runs older than the
    # check): such a run is not reported as one that does not interpolate.
    test_mse_of_mean: float | None = None
    test_mse_spread: float | None = None
    interpolates: bool | None = None
    interp_error: float | None = None

    @property
    def flag(self) -> str | None:
        """'does not interpolate, residual 0.667' for a gp run recorded as not interpolating its
        training data; None otherwise (interpolating, not recorded, or not a gp run)."""
        if self.interpolates is not False:
            return None
        if self.interp_error is None:
            return NOT_INTERPOLATING
        return f"{NOT_INTERPOLATING}, residual {self.interp_error:.3g}"


@dataclass(frozen=True)
class Curve:
    """One method's stored IB-vs-eps points for one run (bits; NaN where a row has none)."""

    run_id: str
    method: str
    eps: np.ndarray
    bits: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    bound: tuple[str, ...]  # per point: 'point', 'lower' or 'upper'
    stale: np.ndarray


@dataclass(frozen=True)
class Density:
    """A density of the loss drawn over the histogram: ``y`` (per unit loss) at ``x``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    closed_form: bool = False  # the exact law (drawn thin, on top), not a fitted model


@dataclass(frozen=True)
class LossPanel:
    """What the loss histogram of one run shows."""

    run_id: str
    loss: str
    values: np.ndarray  # the losses of hypotheses that fit, by hypothesis id
    counts: np.ndarray  # histogram counts over `edges`
    edges: np.ndarray
    densities: list[Density]
    eps: np.ndarray  # the eps of the run's stored estimates (else the spec's)


@dataclass(frozen=True)
class SweepSeries:
    """One space's runs along the swept field: IB at each shared eps against the field."""

    space: str  # the space's name ('' when the runs share one space)
    run_ids: list[str]
    x: np.ndarray  # the field's value per run, ascending
    bits: dict[tuple[str, float], np.ndarray]  # (method, eps) -> bits per run
    bound: dict[tuple[str, float], tuple[str, ...]]
    flags: tuple[str | None, ...] = ()  # per run: RunInfo.flag (marked on the figure)


@dataclass(frozen=True)
class Sweep:
    """Runs that differ in one numeric spec field (within each space, when they differ in the
    space too): e.g. IB against n_train, or against a task's dimension, per space."""

    field: str  # dotted path in the spec, e.g. 'task.n_train'
    series: list[SweepSeries]


@dataclass
class ReportData:
    """Everything a report shows, read from the store by :func:`collect`."""

    loss: str
    runs: list[RunInfo]
    curves: dict[str, list[Curve]]
    panels: dict[str, LossPanel]
    sweep: Sweep | None
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> dict[str, str]:
        """run_id -> the name figures and captions show (:func:`run_names`)."""
        return run_names(self.runs)

    def info(self, run_id: str) -> RunInfo:
        return next(r for r in self.runs if r.run_id == run_id)


def run_names(runs: list[RunInfo]) -> dict[str, str]:
    """run_id -> its label, e.g. 'quickstart/digits-300/rbf-gp'; where several runs share a
    label, each with the short id that tells them apart: 'quickstart/digits-300/rbf-gp
    (1a2b3c4d)' (longer where the first digits of two ids agree)."""
    by_label: dict[str, list[str]] = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r.run_id)
    names = {}
    for label, ids in by_label.items():
        if len(set(ids)) == 1:
            names[ids[0]] = label
            continue
        n = SHORT_ID_LENGTH
        while n < max(map(len, ids)) and len({i[:n] for i in ids}) < len(set(ids)):
            n += 1
        names.update({i: f"{label} ({i[:n]})" for i in ids})
    return names


@dataclass
class Report:
    """The files written and the data behind them."""

    out_dir: Path
    markdown: Path
    figures: dict[str, Path]  # figure key -> PNG path
    data: ReportData

    @property
    def files(self) -> list[Path]:
        return [self.markdown, *self.figures.values()]


def missed_by(info: RunInfo) -> str:
    """' (its posterior mean misses a training target by 0.667)', or '' where not recorded."""
    if info.interp_error is None:
        return ""
    return f" (its posterior mean misses a training target by {info.interp_error:.3g})"
