"""The estimator registry: one declaration per estimation method, and what every other part of
ibdb derives from it.

A :class:`Method` names its function (imported only when an estimate is computed, so that
opening a store or asking ``ibdb --help`` never loads scipy), its version, the input it reads
(a :class:`MethodInput`), whether ``ibdb estimate`` runs it by default, what its interval means and
how reports draw it. The facade, the CLI's ``--method`` choices, the SQL functions, the
``method_agreement`` view's columns, report legends and stale-estimate detection all read this
registry; adding a method is one :class:`Method` here (or one :meth:`MethodRegistry.register`
call) plus its function.

A method's function is called as ``function(source, eps, **options)`` and returns a list of
:class:`ibdb.stats.estimators.Estimate`, one per eps in order; :meth:`Method.estimate` stamps the
method's name and version on each row, so the function need not know them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ibdb.core.columns import LOSS_NAMES
from ibdb.core.errors import EstimateError
from ibdb.core.references import Reference, resolve
from ibdb.core.registry import Registry

if TYPE_CHECKING:
    from ibdb.core.estimate import Estimate

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")  # also a column-name prefix in SQL views


@dataclass(frozen=True)
class MethodInput:
    """An input a method reads from the store."""

    name: str
    losses: tuple[str, ...]  # the losses it exists for
    loss_set: str | None  # which stored loss set an estimate digests: None = never stale;
    # 'loss' = the loss asked for (test_mse, test_error); any other value names a fixed set
    missing: str  # why a run has none of it, with {loss} and {kind} (the run's space kind)

    def loss_set_of(self, loss: str) -> str | None:
        return loss if self.loss_set == "loss" else self.loss_set


INPUTS: dict[str, MethodInput] = {
    "losses": MethodInput("losses", LOSS_NAMES, "loss", "no stored {loss} values"),
    "spectrum": MethodInput("spectrum", ("test_mse",), "spectrum",
                       "no closed-form law for the {loss} of a {kind} run"),
    "levels": MethodInput("levels", ("test_mse",), "levels",
                     "no splitting levels stored for this {kind} run (give its budget a "
                     "splitting block)"),
    # The 2023 bound's eps is a target error rate in the paper (--loss test_error); read with a
    # test MSE it is the same formula at another loss, which ibdb also shows (docs/decisions/0059)
    "task_statistics": MethodInput("task_statistics", LOSS_NAMES, None,
                              "the 2023 bound needs the run's task statistics, which are not "
                              "stored for this run"),
}


@dataclass(frozen=True)
class Method:
    """One estimation method. Bump ``version`` whenever its numbers can change, so that stored
    rows can be told apart."""

    name: str
    version: str
    reads: str  # a key of INPUTS
    function: Reference  # "module:function" (imported on first use) or the function
    summary: str  # one line for help texts
    default: bool = True  # run by `ibdb estimate` / `ibdb run` without --method
    interval: str = "none"  # what lower_bits/upper_bits are (shown in CLI and report legends),
    # or "none"
    role: str = "estimate"  # 'estimate', 'reference' (a closed form the others are compared
    # to), or 'comparison' (not an estimate of the sampled space: reports draw it apart)
    options: tuple[str, ...] = ()  # keyword options the function accepts
    may_be_lower_bound: bool = False  # some rows are only lower bounds (bound = 'lower')
    yardstick: bool = False  # method_agreement shows every estimating method's difference
    # from it (a reference method always is one)
    density: str | None = None  # how reports draw its fitted density: 'ncx2' (from params
    # df, nc, scale) or 'spectrum' (the stored gp spectrum); None: no density
    density_label: str = ""
    style: tuple[str, str] = ("x", "-")  # matplotlib marker and line style

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"method name {self.name!r}: lowercase letters, digits and _ only")
        if self.reads not in INPUTS:
            raise ValueError(f"method {self.name!r} reads {self.reads!r}; sources: "
                             f"{', '.join(INPUTS)}")
        if self.role not in ("estimate", "reference", "comparison"):
            raise ValueError(f"method {self.name!r}: unknown role {self.role!r}")

    @property
    def input(self) -> MethodInput:
        return INPUTS[self.reads]

    def applies_to(self, loss: str) -> bool:
        return loss in self.input.losses

    def loss_set(self, loss: str) -> str | None:
        """The stored loss set an estimate of ``loss`` is computed from (None: never stale)."""
        return self.input.loss_set_of(loss)

    def load(self) -> Callable[..., list[Estimate]]:
        return resolve(self.function)

    def estimate(self, source: Any, eps: list[float], **options: Any) -> list[Estimate]:
        """Rows of this method at each eps; options it does not take are ignored."""
        taken = {k: v for k, v in options.items() if k in self.options and v is not None}
        rows = self.load()(source, eps, **taken)
        return [dataclasses.replace(r, method=self.name, method_version=self.version)
                for r in rows]


class MethodRegistry(Registry[Method]):
    """Methods by name, in the order reports list them."""

    def __init__(self, methods: list[Method]) -> None:
        super().__init__(methods, key=lambda m: m.name, unknown=_unknown_method)

    def names(self) -> tuple[str, ...]:
        return self.keys()

    def defaults(self) -> list[Method]:
        return [m for m in self if m.default]

    def reading(self, source: str) -> list[Method]:
        return [m for m in self if m.reads == source]

    def interval_legend(self, names: list[str]) -> str:
        """What the intervals of the named methods are, for a table's legend."""
        return "; ".join(f"{m.name}: {m.interval}" for m in self
                         if m.name in names and m.interval != "none")

    def reference(self) -> Method | None:
        return next((m for m in self if m.role == "reference"), None)

    def yardsticks(self) -> list[Method]:
        """The methods others are compared with: references first, then the yardsticks."""
        return sorted((m for m in self if m.role == "reference" or m.yardstick),
                      key=lambda m: m.role != "reference")


