"""The generalised chi-squared distribution and its log-space CDF.

    L = offset + sum_j w_j * chi2'(dof_j, nc_j),    w_j > 0, dof_j > 0, nc_j >= 0, offset >= 0

This is the exact law of a kernel (Gaussian-process) space's test loss (REFERENCE.md section 2).
Its left tail, P[L <= x], is what inductive bias measures, and it is wanted far below the smallest
double (10^5 bits is P ~ 10^-30000), so everything is computed as a logarithm.

Methods (:meth:`GenChi2.logcdf_with_method` says which gave a value): the Lugannani-Rice
saddlepoint approximation with Daniels' second-order correction, where many degrees of freedom
carry the law at x (real spectra); the exact inversion integral of
:mod:`ibdb.stats.genchi2_inversion`
where few do (a dominant weight, weights spread over decades), where the saddlepoint's error
reached 0.16 bits; the exact Poisson-gamma series when all weights are equal. This module solves
the saddlepoint equation for many components; the formulas evaluated at the root, and the series,
are those of :mod:`ibdb.stats.ncx2cdf`, shared with the ncx2 fit and its bootstrap. Conventions: the
cumulant generating function K(t) of this module is that of L itself, offset included
(K'(0) = E[L]); internally everything is computed for L - offset and x - offset, so that deep in
the tail no precision is lost to the offset.

Left of the mean the saddlepoint s is negative and unbounded; it is parametrised as
s = -exp(tau), and every per-component quantity is written through the logistic function of
a_j = tau + log(2 w_j), so that nothing overflows or cancels even when |s| exceeds 1e300.
:meth:`GenChi2.importance_logcdf` (module ``ibdb.stats.tilting``) is an independent Monte Carlo
check
that keeps its precision however deep the tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from ibdb.core.errors import EstimateError
from ibdb.stats.genchi2_inversion import inversion_logcdf, needs_inversion, tilt
from ibdb.stats.ncx2cdf import (
    daniels_correction,
    left_tail_terms,
    lugannani_rice_logcdf,
    ncx2_logcdf_poisson,
    v_minus_log1p,
)
from ibdb.stats.tilting import importance_logcdf  # (it imports GenChi2 for type hints only)

__all__ = ["CDF_METHODS", "GenChi2"]

# What GenChi2.logcdf_with_method reports (see there).
CDF_METHODS = ("saddlepoint", "inversion", "series", "boundary")

_LN2 = math.log(2.0)

# Lugannani-Rice's correction terms (1/w - 1/u and Daniels' terms) are 0/0 at the mean. Inside
# |w| < _NEAR_MEAN_W they are interpolated (in s) between their values at the edges, where
# the direct formula is still accurate: the cancellation loses ~1e-16/_NEAR_MEAN_W^3 of a
# correction that is itself O(1/N), and the interpolation error is O(_NEAR_MEAN_W^2).
_NEAR_MEAN_W = 2e-3
# Below this standardised distance from the mean the saddlepoint equation is not solved: its
# linearisation s = (x - mean) / var is exact to O(z^2) ~ 1e-18 there, whereas solving it would
# fight the rounding of K'(s) (which equals the mean to ~1e-16 relative near s = 0).
_AT_MEAN_Z = 1e-9


@dataclass(frozen=True, eq=False)
class _Terms:
    """Saddlepoint quantities at one s."""

    s: float  # -inf once s < -1e304 (only its sign, and its value near 0, are used)
    u: float  # s * sqrt(K''(s))
    half_w2: float  # s K'(s) - K(s) >= 0: a sum of non-negative terms, so no cancellation
    resid: float  # s (x - K'(s)) for the target x; 0 at the exact root
    rho3: float  # K'''(s) / K''(s)^(3/2)
    rho4: float  # K''''(s) / K''(s)^2


@dataclass(frozen=True, eq=False)
class GenChi2:
    """L = offset + sum_j weights[j] * chi2'(dofs[j], noncentralities[j]).

    Build it with :meth:`from_arrays`, which validates and drops zero-weight components.
    Instances are immutable; the arrays are read-only float64.
    """

    weights: np.ndarray
    dofs: np.ndarray
    noncentralities: np.ndarray
    offset: float = 0.0

    def __post_init__(self) -> None:
        # Direct construction gets the invariants checked too (from_arrays gives the detailed
        # messages); the arrays are frozen as read-only float64 copies.
        arrays = []
        for name in ("weights", "dofs", "noncentralities"):
            a = np.array(getattr(self, name), dtype=np.float64)
            a.setflags(write=False)
            object.__setattr__(self, name, a)
            arrays.append(a)
        w, d, nc = arrays
        off = float(self.offset)
        object.__setattr__(self, "offset", off)
        ok = (
            w.ndim == 1 and d.shape == w.shape and nc.shape == w.shape
            and bool(np.all(np.isfinite(w)) and np.all(np.isfinite(d)) and np.all(np.isfinite(nc)))
            and bool(np.all(w > 0) and np.all(d > 0) and np.all(nc >= 0))
            and math.isfinite(off) and off >= 0 and (w.size > 0 or off > 0)
        )
        if not ok:
            raise EstimateError(
                f"invalid GenChi2 (weights {w!r}, dofs {d!r}, noncentralities {nc!r}, offset "
                f"{off!r}); build it with GenChi2.from_arrays(...), which says what is wrong."
            )

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        weights: np.ndarray | list[float],
        dofs: np.ndarray | list[float] | float,
        noncentralities: np.ndarray | list[float] | float = 0.0,
        offset: float = 0.0,
    ) -> GenChi2:
        """Validate and build. ``dofs`` and ``noncentralities`` may be scalars (broadcast).

        A component of weight exactly 0 is identically 0 whatever its dof and noncentrality,
        so it is dropped. Negative weights or noncentralities, non-positive dofs, non-finite
        values, a negative offset, or nothing left (no component and offset 0) are errors.
        """
        w = np.atleast_1d(np.asarray(weights, dtype=np.float64))
        if w.ndim != 1:
            raise EstimateError(
                f"weights must be a 1-D array, got shape {w.shape}; pass one weight per component."
            )
        try:
            d = np.broadcast_to(np.asarray(dofs, dtype=np.float64), w.shape)
            nc = np.broadcast_to(np.asarray(noncentralities, dtype=np.float64), w.shape)
        except ValueError:
            raise EstimateError(
                f"dofs (shape {np.shape(dofs)}) and noncentralities (shape "
                f"{np.shape(noncentralities)}) must be scalars or match weights (shape {w.shape})."
            ) from None
        for name, arr in (("weights", w), ("dofs", d), ("noncentralities", nc)):
            bad = ~np.isfinite(arr)
            if bad.any():
                raise EstimateError(
                    f"{name} has {int(bad.sum())} non-finite value(s), e.g. {arr[bad][0]!r} at "
                    f"index {int(np.flatnonzero(bad)[0])}; every {name[:-1]} must be finite."
                )
        if (w < 0).any():
            i = int(np.flatnonzero(w < 0)[0])
            raise EstimateError(
                f"weights[{i}] = {w[i]!r} is negative; a generalised chi-squared here needs "
                "weights >= 0 (check the sign of the spectrum, e.g. clip round-off negatives)."
            )
        if (nc < 0).any():
            i = int(np.flatnonzero(nc < 0)[0])
            raise EstimateError(
                f"noncentralities[{i}] = {nc[i]!r} is negative; noncentralities must be >= 0."
            )
        if (d <= 0).any():
            i = int(np.flatnonzero(d <= 0)[0])
            raise EstimateError(f"dofs[{i}] = {d[i]!r}; degrees of freedom must be > 0.")
        off = float(offset)
        if not math.isfinite(off) or off < 0:
            raise EstimateError(f"offset = {offset!r}; it must be finite and >= 0.")
        keep = w > 0
        if not keep.any() and off == 0.0:
            raise EstimateError(
                "the distribution is identically 0: no component has a positive weight and the "
                "offset is 0; pass at least one positive weight or a positive offset."
            )
        return cls(weights=w[keep], dofs=d[keep], noncentralities=nc[keep], offset=off)

    @property
    def n_components(self) -> int:
        return int(self.weights.size)

    @property
    def total_dof(self) -> float:
        """N = sum of the dofs: Lugannani-Rice's deep-tail relative error is O(1/N)."""
        return float(self.dofs.sum())

    # ----------------------------------------------------------------------------- moments
    def mean(self) -> float:
        return self.offset + float(np.sum(self.weights * (self.dofs + self.noncentralities)))

    def var(self) -> float:
        w, d, nc = self.weights, self.dofs, self.noncentralities
        return float(np.sum(2.0 * w * w * (d + 2.0 * nc)))

    # ----------------------------------------------------------------------------- equal weights
    def _logcdf_equal_weights(self, xp: float) -> float | None:
        """Exact log P[L - offset <= xp] when all weights equal w: L - offset = w chi2'(N, lam),
        by :func:`ibdb.stats.ncx2cdf.ncx2_logcdf_poisson`. None if lam/2 is too large for it."""
        log_z = math.log(xp) - math.log(2.0 * float(self.weights[0]))  # no underflow of xp/2w
        return ncx2_logcdf_poisson(log_z, 0.5 * self.total_dof,
                                   0.5 * float(self.noncentralities.sum()))

    # ----------------------------------------------------------------------------- CGF of L
    def _check_t(self, t: float) -> float:
        t = float(t)
        limit = 0.5 / float(self.weights.max()) if self.weights.size else math.inf
        if not (t < limit) or math.isnan(t):
            raise EstimateError(
                f"t = {t!r} is outside the domain of the cumulant generating function, "
                f"t < 1/(2 max weight) = {limit!r}; pass a smaller t."
            )
        return t

    def cgf(self, t: float) -> float:
        """K(t) = log E[exp(t L)], offset included, for t < 1 / (2 max weight)."""
        t = self._check_t(t)
        w, d, nc = self.weights, self.dofs, self.noncentralities
        om = 1.0 - 2.0 * t * w
        return self.offset * t + float(np.sum(-0.5 * d * np.log1p(-2.0 * t * w) + nc * w * t / om))

    def cgf_d1(self, t: float) -> float:
        """K'(t); K'(0) = mean()."""
        t = self._check_t(t)
        w, d, nc = self.weights, self.dofs, self.noncentralities
        r = 1.0 / (1.0 - 2.0 * t * w)
        return self.offset + float(np.sum(w * r * (d + nc * r)))

    def cgf_d2(self, t: float) -> float:
        """K''(t); K''(0) = var()."""
        t = self._check_t(t)
        w, d, nc = self.weights, self.dofs, self.noncentralities
        r = 1.0 / (1.0 - 2.0 * t * w)
        return float(np.sum(2.0 * (w * r) ** 2 * (d + 2.0 * nc * r)))

    # ----------------------------------------------------------------------------- saddlepoint
    def _terms_left(self, tau: float, xp: float | None = None) -> _Terms:
        """Quantities at s = -exp(tau) < 0, written through sig = expit(tau + log 2w).

        With q = 2 s w: 2|s| w / (1 - q) = sig, 1 / (1 - q) = 1 - sig, so each K^(k)(s) is
        |s|^-k times a sum of bounded terms, and s K'(s) - K(s) is a sum of non-negative terms.
        """
        a = tau + np.log(2.0 * self.weights)
        sig = special.expit(a)
        sigm = special.expit(-a)
        d, nc = self.dofs, self.noncentralities
        s1 = float(np.sum(sig * (d + nc * sigm)))  # 2|s| K'(s)
        # log r = log(1 - sig) = -softplus(a), exact where 1 - sig has lost digits
        half_w2, u, rho3, rho4 = left_tail_terms(sig, sigm, d, nc, -np.logaddexp(0.0, a))
        # s (xp - K'(s)) = S1/2 - |s| xp, with |s| xp formed in logs (|s| itself may overflow)
        resid = 0.0 if xp is None else 0.5 * s1 - math.exp(tau + math.log(xp))
        return _Terms(
            s=-math.exp(tau) if tau < 700.0 else -math.inf,
            u=float(u),
            half_w2=float(half_w2),
            resid=resid,
            rho3=float(rho3),
            rho4=float(rho4),
        )

    def _terms_right(self, s: float, xp: float | None = None) -> _Terms:
        """Quantities at 0 < s < 1 / (2 max w), with v = q / (1 - q) > 0, q = 2 s w."""
        w, d, nc = self.weights, self.dofs, self.noncentralities
        q = 2.0 * s * w
        r = 1.0 / (1.0 - q)
        v = q * r
        wr = w * r
        k1 = float(np.sum(wr * (d + nc * r)))
        k2 = float(np.sum(2.0 * wr**2 * (d + 2.0 * nc * r)))
        k3 = float(np.sum(8.0 * wr**3 * (d + 3.0 * nc * r)))
        k4 = float(np.sum(48.0 * wr**4 * (d + 4.0 * nc * r)))
        half_w2 = 0.5 * float(np.sum(d * v_minus_log1p(v) + nc * v * v))
        return _Terms(
            s=s, u=s * math.sqrt(k2), half_w2=half_w2,
            resid=0.0 if xp is None else s * (xp - k1),
            rho3=k3 / k2**1.5, rho4=k4 / (k2 * k2),
        )

    def _terms(self, s: float, xp: float | None = None) -> _Terms:
        if s < 0:
            return self._terms_left(math.log(-s), xp)
        if s > 0:
            return self._terms_right(s, xp)
        # exactly at the mean only half_w2 = resid = 0 are used (G is interpolated there)
        return _Terms(s=0.0, u=0.0, half_w2=0.0, resid=0.0, rho3=0.0, rho4=0.0)

    def _solve_left(self, xp: float, mu: float, var: float) -> float:
        """tau = log(-s) with K'(s) = xp < mu (offset removed). Returns tau."""
        log_xp = math.log(xp)
        log2w = np.log(2.0 * self.weights)
        d, nc = self.dofs, self.noncentralities

        def f(tau: float) -> float:  # log K'(s) - log xp: decreasing in tau
            a = tau + log2w
            s1 = float(np.sum(special.expit(a) * (d + nc * special.expit(-a))))
            return math.log(s1) - _LN2 - tau - log_xp

        # K' is convex, so its tangent at 0 lies below it: |s| >= (mu - xp) / var. And
        # K'(s) <= (N + sum nc) / (2|s|) for s < 0 bounds |s| above. The bracket is certain;
        # the widening loop only absorbs rounding at its ends.
        lo = math.log(mu - xp) - math.log(var)
        hi = math.log(self.total_dof + float(nc.sum())) - _LN2 - log_xp  # no overflow at tiny xp
        for k in range(64):  # widen only past rounding at the ends; bounded in case x ~ mean
            if f(lo) >= 0:
                break
            lo -= 1e-6 * 2.0**k
        else:
            return lo
        for k in range(64):
            if f(hi) <= 0:
                break
            hi += 1e-6 * 2.0**k
        if hi <= lo:
            return lo
        return optimize.brentq(f, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps)

    def _solve_right(self, xp: float, mu: float, var: float) -> float | None:
        """s > 0 with K'(s) = xp > mu; None if xp lies beyond double resolution of the pole."""
        w, d, nc = self.weights, self.dofs, self.noncentralities
        s_max = 0.5 / float(w.max())

        def f(s: float) -> float:
            r = 1.0 / (1.0 - 2.0 * s * w)
            return float(np.sum(w * r * (d + nc * r))) - xp

        # tangent-line bound again: s <= (xp - mu) / var; else approach the pole geometrically
        hi = (xp - mu) / var
        if hi >= s_max:
            for k in range(1, 60):
                hi = s_max * (1.0 - 0.5**k)
                if f(hi) >= 0:
                    break
            else:
                return None
        if f(hi) < 0:  # rounding at the tangent bound
            hi = min(hi * (1 + 1e-12), s_max * (1 - 1e-16))
            if f(hi) < 0:
                return hi
        return optimize.brentq(f, 0.0, hi, xtol=hi * 1e-16, rtol=4 * np.finfo(float).eps)

    def left_saddlepoint(self, x: float) -> tuple[float, float]:
        """(tau, K(s) - s x') at the saddlepoint s = -e^tau < 0 of a point x between the offset
        and the mean, x' = x - offset: what exponential tilting (:mod:`ibdb.stats.tilting`) needs.

        tau rather than s, because |s| overflows deep in the tail; K(s) - s x' is formed as
        -(s K'(s) - K(s)) - s (x' - K'(s)), a sum of bounded terms, exact at any s (not only
        at the root).
        """
        xp = float(x) - self.offset
        mu = self.mean() - self.offset
        if not 0.0 < xp < mu:
            raise EstimateError(
                f"x = {x!r} is not between the offset {self.offset!r} and the mean "
                f"{self.mean()!r}; the left saddlepoint exists only there."
            )
        tau = self._solve_left(xp, mu, self.var())
        t = self._terms_left(tau, xp)
        return tau, -(t.half_w2 + t.resid)

    def logcdf(self, x: float) -> float:
        """Natural log of P[L <= x]: finite for every x > offset (to ~N * 370 nats at the
        smallest double), -inf for x <= offset, 0 at x = inf; never positive. Which method
        computed it: :meth:`logcdf_with_method`.
        """
        return self.logcdf_with_method(x)[0]

    def logcdf_with_method(self, x: float, *, saddlepoint_only: bool = False
                           ) -> tuple[float, str]:
        """(log P[L <= x], method), the method one of CDF_METHODS (``saddlepoint_only``: never
        the inversion, for callers that want many fast values more than the last 0.1 bits,
        such as a plotted density):

        - "series": all weights equal (one component included): L - offset = w chi2'(N, sum nc),
          the exact Poisson mixture of :func:`ibdb.stats.ncx2cdf.ncx2_logcdf_poisson` (to ~1e-12
          relative), unless sum nc > 2e5;
        - "saddlepoint": Lugannani-Rice with Daniels' second-order term, where the law tilted
          to the saddlepoint has at least N_EFF_SADDLEPOINT = 200 effective degrees of freedom
          (:func:`ibdb.stats.genchi2_inversion.effective_dof`): there its error measured <= 1e-4
          bits
          over random adversarial spectra (<= 1e-6 at 10..10^4 bits for N = 300);
        - "inversion": with fewer (a dominant weight, weights spread over decades, few or small
          dofs), the inversion integral of :mod:`ibdb.stats.genchi2_inversion`, within 1e-13 bits of
          mpmath oracles (the saddlepoint was off by up to 0.16 bits there), ~0.3 ms per value
          for a few components, ~5 ms for 300, up to ~0.2 s for almost degenerate laws (tiny
          weights beside a large offset, as a gp run that does not interpolate has);
        - "boundary": x <= offset (-inf), x = inf or beyond double resolution of the top (0).

        Where the effective dof crosses 200, the value moves by the saddlepoint's error there
        (<= 1e-4 bits). Lugannani-Rice: P = Phi(w) + phi(w) G, G = 1/w - 1/u - D (ncx2cdf), with
        w = sign(s) sqrt(2 (s x - K(s))), u = s sqrt(K''(s)) at K'(s) = x; left of the mean as
        log phi(w) + log(R(|w|) + G) with R the Mills ratio (never underflows), right of it as
        log1p(-Q) with Q the upper tail. Near the mean G (a 0/0 there) is interpolated. If the
        bracket is not positive, the first-order r* form log Phi(w + log(u/w)/w) is used. Should
        the inversion not converge, or need more than 2^14 nodes a contour, the saddlepoint
        value is returned (labelled so).
        """
        x = float(x)
        if math.isnan(x):
            raise EstimateError("x is NaN; pass a finite loss value.")
        xp = x - self.offset
        if self.weights.size == 0:  # a point mass at offset
            return (0.0 if xp >= 0 else -math.inf), "boundary"
        if xp <= 0:
            return -math.inf, "boundary"
        if math.isinf(xp):
            return 0.0, "boundary"
        if self.weights.max() == self.weights.min():
            exact = self._logcdf_equal_weights(xp)
            if exact is not None:
                return min(exact, 0.0), "series"
        mu = self.mean() - self.offset
        var = self.var()
        z0 = (xp - mu) / math.sqrt(var)
        root: float | None = None  # tau (left of the mean) or s (right of it) of the saddlepoint
        if abs(z0) < _AT_MEAN_Z:
            t = self._terms((xp - mu) / var, xp)
        elif xp < mu:
            root = self._solve_left(xp, mu, var)
            t = self._terms_left(root, xp)
        else:
            root = self._solve_right(xp, mu, var)
            if root is None:
                return 0.0, "boundary"
            t = self._terms_right(root, xp)
        w, d, nc = self.weights, self.dofs, self.noncentralities
        if not saddlepoint_only and needs_inversion(
                *tilt(w, 0.0 if root is None else root, xp < mu and root is not None), d, nc):
            exact = inversion_logcdf(w, d, nc, xp, mu, var, root)
            if exact is not None:
                return exact, "inversion"
        return self._saddlepoint(t, var), "saddlepoint"

    def logcdf_inversion(self, x: float) -> float:
        """log P[L <= x] by the inversion integral of :mod:`ibdb.stats.genchi2_inversion`, whatever
        the spectrum (an independent check of the other methods; :meth:`logcdf` uses it where
        the saddlepoint is not accurate enough). Raises EstimateError if it does not converge.
        """
        x = float(x)
        xp = x - self.offset
        if math.isnan(x) or self.weights.size == 0 or xp <= 0 or math.isinf(xp):
            return self.logcdf(x)
        mu, var = self.mean() - self.offset, self.var()
        if xp == mu:
            root = None
        elif xp < mu:
            root = self._solve_left(xp, mu, var)
        else:
            root = self._solve_right(xp, mu, var)
            if root is None:
                return 0.0
        out = inversion_logcdf(self.weights, self.dofs, self.noncentralities, xp, mu, var, root)
        if out is None:
            raise EstimateError(f"the inversion integral did not converge at x = {x!r}.")
        return out

    def _saddlepoint(self, t: _Terms, var: float) -> float:
        """Lugannani-Rice with Daniels' term from the saddlepoint quantities ``t``."""
        # w for x: s x - K(s) = [s K'(s) - K(s)] + s (x - K'(s)); the residual keeps w exact to
        # first order in the root's error (s x - K(s) is stationary at the saddlepoint).
        half_w2 = max(t.half_w2 + t.resid, 0.0)
        w = math.copysign(math.sqrt(2.0 * half_w2), t.s) if t.s != 0 else 0.0
        # G, by contrast, is evaluated at the computed s with that s's own w: near the mean s is
        # ill-conditioned (K' is flat in tau there), and pairing u(s) with w(x) would amplify its
        # error through 1/w^3 - 1/u^3, whereas G is a smooth function of s.
        w_s = math.copysign(math.sqrt(2.0 * t.half_w2), t.s) if t.s != 0 else 0.0

        s_edge = _NEAR_MEAN_W / math.sqrt(var)
        if abs(t.s) < s_edge:
            # G is smooth through the mean: interpolate linearly between the edges, where the
            # direct formula has lost only ~1e-16 / _NEAR_MEAN_W^3 to cancellation.
            tl, tr = self._terms(-s_edge), self._terms(s_edge)
            gl = daniels_correction(-math.sqrt(2.0 * tl.half_w2), tl.u, tl.rho3, tl.rho4)
            gr = daniels_correction(math.sqrt(2.0 * tr.half_w2), tr.u, tr.rho3, tr.rho4)
            g = gl + (gr - gl) * (t.s + s_edge) / (2.0 * s_edge)
        else:
            g = daniels_correction(w_s, t.u, t.rho3, t.rho4)

        return float(lugannani_rice_logcdf(half_w2, w, t.u, g))

    def importance_logcdf(self, x: float, n: int = 20000, seed: int = 0) -> tuple[float, float]:
        """(log P[L <= x] in nats, its standard error in bits) by importance sampling from the
        law exponentially tilted at the saddlepoint: an independent check of :meth:`logcdf`
        whose relative error does not grow with depth. See
        :func:`ibdb.stats.tilting.importance_logcdf`.
        """
        return importance_logcdf(self, x, n=n, seed=seed)

    def bits_below(self, x: float) -> float:
        """-log2 P[L <= x]: the inductive bias, in bits, of reaching loss x."""
        return 0.0 - self.logcdf(x) / _LN2

    def bits_below_with_method(self, x: float) -> tuple[float, str]:
        """(-log2 P[L <= x], the method that computed it: see :meth:`logcdf_with_method`)."""
        log_p, method = self.logcdf_with_method(x)
        return 0.0 - log_p / _LN2, method
