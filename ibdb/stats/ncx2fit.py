"""Maximum-likelihood fit of the paper's loss model: L ~ scale * chi2'(df, nc), location 0.

Boopathy et al. (IJCAI 2024) estimate inductive bias by fitting this three-parameter family to
sampled test losses and reading -log CDF(eps). ``scipy.stats.ncx2.fit(data, floc=0)`` does the
same, but takes seconds for 10^4 values (Nelder-Mead, each step one density per loss) and can
stop short of the maximum. Here the log-likelihood of all n losses is evaluated in O(M) work
per parameter value, M ~ 20-300, after one O(n M) pass over the data:

    log f(y) = -(nu + 1) log 2 - (y + nc)/2 + nu log y + z + chi(nu, z),
    nu = df/2 - 1,  z = sqrt(nc y),  chi(nu, z) = log[I_nu(z) (z/2)^-nu] - z.

For the scaled model z_i = e^c sqrt(x_i) with c = log(nc/scale)/2, so in u = log z every loss
sits at a fixed offset from c: chi(nu, c + v_i), v_i = log(x_i)/2. All terms but chi are sums
of y, log y and sqrt y; chi is smooth in u (analytic in the strip |Im u| < pi/2, bounded by the
zeros of I_nu), so it is replaced by its Chebyshev interpolant on [min v, max v], and the sum
over the losses of the interpolant is the dot product of its coefficients with the data's
Chebyshev moments sum_i T_k(t_i), which do not depend on the parameters (:class:`Compressed`).
Measured against the direct sum the error is < 1e-9 nats in total for 10^4 losses; the fit
checks the interpolation error at the optimum (and refines the interpolant if needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ibdb.core.errors import EstimateError
from ibdb.stats.ncx2cdf import ncx2_logcdf
from ibdb.stats.ncx2density import chi

__all__ = [
    "MIN_LOSSES", "THETA_HI", "THETA_LO", "Compressed", "Ncx2Fit", "finite_differences",
    "fit_scaled_ncx2", "maximise", "newton_directions", "stencil_points", "unpack",
    "validate_losses",
]

MIN_LOSSES = 10
_LOG2 = math.log(2.0)
# rho = nc / (df + nc) < 1 keeps df > 0
_RHO_MAX = 1.0 - 1e-9
_RHO_START_MIN, _RHO_START_MAX = 0.05, 0.995
_RHO_GRID = (0.05, 0.25, 0.5, 0.75, 0.9, 0.97, 0.995)
# Chebyshev nodes for a data range of R = log(max/min)/2 in u: the coefficients decay at least
# like rho^-k with rho = pi/R + sqrt(1 + (pi/R)^2) (the strip of analyticity), faster in
# practice because chi is nearly polynomial where z is small. 20 + 3R nodes gave an error
# below 1e-9 nats per loss at the optimum for df from 0.05 to 1e4 (R from 0.1 to 190,
# capped at 320 nodes); the fit checks it and doubles the nodes when it is larger.
_NODES_MIN, _NODES_MAX = 24, 320
# The surrogate is accepted when its interpolation error is below this many nats per loss
# (1e-4 nats in total for 10^4 losses; the fit's target is 1e-6 relative).
_SURROGATE_TOL = 1e-8
# --------------------------------------------------------------------------------- parameters
def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(df, nc, scale) from theta = (log mean, log kappa, rho), along the last axis.

    kappa = 2 mean^2 / var = (df + nc) / (1 + rho) and rho = nc / (df + nc): the first two are
    pinned by the first two moments and rho by the shape, so the axes are nearly uncoupled.
    """
    theta = np.asarray(theta, dtype=np.float64)
    mean, kappa, rho = np.exp(theta[..., 0]), np.exp(theta[..., 1]), theta[..., 2]
    total = kappa * (1.0 + rho)  # df + nc
    return (1.0 - rho) * total, rho * total, mean / total


