"""Which estimates one `ibdb estimate` (or the estimating step of `ibdb run`) computes, and
computing them from the store's rows: the facade (:meth:`ibdb.api.Ibdb.estimate`) validates the
request and stores the rows this returns.

An estimate is a (run, loss, method, eps) row. A call asks for the chosen methods at the chosen
eps (default: the spec's) for each run; with ``refresh`` it also recomputes every *stale*
estimate of those runs (the ``stale_estimates`` view: its loss set changed after it was
computed, e.g. the run gained hypotheses), whatever its loss, method and eps. So after
``ibdb estimate --run ID`` (or ``ibdb run`` of an extended spec) the printed tables show no
stale value and ``ibdb check`` finds none for the run; a stale estimate that cannot be
recomputed (its method no longer registered, or failing on the new samples) is kept, said in
``skipped``, and the printed table marks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ibdb.core.errors import EstimateError
from ibdb.core.estimate import estimate_row
from ibdb.core.methods import METHODS, Method

if TYPE_CHECKING:
    from ibdb.progress import Progress
    from ibdb.store.database import Store

PROGRESS_LABEL = "estimate"


@dataclass
class _Job:
    """One method on one run and loss, at every eps it is asked for (computed in one call)."""

    run_id: str
    loss: str
    method: Method
    eps: list[float]
    asked: bool  # named by the caller (or a stale estimate): say why when it cannot be made
    stale: set[float] = field(default_factory=set)  # the eps of stale estimates it recomputes


def stale_estimates(store: Store, run_ids: list[str]) -> list[tuple[str, str, str, float]]:
    """(run_id, loss, method, eps) of every stale estimate of ``run_ids``."""
    return [tuple(r) for r in store.query(  # type: ignore[misc]
        "SELECT run_id, loss, method, eps FROM stale_estimates WHERE run_id IN "
        "(SELECT unnest($runs)) ORDER BY run_id, loss, method, eps DESC",
        {"runs": list(run_ids)})[1]]


def estimate_runs(store: Store, run_ids: list[str], methods: list[str] | None,
                  eps: list[float] | None, loss: str, *, check_exact: bool = False,
                  refresh: bool = True, progress: Progress | None = None
                  ) -> tuple[list[dict[str, Any]], list[str], int]:
    """Compute the estimates of ``run_ids`` (see the module's docstring); return (rows to
    store, lines saying what was skipped and why, how many rows refresh stale estimates).
    The loss-set digests must be current (``store.refresh_loss_sets``)."""
    chosen = [METHODS.get(m) for m in dict.fromkeys(methods)] if methods \
        else METHODS.defaults()
    facts = {run_id: store.run_facts(run_id) for run_id in run_ids}
    jobs: dict[tuple[str, str, str], _Job] = {}
    for run_id in run_ids:
        grid = list(eps) if eps is not None else list(facts[run_id]["eps"])
        for method in chosen:
            jobs[(run_id, loss, method.name)] = _Job(run_id, loss, method, list(grid),
                                                     asked=bool(methods))
    skipped: list[str] = []
    if refresh:
        for run_id, stale_loss, name, at in stale_estimates(store, run_ids):
            if name not in METHODS:
                skipped.append(f"{run_id} {name}: stale at eps {at:g} ({stale_loss}), but no "
                               f"method {name!r} is registered now; delete the row or register "
                               "the method.")
                continue
            job = jobs.setdefault((run_id, stale_loss, name),
                                  _Job(run_id, stale_loss, METHODS.get(name), [], asked=True))
            if at not in job.eps:
                job.eps.append(at)
            job.stale.add(at)
    digests = store.loss_set_digests(run_ids)
    sources: dict[tuple[str, str, str], Any] = {}
    rows: list[dict[str, Any]] = []
    refreshed = 0
    for done, job in enumerate(jobs.values(), 1):
        key = (job.run_id, job.method.reads, job.loss)
        if key not in sources:
            sources[key] = store.method_source(job.method.reads, job.run_id, job.loss,
                                               facts[job.run_id])
        made = _estimate_job(job, sources[key], facts[job.run_id]["space_kind"], digests,
                             check_exact, skipped)
        rows += made
        refreshed += sum(r["eps"] in job.stale for r in made)
        if progress is not None:
            progress(PROGRESS_LABEL, done, len(jobs))
    return rows, skipped, refreshed


def _estimate_job(job: _Job, source: Any, kind: str, digests: dict[tuple[str, str], str],
                  check_exact: bool, skipped: list[str]) -> list[dict[str, Any]]:
    method, kept = job.method, ""
    if job.stale:
        kept = f"; its stale estimate(s) at eps {', '.join(f'{e:g}' for e in job.stale)} stay"
    if source is None:
        if job.asked:  # asked for explicitly: say why there is none
            why = method.input.missing.format(loss=job.loss, kind=kind)
            skipped.append(f"{job.run_id} {method.name}: {why}{kept}")
        return []
    try:
        estimates = method.estimate(source, job.eps, check=check_exact)
    except EstimateError as exc:
        skipped.append(f"{job.run_id} {method.name}: {exc}{kept}")
        return []
    loss_set = method.loss_set(job.loss)
    digest = digests.get((job.run_id, loss_set), "") if loss_set else ""
    return [estimate_row(e, run_id=job.run_id, loss=job.loss, loss_set=loss_set,
                         loss_set_hash=digest) for e in estimates]