def _unknown_method(name: str, known: tuple[str, ...]) -> EstimateError:
    return EstimateError(f"unknown estimation method {name!r}; the known methods are "
                         f"{', '.join(known)}.")


METHODS = MethodRegistry([
    Method(
        name="exact", version="3", reads="spectrum", role="reference",  # 3: inversion fallback
        function="ibdb.stats.estimators:exact_estimates", options=("check", "check_samples",
        "seed"),
        interval="importance sampling +- 1.96 SE (with --check-exact)",
        summary="the generalized chi-squared law of a gp run's test MSE, from its spectrum "
                "(log-space saddlepoint)",
        density="spectrum", density_label="exact (generalized chi-squared, from the spectrum)",
        style=("o", "-"),
    ),
    Method(
        name="ncx2", version="2", reads="losses", function="ibdb.stats.estimators:ncx2_estimates",
        options=("confidence", "interval", "seed"),
        interval="bootstrap: sampling error only, not the misfit of the ncx2 model",
        summary="maximum-likelihood scaled non-central chi-squared (the paper's model), "
                "bootstrap interval",
        density="ncx2", density_label="ncx2 ML fit", style=("s", "--"),
    ),
    Method(
        name="paper", version="1", reads="losses", default=False,
        function="ibdb.stats.estimators:paper_estimates",
        summary="the published procedure: scipy's ncx2.fit(floc=0), Sankaran's approximation "
                "on underflow (slow: only on request)",
        density="ncx2", density_label="paper's fit (scipy)", style=("D", ":"),
    ),
    Method(
        name="empirical", version="3", reads="losses",  # 3: one-sided lower bounds
        function="ibdb.stats.estimators:empirical_estimates", options=("confidence",),
        interval="Clopper-Pearson, exact for the sample fraction; one-sided where no sample "
                 "reaches eps", may_be_lower_bound=True,
        summary="-log2 of the fraction of samples <= eps, exact (Clopper-Pearson) interval",
        style=("^", "-."),
    ),
    Method(
        name="splitting", version="1", reads="levels",
        function="ibdb.stats.estimators:splitting_estimates", options=("confidence",),
        interval="Au-Beck for one repeat (optimistic past ~20 bits), Student t over "
                 "independent repeats", may_be_lower_bound=True, yardstick=True,
        summary="subset simulation over the runner's noise (rare-event sampling), from the "
                "stored levels",
        style=("*", "-"),
    ),
    Method(
        name="bound", version="1", reads="task_statistics", role="comparison",
        function="ibdb.stats.estimators:bound_estimates",
        summary="the ICML 2023 upper bound from task statistics (not an estimate of the space)",
        style=("v", ":"),
    ),
])