class Compressed:
    """Positive losses reduced to the statistics their ncx2 log-likelihood depends on.

    The per-loss features are f_i = (T_0(t_i), ..., T_{M-1}(t_i), y_i, log y_i, sqrt y_i, 1),
    with t_i the position of log(y_i)/2 in [min, max] mapped to [-1, 1]. The log-likelihood of
    any weighted set of these losses (the data: weights 1; a bootstrap replicate: its counts) is
    (sum_i w_i f_i) . coefficients(theta). Pass losses already divided by a typical value.
    """

    def __init__(self, y: np.ndarray, n_nodes: int | None = None) -> None:
        y = np.asarray(y, dtype=np.float64)
        v = 0.5 * np.log(y)
        self.v_lo, self.v_hi = float(v.min()), float(v.max())
        width = max(self.v_hi - self.v_lo, 1e-12)
        if n_nodes is None:
            n_nodes = int(min(max(math.ceil(20 + 3 * width), _NODES_MIN), _NODES_MAX))
        self.n_nodes = n_nodes
        self.mid, self.half = 0.5 * (self.v_lo + self.v_hi), 0.5 * width
        self.t = np.clip((v - self.mid) / self.half, -1.0, 1.0)
        self.y = y
        n1 = n_nodes - 1
        j = np.arange(n_nodes)
        # a = C g: Chebyshev coefficients of the interpolant through the values g at the
        # extreme points cos(pi j / n1), end terms halved so that p(t) = sum_k a_k T_k(t).
        c = np.cos(np.pi * np.outer(j, j) / n1) * (2.0 / n1)
        c[:, [0, -1]] *= 0.5
        c[[0, -1], :] *= 0.5
        self.cheb = c
        self.node_v = self.mid + self.half * np.cos(np.pi * j / n1)
        # halfway (in angle) between the nodes, where the interpolation error peaks
        phi = np.pi * (np.arange(n1) + 0.5) / n1
        self.check_v = self.mid + self.half * np.cos(phi)
        self.check_t = np.cos(np.outer(phi, j))  # T_k at those points
        self.stats = self._features_sum()

    def features(self) -> np.ndarray:
        """The (n, M + 4) matrix of per-loss features f_i."""
        n, m = self.t.size, self.n_nodes
        f = np.empty((n, m + 4))
        f[:, 0] = 1.0
        f[:, 1] = self.t
        for k in range(2, m):  # T_k = 2 t T_{k-1} - T_{k-2}
            f[:, k] = 2.0 * self.t * f[:, k - 1] - f[:, k - 2]
        f[:, m], f[:, m + 1], f[:, m + 2], f[:, m + 3] = (
            self.y, np.log(self.y), np.sqrt(self.y), 1.0)
        return f

    def _features_sum(self) -> np.ndarray:
        """sum_i f_i, without forming the feature matrix."""
        m = self.n_nodes
        out = np.empty(m + 4)
        t_prev, t_cur = np.ones_like(self.t), self.t
        out[0], out[1] = self.t.size, t_cur.sum()
        for k in range(2, m):
            t_prev, t_cur = t_cur, 2.0 * self.t * t_cur - t_prev
            out[k] = t_cur.sum()
        out[m:] = (self.y.sum(), np.log(self.y).sum(), np.sqrt(self.y).sum(), self.t.size)
        return out

    @staticmethod
    def split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(nu, c, tail) at theta (..., 3): the Bessel part of the log-likelihood depends only on
        nu = df/2 - 1 and c = log(nc/scale)/2 (-inf at nc = 0), the rest is tail (..., 4) . the
        last four summed features."""
        df, nc, sc = unpack(theta)
        nu = 0.5 * df - 1.0
        with np.errstate(divide="ignore"):
            c = 0.5 * (np.log(nc) - np.log(sc))
        const = -(nu + 1.0) * (_LOG2 + np.log(sc)) - 0.5 * nc
        return nu, c, np.stack([-0.5 / sc, nu, np.exp(c), const], axis=-1)

    def chi_coefficients(self, nu: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(..., M) Chebyshev coefficients of u -> chi(nu, e^(c + u)) on the data's range."""
        z = np.exp(np.asarray(c)[..., None] + self.node_v)  # c = -inf: z = 0 and chi = 0
        return chi(np.asarray(nu)[..., None], z) @ self.cheb.T

    def coefficients(self, theta: np.ndarray) -> np.ndarray:
        """A(theta) with loglik = stats . A(theta); theta (..., 3) gives (..., M + 4)."""
        nu, c, tail = self.split(theta)
        return np.concatenate([self.chi_coefficients(nu, c), tail], axis=-1)

    def interpolation_error(self, theta: np.ndarray) -> float:
        """max |interpolant - chi| (nats per loss) halfway between the nodes, at one theta.

        The error of a Chebyshev interpolant peaks between nodes, so n times this bounds the
        surrogate's error in the summed log-likelihood (up to the check's own sampling).
        """
        df, nc, sc = (float(a) for a in unpack(theta))
        nu = 0.5 * df - 1.0
        if nc == 0.0:
            return 0.0
        c = 0.5 * (math.log(nc) - math.log(sc))
        a = self.chi_coefficients(nu, c)
        return float(np.max(np.abs(self.check_t @ a - chi(nu, np.exp(c + self.check_v)))))

    def loglik(self, theta: np.ndarray, stats_: np.ndarray | None = None) -> np.ndarray:
        """Log-likelihood (surrogate) at theta (..., 3) of the data (or of weighted stats_)."""
        s = self.stats if stats_ is None else stats_
        return self.coefficients(theta) @ s


