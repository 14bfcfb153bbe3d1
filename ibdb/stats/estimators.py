"""Estimators of inductive bias, I(eps) = -log2 P[L <= eps], producing estimate rows.

Estimates are rows, never bare floats: each :class:`Estimate` carries its method and version,
eps, the value in bits, an interval where one exists, the sample size, the fit parameters and
diagnostics. The methods themselves are declared in :mod:`ibdb.core.methods` (the registry: name,
version, input, default, interval); this module holds their functions, each called as
``function(source, eps, **options)``:

- ``ncx2``: the paper's model done properly: a maximum-likelihood scaled non-central
  chi-squared (location 0) fitted once and read at every eps in log space
  (:mod:`ibdb.stats.ncx2fit`), with a bootstrap interval (:mod:`ibdb.stats.bootstrap`) and goodness
  of fit.
- ``paper``: the published procedure as written (scipy's fit, natural-log CDF, Sankaran's
  normal approximation when the CDF underflows), converted to bits (:mod:`ibdb.stats.paper`).
- ``empirical``: the fraction k/n of losses <= eps with an exact Clopper-Pearson interval;
  with k = 0 only a lower bound on the bits exists.
- ``exact``: a kernel space's loss is a generalised chi-squared, whose CDF is computed
  without sampling (:mod:`ibdb.stats.genchi2`); optionally checked by importance sampling.
- ``bound``: the ICML 2023 upper bound on inductive-bias complexity from task statistics
  (:mod:`ibdb.stats.bound`); a comparison, not an estimate of the sampled space.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special, stats

from ibdb.core.errors import EstimateError, shorten
from ibdb.core.estimate import Estimate, check_eps
from ibdb.core.methods import METHODS
from ibdb.stats.bootstrap import ncx2_bits_interval
from ibdb.stats.bound import TaskStatistics, bound_bits
from ibdb.stats.diagnostics import eps_position, goodness_of_fit
from ibdb.stats.genchi2 import GenChi2
from ibdb.stats.ncx2cdf import HUGE_DF, ncx2_logcdf_many
from ibdb.stats.ncx2fit import MIN_LOSSES, fit_scaled_ncx2
from ibdb.stats.paper import paper_fit, paper_neg_log_cdf_nats
from ibdb.stats.spectrum import gp_loss_distribution

__all__ = [
    "bound_estimates",
    "empirical_estimates",
    "estimate_bound",
    "estimate_exact",
    "estimate_losses",
    "exact_estimates",
    "ncx2_estimates",
    "paper_estimates",
]

_LN2 = math.log(2.0)
_Z95 = 1.959963984540054


def _bits(log_p: float) -> float:
    """-log2 of a probability given as a natural log; +0.0 rather than -0.0 at P = 1."""
    return 0.0 - log_p / _LN2


def _sorted_finite(losses: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
    """The finite losses, sorted, and how many were not finite (failed hypotheses)."""
    raw = np.asarray(losses, dtype=np.float64).ravel()
    finite = np.isfinite(raw)
    x = np.sort(raw[finite])
    n_excluded = int(raw.size - x.size)
    if x.size == 0:
        raise EstimateError(
            f"no finite losses to estimate from ({raw.size} given, {n_excluded} non-finite); "
            "check that the runs produced losses."
        )
    if x[0] < 0:
        raise EstimateError(
            f"losses include a negative value, {float(x[0])!r}; losses here are >= 0. Check "
            "the loss column that was passed."
        )
    return x, n_excluded


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise EstimateError(f"confidence must lie in (0, 1), got {confidence!r}; e.g. 0.95.")
    return confidence


def _fittable(losses: Sequence[float] | np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """Sorted finite losses a 3-parameter continuous model can be fitted to."""
    x, n_excluded = _sorted_finite(losses)
    if x.size < MIN_LOSSES:
        raise EstimateError(
            f"{what}: refusing to fit a 3-parameter model to {x.size} finite losses (fewer "
            f"than {MIN_LOSSES}); sample more hypotheses, or use the empirical method."
        )
    if x[0] == x[-1]:
        raise EstimateError(
            f"{what}: all {x.size} losses equal {float(x[0])!r}, so no continuous model fits; "
            "the empirical method gives 0 bits at eps >= that value and a lower bound below it."
        )
    return x, n_excluded


def estimate_losses(
    losses: Sequence[float] | np.ndarray,
    eps: Sequence[float] | float,
    method: str,
    *,
    confidence: float = 0.95,
    interval: bool = True,
    seed: int = 0,
) -> list[Estimate]:
    """Estimates of I(eps) in bits from sampled test losses by any registered method that
    reads losses, one per eps, in eps order.

    Non-finite losses (NaN, inf: failed hypotheses) are excluded and counted in
    diagnostics['n_excluded_nonfinite']. ``confidence`` is the level of every interval;
    ``interval=False`` skips the ncx2 bootstrap; ``seed`` makes the bootstrap repeatable.
    """
    chosen = METHODS.get(method)
    if chosen.reads != "losses":
        raise EstimateError(
            f"method {method!r} reads the {chosen.reads.replace('_', ' ')}, not sampled losses;"
            f" the methods that estimate from losses are "
            f"{', '.join(m.name for m in METHODS.reading('losses'))}."
        )
    return chosen.estimate(losses, check_eps(eps), confidence=confidence, interval=interval,
                           seed=seed)


def ncx2_estimates(losses: Sequence[float] | np.ndarray, eps: Sequence[float] | float, *,
                   confidence: float = 0.95, interval: bool = True, seed: int = 0
                   ) -> list[Estimate]:
    """The ``ncx2`` method: a maximum-likelihood scaled ncx2 read at each eps."""
    eps_list, confidence = check_eps(eps), _check_confidence(confidence)
    x, n_excluded = _fittable(losses, "ncx2")
    return _estimate_ncx2(x, eps_list, n_excluded, confidence, interval, seed)


def paper_estimates(losses: Sequence[float] | np.ndarray, eps: Sequence[float] | float
                    ) -> list[Estimate]:
    """The ``paper`` method: the published procedure (scipy's fit), in bits."""
    eps_list = check_eps(eps)
    x, n_excluded = _fittable(losses, "paper")
    return _estimate_paper(x, eps_list, n_excluded)


def empirical_estimates(losses: Sequence[float] | np.ndarray, eps: Sequence[float] | float, *,
                        confidence: float = 0.95) -> list[Estimate]:
    """The ``empirical`` method: the sample fraction with a Clopper-Pearson interval."""
    eps_list, confidence = check_eps(eps), _check_confidence(confidence)
    x, n_excluded = _sorted_finite(losses)
    return _estimate_empirical(x, eps_list, n_excluded, confidence)


def _estimate_ncx2(x: np.ndarray, eps_list: list[float], n_excluded: int, confidence: float,
                   interval: bool, seed: int) -> list[Estimate]:
    fit = fit_scaled_ncx2(x)
    params = fit.as_params()
    # scipy.special's CDF directly: ~10x faster than scipy.stats' logcdf/logsf wrappers here;
    # for almost-constant losses (df + nc >= HUGE_DF) scipy's series costs seconds per value
    # and the vectorised near-normal path replaces it
    if fit.df + fit.nc >= HUGE_DF:
        log_cdf = ncx2_logcdf_many(x, fit.df, fit.nc, fit.scale)
        with np.errstate(divide="ignore"):
            gof = goodness_of_fit(log_cdf, np.log(-np.expm1(log_cdf)))
    else:
        y = x / fit.scale
        cdf = special.chndtr(y, fit.df, fit.nc) if fit.nc > 0 else special.chdtr(fit.df, y)
        with np.errstate(divide="ignore"):
            gof = goodness_of_fit(np.log(cdf), np.log1p(-cdf))
    bounds = (ncx2_bits_interval(x, fit, eps_list, confidence=confidence, seed=seed)
              if interval else [(None, None)] * len(eps_list))
    # A loss with few distinct values (a 0-1 error on m test points takes at most m + 1) is not
    # continuous: the ncx2 model and its KS test only approximate it, so rows say so.
    distinct = int(np.count_nonzero(np.diff(x))) + 1 if x.size else 0
    discrete = {"discrete_loss": True, "distinct_values": distinct, "note": (
        f"only {distinct} distinct loss values among {x.size}: a discrete loss, so the "
        "continuous ncx2 model and its KS test are approximations")} \
        if x.size and distinct < x.size / 2 else {}
    rows = []
    for e, (lo, hi) in zip(eps_list, bounds, strict=True):
        log_p, how = fit.logcdf_with_method(e)
        rows.append(Estimate(
            method="ncx2", method_version="", eps=e, bits=_bits(log_p),
            lower_bits=lo, upper_bits=hi, bound="point", n=int(x.size), params=dict(params),
            diagnostics={
                "converged": fit.converged,
                "approximation": how,
                "n_excluded_nonfinite": n_excluded,
                "optimizer_message": fit.message,
                "interval": f"bootstrap, {confidence:g}" if interval else "none",
                **gof,
                **eps_position(x, e),
                **discrete,
            },
        ))
    return rows


def _estimate_paper(x: np.ndarray, eps_list: list[float], n_excluded: int) -> list[Estimate]:
    fit = paper_fit(x)
    params = {"df": fit.df, "nc": fit.nc, "scale": fit.scale, "loc": 0.0,
              "loglik": fit.loglik, "fit_seconds": fit.seconds}
    rows = []
    for e in eps_list:
        nats, how = paper_neg_log_cdf_nats(fit, e)
        rows.append(Estimate(
            method="paper", method_version="", eps=e, bits=nats / _LN2,
            lower_bits=None, upper_bits=None, bound="point", n=int(x.size), params=dict(params),
            diagnostics={"approximation": how, "nats": nats, "n_excluded_nonfinite": n_excluded,
                         **eps_position(x, e)},
        ))
    return rows


def _clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided (equal-tailed) Clopper-Pearson interval for a binomial proportion."""
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return lo, hi


def _estimate_empirical(
    x: np.ndarray, eps_list: list[float], n_excluded: int, confidence: float
) -> list[Estimate]:
    n = int(x.size)
    xs = x  # already sorted
    rows = []
    for e in eps_list:
        k = int(np.searchsorted(xs, e, side="right"))  # losses <= eps
        p_lo, p_hi = _clopper_pearson(k, n, confidence)
        diagnostics: dict[str, Any] = {
            "k_below": k,
            "n_excluded_nonfinite": n_excluded,
            "confidence": confidence,
            "interval": "clopper-pearson",
            **eps_position(xs, e),
        }
        # more probability means fewer bits: the upper probability bound gives the lower bits
        lower_bits = _bits(math.log(p_hi))
        if k == 0:
            # No loss reached eps: P can be arbitrarily small, so only a lower bound exists. A
            # one-sided bound at the stated confidence, 1 - (1 - confidence)^(1/n) (the
            # two-sided interval's upper end would be a one-sided (1 + confidence)/2 limit).
            p_hi = -math.expm1(math.log1p(-confidence) / n)
            lower_bits = _bits(math.log(p_hi))
            bits, bound, upper_bits = lower_bits, "lower", None
            diagnostics["interval"] = "clopper-pearson, one-sided"
            diagnostics["note"] = (
                f"no loss <= eps among {n}: bits is the lower bound -log2 of the one-sided "
                f"{confidence:g} upper confidence limit of P, 1 - (1 - {confidence:g})^(1/n)"
            )
        else:
            bits, bound, upper_bits = _bits(math.log(k / n)), "point", _bits(math.log(p_lo))
        rows.append(Estimate(
            method="empirical", method_version="", eps=e, bits=bits,
            lower_bits=lower_bits, upper_bits=upper_bits, bound=bound, n=n,
            params={"k": k, "n": n}, diagnostics=diagnostics,
        ))
    return rows


def exact_estimates(source: GenChi2 | Mapping[str, Any], eps: Sequence[float] | float, *,
                    check: bool = False, check_samples: int = 20000, seed: int = 0
                    ) -> list[Estimate]:
    """The ``exact`` method: I(eps) in bits of a generalised chi-squared loss (a kernel space).

    ``source`` is a :class:`GenChi2`, or a gp run's stored spectrum as a mapping with
    ``eigenvalues``, ``residual_sq``, ``n_test`` and ``n_outputs`` (what the store reads).
    With ``check``, each value is re-estimated by importance sampling from the law tilted at
    the saddlepoint; its estimate and standard error are stored, and the interval is the
    importance-sampling estimate +- 1.96 standard errors.
    """
    dist = _as_genchi2(source)
    eps_list = check_eps(eps)
    params = {
        "n_components": dist.n_components,
        "total_dof": dist.total_dof,
        "mean": dist.mean(),
        "var": dist.var(),
        "offset": dist.offset,
    }
    rows = []
    for e in eps_list:
        bits, how = dist.bits_below_with_method(e)
        # how: "saddlepoint" (Lugannani-Rice-Daniels), "inversion" (a contour integral, where
        # few components dominate), "series" (equal weights) or "boundary"; ibdb.stats.genchi2
        diagnostics: dict[str, Any] = {"approximation": how}
        lower = upper = None
        if check:
            log_p, se_bits = dist.importance_logcdf(e, n=check_samples, seed=seed)
            is_bits = _bits(log_p)
            diagnostics.update({"is_bits": is_bits, "is_stderr_bits": se_bits,
                                "is_samples": check_samples,
                                "interval": "importance sampling +- 1.96 SE"})
            lower, upper = max(is_bits - _Z95 * se_bits, 0.0), is_bits + _Z95 * se_bits
        rows.append(Estimate(
            method="exact", method_version="", eps=e,
            bits=bits, lower_bits=lower, upper_bits=upper, bound="point", n=0,
            params=dict(params), diagnostics=diagnostics,
        ))
    return rows


def _as_genchi2(source: GenChi2 | Mapping[str, Any]) -> GenChi2:
    if isinstance(source, GenChi2):
        return source
    if isinstance(source, Mapping):
        return gp_loss_distribution(np.asarray(source["eigenvalues"], dtype=np.float64),
                                    np.asarray(source["residual_sq"], dtype=np.float64),
                                    n_test=int(source["n_test"]),
                                    n_outputs=int(source["n_outputs"]))
    raise EstimateError(
        f"the exact method needs a GenChi2 distribution or a gp spectrum, got "
        f"{type(source).__name__}; build one with GenChi2.from_arrays(weights, dofs, "
        "noncentralities, offset)."
    )


def bound_estimates(task: TaskStatistics | Mapping[str, Any], eps: Sequence[float] | float
                    ) -> list[Estimate]:
    """The ``bound`` method: the ICML 2023 upper bound on inductive-bias complexity, in bits,
    from task statistics (a :class:`TaskStatistics`, or its stored JSON as a mapping)."""
    if isinstance(task, Mapping):
        # keys a later ibdb may add are ignored; a missing one is named
        names = {f.name for f in dataclasses.fields(TaskStatistics)}
        try:
            task = TaskStatistics(**{k: v for k, v in task.items() if k in names})
        except TypeError as exc:
            raise EstimateError(
                f"task statistics {shorten(repr(dict(task)), 200)} cannot be read ({exc}); run "
                "the spec again into a new store to measure them.") from None
    rows = []
    for e in check_eps(eps):
        bits, parts = bound_bits(task, e)
        rows.append(Estimate(
            method="bound", method_version="", eps=e, bits=bits,
            lower_bits=None, upper_bits=None, bound="upper", n=task.n,
            params={**dataclasses.asdict(task),  # the inputs, stored beside the value
                    **{k: v for k, v in parts.items() if _jsonable(v)}},
            diagnostics={"note": "upper bound for band-limited functions on the data manifold "
                                 "(Boopathy et al., ICML 2023); not an estimate of this space"},
        ))
    return rows


def splitting_estimates(repeats: Sequence[Sequence[Any]], eps: Sequence[float] | float, *,
                        confidence: float = 0.95) -> list[Estimate]:
    """The ``splitting`` method: IB from the stored levels of subset-simulation repeats
    (ibdb.run.splitting). One repeat: its Au-Beck interval; two or more: the mean of their bits
    with a Student-t interval from their spread (honest where Au-Beck's is optimistic). Where
    no particle reaches eps, only a lower bound."""
    from ibdb.stats.subset_simulation import repeats_estimate, splitting_estimate

    eps_list, confidence = check_eps(eps), _check_confidence(confidence)
    runs = [list(r) for r in repeats]
    if not runs or not all(runs):
        raise EstimateError("splitting: no stored levels to estimate from; run the spec's "
                            "splitting block first (ibdb run).")
    per_run = [splitting_estimate(r, eps_list, confidence=confidence) for r in runs]
    evaluations = sum(p.n_evaluations for p in per_run)
    params = {"repeats": len(runs), "levels": [len(r) for r in runs],
              "particles": runs[0][0].n, "evaluations": evaluations,
              "p_fit": [p.p_fit for p in per_run]}
    combined = repeats_estimate(runs, eps_list, confidence=confidence) if len(runs) > 1 \
        else None
    rows = []
    for i, e in enumerate(eps_list):
        single = [p.estimates[i] for p in per_run]
        diagnostics: dict[str, Any] = {
            "status": [s.status for s in single], "level_used": [s.level_used for s in single],
            "se_bits": [s.se_bits for s in single],
            "acceptance": [[a for a in p.acceptance if math.isfinite(a)] for p in per_run],
            "interval": (f"student-t over {len(runs)} repeats, {confidence:g}" if combined
                         else f"au-beck, {confidence:g}")}
        if combined is not None:
            c = combined[i]
            bits, lo, hi, lower = c.bits, c.lo_bits, c.hi_bits, c.lower_bound
        else:
            s = single[0]
            bits, lo, hi, lower = s.bits, s.lo_bits, s.hi_bits, s.lower_bound
        rows.append(Estimate(
            method="splitting", method_version="", eps=e, bits=bits, lower_bits=lo,
            upper_bits=None if lower or not math.isfinite(hi) else hi,
            bound="lower" if lower else "point", n=evaluations, params=dict(params),
            diagnostics=diagnostics))
    return rows


def estimate_exact(dist: GenChi2, eps: Sequence[float] | float, *, check: bool = False,
                   check_samples: int = 20000, seed: int = 0) -> list[Estimate]:
    """The registered ``exact`` method's rows for a :class:`GenChi2` (see exact_estimates)."""
    if not isinstance(dist, GenChi2):
        raise EstimateError(
            f"estimate_exact needs a GenChi2 distribution, got {type(dist).__name__}; build one "
            "with GenChi2.from_arrays(weights, dofs, noncentralities, offset)."
        )
    return METHODS.get("exact").estimate(dist, check_eps(eps), check=check,
                                         check_samples=check_samples, seed=seed)


def estimate_bound(task: TaskStatistics, eps: Sequence[float] | float) -> list[Estimate]:
    """The registered ``bound`` method's rows for task statistics (see bound_estimates)."""
    return METHODS.get("bound").estimate(task, check_eps(eps))


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | bool | int) or (isinstance(value, float)
                                                   and math.isfinite(value))