@dataclass(frozen=True)
class Ncx2Fit:
    """A fitted L ~ scale * chi2'(df, nc) (location 0) and how the fit went."""

    df: float
    nc: float
    scale: float
    loglik: float  # total log-likelihood of the losses (nats)
    converged: bool
    n_iter: int
    start: str  # 'moments', 'moments-clamped' or 'moments+grid' (see fit_scaled_ncx2)
    message: str
    n: int = 0  # number of losses fitted

    def logcdf_with_method(self, x: float) -> tuple[float, str]:
        """(natural log of P[L <= x], 'scipy' or 'saddlepoint').

        scipy.stats.ncx2.logcdf where it is finite and above -700 nats (it is reliable there);
        beyond, where it underflows to -inf or loses accuracy, the exact Poisson mixture in log
        space, never underflowing (the saddlepoint for nc/2 > 1e5): see
        :func:`ibdb.stats.ncx2cdf.ncx2_logcdf`. Against an mpmath oracle at 10 to 10^5 bits
        (tests/stats/test_ncx2fit.py) that path is within 1e-9 bits. (The label is kept as
        'saddlepoint' for the stored diagnostics.)
        """
        x = float(x)
        if math.isnan(x):
            raise EstimateError("x is NaN; pass a finite loss value.")
        return ncx2_logcdf(x, self.df, self.nc, self.scale)

    def logcdf(self, x: float) -> float:
        """Natural log of P[L <= x] under the fitted model."""
        return self.logcdf_with_method(x)[0]

    def as_params(self) -> dict[str, float | int | str]:
        """The fitted parameters as plain, JSON-able Python values."""
        return {
            "df": float(self.df),
            "nc": float(self.nc),
            "scale": float(self.scale),
            "loglik": float(self.loglik),
            "n_iter": int(self.n_iter),
            "start": self.start,
        }


# Losses whose standard deviation is below this fraction of their mean are refused: the fit's
# df ~ 2 / (sd / mean)^2 then passes ~1e16, where it was measured to return wrong bits
# (5.5 against the empirical 10.0 at 2e-9; right to within the sampling error at 2e-8).
MIN_RELATIVE_SPREAD = 1e-8


def validate_losses(losses: np.ndarray) -> np.ndarray:
    """The losses as a flat float64 array; EstimateError unless >= 10, finite, > 0, not all
    equal, and not so narrow (MIN_RELATIVE_SPREAD) that the fit cannot resolve them."""
    x = np.asarray(losses, dtype=np.float64).ravel()
    n_bad = int((~np.isfinite(x)).sum())
    if n_bad:
        raise EstimateError(
            f"losses contain {n_bad} non-finite value(s) (NaN or inf) among {x.size}; drop them "
            "first (estimate_losses does this and counts them in its diagnostics)."
        )
    if x.size < MIN_LOSSES:
        raise EstimateError(
            f"the ncx2 fit needs at least {MIN_LOSSES} finite losses, got {x.size}; sample more "
            "hypotheses or use the 'empirical' method."
        )
    if (x <= 0).any():
        i = int(np.flatnonzero(x <= 0)[0])
        raise EstimateError(
            f"losses[{i}] = {x[i]!r} is not positive ({int((x <= 0).sum())} of {x.size} are "
            "<= 0); the scaled ncx2 model with location 0 needs losses > 0. Check that these "
            "are test MSEs, or use the 'empirical' method."
        )
    if x.min() == x.max():
        raise EstimateError(
            f"all {x.size} losses equal {x[0]!r}: the distribution is degenerate and no ncx2 "
            "can be fitted; check the sampler (are the hypotheses identical?)."
        )
    # the spread relative to the mean, computed on x / mean (x.std() of losses near 1e-300
    # or 1e300 underflows or overflows)
    mean = scaled_mean(x)
    relative = float((x / mean).std())
    if relative < MIN_RELATIVE_SPREAD:
        raise EstimateError(
            f"the {x.size} losses vary by only {relative:.2g} of their mean (standard deviation "
            f"{relative * mean:.3g} around {mean:.9g}): a scaled ncx2 that narrow has df ~ "
            f"{2 / relative ** 2:.1e}, past what the fit resolves (it returns wrong bits "
            "there). Use the 'empirical' or 'splitting' method for these losses."
        )
    return x


def scaled_mean(x: np.ndarray) -> float:
    """The mean of positive finite ``x``, computed on x / max(x) so that no sum overflows
    (losses near the largest float) or loses its digits."""
    top = float(x.max())
    return float((x / top).mean()) * top


def _moment_start(x: np.ndarray) -> tuple[float, float, float, bool]:
    """(mean, kappa, rho, exact) of scale * chi2'(df, nc) matching three sample moments.

    With mean = s (df + nc), var = 2 s^2 (df + 2 nc), k3 = 8 s^3 (df + 3 nc), and the fit's
    parameters kappa = 2 mean^2 / var = (df + nc) / (1 + rho), rho = nc / (df + nc), the
    skewness is 2 sqrt(2) (1 + 2 rho) / ((1 + rho)^2 sqrt(kappa)). So r = k3 mean / (2 var^2)
    must lie in (3/4, 1], and r (1 + rho)^2 = 1 + 2 rho gives rho = (q + sqrt q) / r with
    q = 1 - r (the other root is negative). A sample r outside that range (a skewness the
    family cannot reach) is clamped to the nearest end, and exact is False.
    """
    m = float(x.mean())
    c = x - m
    v = float(np.mean(c * c))
    k3 = float(np.mean(c * c * c))
    kappa = 2.0 * m * m / v
    r = k3 * m / (2.0 * v * v)
    if r > 1.0:
        return m, kappa, 0.0, False
    if r <= 0.75:
        return m, kappa, _RHO_START_MAX, False
    q = 1.0 - r
    return m, kappa, min((q + math.sqrt(q)) / r, _RHO_START_MAX), True


# Box for theta = (log mean, log kappa, rho); mean is ~1 after normalising the losses.
THETA_LO = np.array([-20.0, -30.0, 0.0])
THETA_HI = np.array([20.0, 40.0, _RHO_MAX])
# Finite-difference step in theta: truncation ~h^2 and rounding ~1e-16 |terms| / h^2 (terms of
# the per-loss log-density reach ~1e3 for large df) balance near here.
_H = 3e-5
# step lengths tried along the Newton direction: the first group nearly always succeeds
_STEP_FACTORS = (np.array([1.0, 0.5, 0.25]), np.array([0.1, 0.03, 0.01, 1e-3, 1e-5]))
# below this predicted gain (per loss) the last Hessian is reused
_REUSE_HESSIAN = 1e-7
# Newton stops when the predicted gain of the mean log-likelihood is below this.
_NEWTON_TOL = 1e-13
_NEWTON_MAX_ITER = 60


# Central-difference stencils (in units of the step): the centre, +-e_i, and for the Hessian
# the four corners +-e_i +-e_j of each pair i < j.
_ST7 = np.vstack([np.zeros(3), np.eye(3), -np.eye(3)])
_ST19 = np.vstack([_ST7] + [np.array([[a, b] for a in (1, -1) for b in (1, -1)]) @ np.eye(3)[[i, j]]
                             for i in range(3) for j in range(i + 1, 3)])


def stencil_points(theta: np.ndarray, hessian: bool = True, h: float = _H) -> np.ndarray:
    """(P, S, 3) parameter points of the central-difference stencil (step h) around each of
    P thetas. The stencil is moved inside the box at a bound (rho = 0 is a common optimum),
    so there the derivatives are those a step h inside.
    """
    th = np.clip(np.atleast_2d(theta), THETA_LO + h, THETA_HI - h)
    return th[:, None, :] + h * (_ST19 if hessian else _ST7)


def finite_differences(f: np.ndarray, h: float = _H
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(value, gradient, Hessian or None) from (P, S) values on :func:`stencil_points`."""
    f0 = f[:, 0]
    grad = (f[:, 1:4] - f[:, 4:7]) / (2.0 * h)
    if f.shape[1] == _ST7.shape[0]:
        return f0, grad, None
    hess = np.empty((f.shape[0], 3, 3))
    for i in range(3):
        hess[:, i, i] = (f[:, 1 + i] - 2.0 * f0 + f[:, 4 + i]) / h**2
    k = 7
    for i in range(3):
        for j in range(i + 1, 3):
            hess[:, i, j] = hess[:, j, i] = (
                f[:, k] - f[:, k + 1] - f[:, k + 2] + f[:, k + 3]) / (4.0 * h**2)
            k += 4
    return f0, grad, hess


def newton_directions(theta: np.ndarray, grad: np.ndarray, hess: np.ndarray) -> np.ndarray:
    """Ascent directions -H^-1 g at stacks theta, grad (P, 3), hess (P, 3, 3). A Hessian that
    is not negative definite is replaced by -|H| (eigenvalues mirrored, floored at 1e-10 of the
    largest). A coordinate at a bound of the box whose gradient points outward stays put."""
    fixed = ((theta <= THETA_LO) & (grad < 0)) | ((theta >= THETA_HI) & (grad > 0))
    g = np.where(fixed, 0.0, grad)
    h = np.where(fixed[:, :, None] | fixed[:, None, :], 0.0, hess)
    h = h - fixed[:, :, None] * np.eye(3)  # -1 on the diagonal of the fixed coordinates
    lam, vec = np.linalg.eigh(0.5 * (h + np.swapaxes(h, 1, 2)))
    mag = np.abs(lam)
    mag = np.maximum(mag, 1e-10 * np.maximum(mag.max(axis=1, keepdims=True), 1e-300))
    step = np.einsum("pij,pj->pi", vec, np.einsum("pji,pj->pi", vec, g) / mag)
    return np.where(fixed, 0.0, step)


def maximise(comp: Compressed, theta: np.ndarray) -> tuple[np.ndarray, bool, int, str]:
    """Bounded Newton ascent of the surrogate: (theta, converged, iterations, message).

    ``comp`` is anything with the summed features ``stats`` (its last entry the number of
    losses) and ``loglik(theta)``: the data's :class:`Compressed`, or one bootstrap replicate
    (the tests check the bootstrap's refits against this optimiser). Each iteration is one
    vectorised evaluation of a 19-point stencil (7 once the Hessian is reused) and one or two of
    a few step lengths. L-BFGS-B needed ~3 times more evaluations and stopped on rounding noise
    ("ABNORMAL") where the likelihood is flat in rho.
    """
    n = float(comp.stats[-1])
    f_cur = float(comp.loglik(theta)) / n
    h = None
    gain = prev_gain = math.inf
    for it in range(1, _NEWTON_MAX_ITER + 1):
        # Close to the optimum the Hessian barely changes: reusing it makes each step a
        # gradient-only stencil. It is recomputed whenever the gain stops falling fast (near
        # rho = 0 the curvature varies on the scale of the steps).
        fresh = h is None or gain > _REUSE_HESSIAN or gain > 1e-3 * prev_gain
        prev_gain = gain
        with np.errstate(invalid="ignore", over="ignore"):
            _, g, h_new = finite_differences(comp.loglik(stencil_points(theta, fresh)))
        g = g[0] / n
        if h_new is not None:
            h = h_new[0] / n
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
            return theta, False, it, "non-finite derivatives"
        step = newton_directions(theta[None], g[None], h[None])[0]
        gain = float(g @ step)
        if gain <= _NEWTON_TOL:
            return theta, True, it, f"Newton decrement {gain:.2g} per loss"
        for factors in _STEP_FACTORS:
            cands = np.clip(theta + factors[:, None] * step, THETA_LO, THETA_HI)
            with np.errstate(invalid="ignore", over="ignore"):
                fc = np.nan_to_num(comp.loglik(cands) / n, nan=-np.inf)
            best = int(np.argmax(fc))
            if fc[best] > f_cur:
                break
        else:
            # no step length improves: the optimum is within rounding of theta
            return theta, gain <= 1e-9, it, f"no improving step (decrement {gain:.2g} per loss)"
        theta, f_cur = cands[best], float(fc[best])
    return theta, False, _NEWTON_MAX_ITER, "iteration limit"


def fit_scaled_ncx2(losses: np.ndarray) -> Ncx2Fit:
    """Maximum-likelihood (df, nc, scale) of L ~ scale * chi2'(df, nc), location 0.

    Needs >= 10 losses, all finite and > 0, not all equal (EstimateError otherwise). About
    2-15 ms for 10^4 losses against 1-3 s for scipy.stats.ncx2.fit(floc=0), with a
    log-likelihood at least as high (benchmarks/bench_ncx2_fit.py). ``loglik`` is that of
    the Chebyshev surrogate, within 1e-8 nats per loss of the direct sum (checked at the
    optimum); ``converged`` says whether Newton's decrement fell below 1e-13 per loss.
    """
    x = validate_losses(losses)
    n = x.size
    # Losses are divided by their mean so that parameters and objective are O(1) whatever the
    # units; the scale and log-likelihood are converted back at the end.
    xm = scaled_mean(x)
    y = x / xm
    comp = Compressed(y)

    # rho = 0 (the central chi-squared, a common MLE) is a plain bound, but it is also a
    # stationary point (the score for nc at nc = 0 is linear in y, which the scale absorbs), so
    # the search never starts there: the moment start is floored at _RHO_START_MIN and
    # compared with a coarse grid of rho (one vectorised evaluation).
    mean0, kappa0, rho_m, exact = _moment_start(y)
    start = "moments" if exact else "moments-clamped"
    cands = np.array([[math.log(mean0), math.log(kappa0), r]
                      for r in (max(rho_m, _RHO_START_MIN), *_RHO_GRID)])
    with np.errstate(invalid="ignore", over="ignore"):
        ll0 = np.nan_to_num(comp.loglik(cands), nan=-np.inf)
    best = int(np.argmax(ll0))
    if ll0[best] > ll0[0]:
        start = "moments+grid"
    theta, converged, n_iter, message = maximise(comp, cands[best])
    err = comp.interpolation_error(theta)
    if not err <= _SURROGATE_TOL:
        # the interpolant was too coarse for these parameters: refine it and continue
        comp = Compressed(y, n_nodes=2 * comp.n_nodes)
        theta, converged, more, message = maximise(comp, theta)
        n_iter += more
        err = comp.interpolation_error(theta)
        converged = converged and err <= _SURROGATE_TOL
        message += f" (refined interpolant: {comp.n_nodes} nodes, error {err:.2g} per loss)"
    df, nc, sc = (float(a) for a in unpack(theta))
    loglik = float(comp.loglik(theta)) - n * math.log(xm)
    return Ncx2Fit(
        df=df, nc=nc, scale=sc * xm, loglik=loglik, converged=converged,
        n_iter=n_iter, start=start, message=message, n=n,
    )
