"""A user's PyTorch model's own kernels at initialisation, by Monte Carlo: the functions of the
gp space's ``empirical_nngp`` and ``empirical_ntk`` kernels (:mod:`ibdb.spec.kernels`).

The model is the torch space's (``runners/torch_model.py``): ``model`` and ``model_args`` build
the module, which maps (N, *input_shape) to (N, k) for any k >= 1, and each parameter p gets the
law its initial values follow (PyTorch's default for its layer, or the spec's ``init``).
Initialisation s (s = 0 .. samples - 1) draws its parameters from standard normals of its own
generator, ``np.random.default_rng(SeedSequence([seed, s]))`` (each random parameter in
``named_parameters`` order, row-major, through its law's transform; constants stay), so every
matrix the gp runner asks for (K(X, X), K(T, X), K(T, T)) uses the same initialisations (common
random numbers): together they are one empirical kernel, positive semi-definite.

- ``empirical_nngp``: ``K(x, x') = mean_s mean_j f_sj(x) f_sj(x')``, the outputs' second moment
  over random initialisations (their covariance for a model whose outputs have mean 0 at
  initialisation, as any last layer with a zero-mean weight and bias gives).
- ``empirical_ntk``: ``Theta(x, x') = mean_s mean_j sum_p v_p df_sj(x)/dp df_sj(x')/dp``, the
  tangent kernel at initialisation averaged over initialisations and outputs. The NTK
  parametrisation (``parametrisation: ntk``, the default) writes each parameter as ``p = m_p +
  sd_p w_p`` and differentiates with respect to ``w_p``, so ``v_p = sd_p^2`` is the variance of
  its initial law: uniform on +-b, ``b^2 / 3``; normal of std s, ``s^2``; a constant, 0 (it has
  no spread, so a norm layer's weight and bias, or a fixed positional code, add nothing). This is
  the parametrisation of ibdb's closed-form ``ntk``, which it equals in expectation for a
  depth-1 relu mlp with Gaussian weights (tests/run/test_kernels_empirical.py).
  ``parametrisation: standard`` takes ``v_p = 1`` for every parameter, constants included: the
  tangent kernel of the raw parameters, which gradient descent on them (ibdb's training of the
  torch space) follows; it grows with the width.

The module runs in float64 (a copy of the built module, through ``torch.func.functional_call``)
and in ``eval()`` mode: a kernel is a function of two points, so a batch norm uses its running
statistics (their initial values), not the batch's. Initialisations are drawn in groups (their
parameters stacked, at most ``GROUP_ELEMENTS``); the nngp runs a group in one call under
``torch.func.vmap`` (or one initialisation at a time, for a module vmap cannot trace) and sums
the group's products in one GEMM. Gradients come from ``torch.func``: per
point ``jacrev`` under ``vmap`` (or, for a module vmap cannot trace, one ``autograd.grad`` per
point and output). Memory is bounded by working a block of points at a time: the Jacobian of a
block, (points, k x P) float64 for the P weighted parameters, is at most ``BLOCK_ELEMENTS``
elements (one point at least), and the whole of ``b``'s Jacobian is kept across the blocks of
``a`` when it fits in one block (else it is remade for each).

Monte Carlo error: the S per-initialisation matrices are independent, so each entry's standard
error is their standard deviation (ddof 1) over sqrt(S) (:func:`kernel_with_error`; NaN for S =
1). A gp run records a summary of it on up to ``ERROR_POINTS`` training points in its info
(``kernel_standard_error``: the largest and the median standard error over the mean diagonal
of the kernel). An estimate deep in the tail amplifies that error: a gp's posterior variances
are differences of nearly equal kernel entries, and I(eps) at 20 bits moves by about 20 times
their relative error. On digits (40 training and 30 test points, amplitude 1), 1024
initialisations of a 64-wide depth-1 mlp (1.4 % relative error per entry) put ``exact``'s 20
bits 0.4 to 7 bits from the closed-form nngp's, depending on ``seed``: raise ``samples`` (the
error falls as 1 / sqrt(samples); a model with wider layers and more outputs has less per
initialisation), and compare a few seeds before trusting the far tail.

The module's fingerprint (its parameters' names, shapes and laws, its buffers, and the source of
the factory and of every module class in it that is not torch's) joins the run id through the
gp space's ``facts`` (:func:`gp_facts`), as for the torch space; every other kernel adds
nothing, so their run ids are what they were. ``gp_facts`` runs when a spec is planned, for any
gp space, which is why torch is imported inside the functions that need it: planning or
validating a spec with another kernel never loads torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ibdb.core.errors import SpecError, shorten
from ibdb.spec.kernels import EmpiricalKernel, EmpiricalNNGPKernel, EmpiricalNTKKernel

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ibdb.data.task import TaskData
    from ibdb.runners.training import ParamLaw

# float64 elements of a block of Jacobians (or of outputs' activations): 128 MiB
BLOCK_ELEMENTS = 1 << 24
# float64 elements of a group of initialisations' parameters (8 MiB: a cache's size, so that
# drawing and transforming them is not bound by memory)
GROUP_ELEMENTS = 1 << 20
# training points on which a gp run measures the kernel's Monte Carlo error (runner info)
ERROR_POINTS = 64
PROBE_EXAMPLES = 2

VMAP, ONE_AT_A_TIME = "vmap", "one at a time"


# -- the kernel functions (KERNELS' entries) ------------------------------------------------

def nngp(kernel: EmpiricalNNGPKernel, a: torch.Tensor, b: torch.Tensor, *,
         bandwidth: float | None = None, image_shape: tuple[int, ...] | None = None,
         input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The (len(a), len(b)) empirical nngp matrix between the flat rows of ``a`` and ``b``."""
    return _moments(kernel, a, b, input_shape, errors=False)[0]


def ntk(kernel: EmpiricalNTKKernel, a: torch.Tensor, b: torch.Tensor, *,
        bandwidth: float | None = None, image_shape: tuple[int, ...] | None = None,
        input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The (len(a), len(b)) empirical ntk matrix between the flat rows of ``a`` and ``b``."""
    return _moments(kernel, a, b, input_shape, errors=False)[0]


def kernel_with_error(kernel: EmpiricalKernel, a: torch.Tensor, b: torch.Tensor, *,
                      input_shape: tuple[int, ...] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel matrix (the same as ``nngp`` / ``ntk`` give, to rounding) and each entry's
    Monte Carlo standard error: the per-initialisation entries' standard deviation (ddof 1)
    over sqrt(samples); NaN with one sample."""
    mean, error = _moments(kernel, a, b, input_shape, errors=True)
    assert error is not None
    return mean, error


def run_info(kernel: EmpiricalKernel, x_train: torch.Tensor, *,
             input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What a gp run records about the kernel (``runs.runner_info``): the model, samples and
    seed, and the Monte Carlo error on the first ``ERROR_POINTS`` training points, relative to
    the mean diagonal of the kernel there."""
    x = x_train[:ERROR_POINTS]
    model = _Model.load(kernel, input_shape, x.device)
    mean, error = kernel_with_error(kernel, x, x, input_shape=input_shape)
    scale = float(mean.diagonal().mean())
    out: dict[str, Any] = {
        "model": kernel.model, "samples": kernel.samples, "seed": kernel.seed,
        "input_shape": list(model.input_shape), "model_outputs": model.n_outputs,
        "kernel_standard_error": {
            "max": float(error.max()) / scale, "median": float(error.median()) / scale,
            "relative_to": "mean diagonal", "points": len(x)}}
    if isinstance(kernel, EmpiricalNTKKernel):
        out["parametrisation"] = kernel.parametrisation
    return out


def gp_facts(space: Any, data: TaskData) -> dict[str, Any]:
    """The gp space's part of the run id that only the built model can tell: for an empirical
    kernel, the module's fingerprint (as the torch space's); for any other kernel nothing, so
    that its run ids stay what they were."""
    kernel = getattr(space, "kernel", None)
    if not isinstance(kernel, EmpiricalKernel):
        return {}
    from ibdb.runners.torch_model import load_factory, source_digest

    model = _Model.load(kernel, data.input_shape)
    return {"module": {
        "parameters": [[name, list(shape), law.describe()]
                       for name, shape, law in zip(model.names, model.shapes, model.laws,
                                                   strict=True)],
        "buffers": [[name, list(b.shape)] for name, b in model.module.named_buffers()],
        "source_sha256": source_digest(load_factory(kernel.model), model.module)}}


# -- the built model and its initialisations ------------------------------------------------

@dataclass
class _Model:
    """The built module (float64, eval mode, on the device), its parameters' laws, and how
    it runs on many initialisations at once."""

    module: nn.Module
    names: list[str]
    shapes: list[tuple[int, ...]]
    laws: list[ParamLaw]
    input_shape: tuple[int, ...]
    n_outputs: int
    units: int  # activation elements per example
    jacobians: str = VMAP  # how features() differentiates (VMAP until vmap fails)
    batches: str = VMAP  # how outputs() runs a group of initialisations

    @classmethod
    def load(cls, kernel: EmpiricalKernel, input_shape: tuple[int, ...],
             device: torch.device | None = None) -> _Model:
        from ibdb.runners.torch_model import (
            activations_per_example,
            build_module,
            parameter_laws,
        )

        input_shape = tuple(int(s) for s in input_shape)
        n_outputs = _output_count(kernel, input_shape)
        module = build_module(kernel, input_shape, n_outputs)
        laws = parameter_laws(kernel, module, input_shape, n_outputs)
        units = activations_per_example(module, input_shape)
        module = module.double().eval()
        if device is not None:
            module = module.to(device)
        return cls(module, [n for n, _, _ in laws], [tuple(p.shape) for _, p, _ in laws],
                   [law for _, _, law in laws], input_shape, n_outputs, units)

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    def groups(self, samples: int, per_init: int) -> list[range]:
        """The initialisations in groups whose parameters fit GROUP_ELEMENTS and whose work
        (``per_init`` elements each) fits BLOCK_ELEMENTS."""
        count = max(1, min(GROUP_ELEMENTS // max(1, self.size),
                           BLOCK_ELEMENTS // max(1, per_init)))
        return [range(i, min(i + count, samples)) for i in range(0, samples, count)]

    def parameters(self, seed: int, inits: range, device: torch.device
                   ) -> dict[str, torch.Tensor]:
        """The parameters (G, *shape) of the initialisations ``inits``, float64: initialisation
        s's random ones from the standard normals of SeedSequence([seed, s]), in
        ``named_parameters`` order, each through its law; constants as they are."""
        import torch

        from ibdb.runners.training import initial_values

        sizes = [math.prod(shape) if law.normals else 0
                 for shape, law in zip(self.shapes, self.laws, strict=True)]
        z = np.empty((len(inits), sum(sizes)))
        for row, s in enumerate(inits):
            np.random.default_rng(np.random.SeedSequence([seed, s])).standard_normal(
                out=z[row])
        values = initial_values(self.laws, [math.prod(shape) for shape in self.shapes],
                                torch.from_numpy(z))
        return {name: v.reshape(len(inits), *shape).to(device)
                for name, shape, v in zip(self.names, self.shapes, values, strict=True)}

    def weights(self, kernel: EmpiricalNTKKernel) -> dict[str, float]:
        """``v_p`` of each parameter the ntk differentiates (see the module doc)."""
        if kernel.parametrisation == "standard":
            return dict.fromkeys(self.names, 1.0)
        out = {}
        for name, law in zip(self.names, self.laws, strict=True):
            if law.kind == "uniform":
                out[name] = law.scale**2 / 3.0
            elif law.kind == "normal":
                out[name] = law.scale**2
        if not out:
            raise SpecError(f"kernel empirical_ntk of model {kernel.model!r}: every parameter "
                            "starts constant, so the NTK parametrisation's tangent kernel is 0; "
                            "give some parameter a random law under init, or use "
                            "parametrisation: standard.")
        return out

    def outputs(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(G, n, k) outputs of the G initialisations ``params`` on the examples ``x``: one
        vmapped call per block of points (or one call per initialisation, for a module vmap
        cannot trace)."""
        import torch
        from torch.func import functional_call, vmap

        count = len(next(iter(params.values()))) if params else 1
        rows = max(1, BLOCK_ELEMENTS // (self.units * count))
        out = []
        with torch.no_grad():
            for i in range(0, len(x), rows):
                block = x[i:i + rows]
                if self.batches == VMAP:
                    try:
                        out.append(vmap(lambda p, xb=block: functional_call(
                            self.module, p, (xb,)))(params))
                        continue
                    except Exception:  # whatever vmap refuses: one initialisation at a time
                        self.batches = ONE_AT_A_TIME
                out.append(torch.stack([
                    functional_call(self.module, {n: t[g] for n, t in params.items()},
                                    (block,)) for g in range(count)]))
        return torch.cat(out, dim=1)

    def features(self, params: dict[str, torch.Tensor], weights: dict[str, float],
                 x: torch.Tensor) -> torch.Tensor:
        """(n, k P) rows ``sqrt(v_p) df_j(x)/dp / sqrt(k)``, (j, p) flattened, of one
        initialisation ``params`` on the examples ``x`` (a block): their products are its
        tangent kernel averaged over the outputs."""
        import torch

        if self.jacobians == VMAP:
            try:
                jac = self._jacobian_vmap(params, weights, x)
            except Exception:  # whatever vmap refuses: autograd runs any module
                self.jacobians = ONE_AT_A_TIME
        if self.jacobians == ONE_AT_A_TIME:
            jac = self._jacobian_loop(params, weights, x)
        n, k = len(x), self.n_outputs
        columns = [jac[name].reshape(n, k, -1) * math.sqrt(v / k)
                   for name, v in weights.items()]
        return torch.cat(columns, dim=2).reshape(n, -1)

    def _jacobian_vmap(self, params: dict[str, torch.Tensor], weights: dict[str, float],
                       x: torch.Tensor) -> dict[str, torch.Tensor]:
        from torch.func import functional_call, jacrev, vmap

        free = {n: params[n] for n in weights}
        fixed = {n: t for n, t in params.items() if n not in weights}

        def one(p: dict[str, torch.Tensor], example: torch.Tensor) -> torch.Tensor:
            return functional_call(self.module, {**p, **fixed}, (example.unsqueeze(0),))[0]

        return vmap(jacrev(one), in_dims=(None, 0))(free, x)  # name -> (n, k, *shape)

    def _jacobian_loop(self, params: dict[str, torch.Tensor], weights: dict[str, float],
                       x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch
        from torch.func import functional_call

        free = {n: params[n].detach().clone().requires_grad_() for n in weights}
        fixed = {n: t for n, t in params.items() if n not in weights}
        k = self.n_outputs
        jac = {n: torch.zeros((len(x), k, *t.shape), dtype=t.dtype, device=t.device)
               for n, t in free.items()}
        for i in range(len(x)):
            out = functional_call(self.module, {**free, **fixed}, (x[i:i + 1],))[0]
            for j in range(k):
                grads = torch.autograd.grad(out[j], list(free.values()), retain_graph=j < k - 1,
                                            allow_unused=True)
                for name, grad in zip(free, grads, strict=True):
                    if grad is not None:
                        jac[name][i, j] = grad
        return jac


def _output_count(kernel: EmpiricalKernel, input_shape: tuple[int, ...]) -> int:
    """k, the model's outputs per example (any k >= 1), from one probe batch; a model that
    fails there is left to ``build_module``, whose errors name the factory and the shapes."""
    import torch
    from torch import nn

    from ibdb.runners.torch_model import load_factory

    factory = load_factory(kernel.model)
    with torch.random.fork_rng(devices=[]):
        try:
            module = factory(**kernel.model_args)
            if not isinstance(module, nn.Module):
                return 1
            module = module.to(torch.float32).eval()
            with torch.no_grad():
                out = module(torch.zeros((PROBE_EXAMPLES, *input_shape)))
        except Exception:
            return 1
    if isinstance(out, torch.Tensor) and (out.dim() != 2 or out.shape[0] != PROBE_EXAMPLES
                                          or out.shape[1] < 1):
        raise SpecError(f"model {kernel.model!r} returned {tuple(out.shape)} for a batch of "
                        f"shape {(PROBE_EXAMPLES, *input_shape)}; a kernel's model must return "
                        f"(N, k) = ({PROBE_EXAMPLES}, k) for some k >= 1 (the kernel averages "
                        f"its k outputs). model_args = {shorten(str(kernel.model_args))}.")
    return int(out.shape[1]) if isinstance(out, torch.Tensor) else 1


# -- the Monte Carlo sums ---------------------------------------------------------------------

def _moments(kernel: EmpiricalKernel, a: torch.Tensor, b: torch.Tensor,
             input_shape: tuple[int, ...] | None, *, errors: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mean over initialisations of their kernel matrices and, with ``errors``, each
    entry's standard error (Welford's running variance)."""
    import torch

    shape = (int(a.shape[1]),) if input_shape is None else tuple(int(s) for s in input_shape)
    if math.prod(shape) != a.shape[1] or a.shape[1] != b.shape[1]:
        raise ValueError(f"kernel {kernel.kind!r}: rows of {a.shape[1]} and {b.shape[1]} "
                         f"features are not examples of shape {shape}")
    same = a is b
    model = _Model.load(kernel, shape, a.device)
    xa = a.to(torch.float64).reshape(len(a), *shape)
    xb = xa if same else b.to(torch.float64).reshape(len(b), *shape)
    weights = model.weights(kernel) if isinstance(kernel, EmpiricalNTKKernel) else {}
    with _threads(model, weights, len(xa) + (0 if same else len(xb)), a.device):
        if isinstance(kernel, EmpiricalNNGPKernel):
            return _nngp(kernel, model, xa, xb, same, errors)
        return _ntk(kernel, model, weights, xa, xb, same, errors)


def _threads(model: _Model, weights: dict[str, float], points: int, device: torch.device
             ) -> Any:
    """One thread (``blocks.one_thread``) for small models on few points on a CPU: each
    initialisation's work is then many small operations, whose parallel regions mostly spin
    (measured: 2000 nngp initialisations of a 64-wide mlp on 8 points, 0.9 s on one thread,
    11 s on two threads of a busy 2-core machine)."""
    import contextlib

    from ibdb.runners.blocks import CPU_BLOCK_ELEMENTS, one_thread

    per_point = model.units + model.n_outputs * sum(
        math.prod(model.shapes[model.names.index(n)]) for n in weights)
    small = device.type == "cpu" and points * per_point <= CPU_BLOCK_ELEMENTS
    return one_thread() if small else contextlib.nullcontext()


class _Welford:
    """The running mean of per-initialisation matrices and, with ``errors``, their sum of
    squared deviations (Welford), one matrix or a group (G, n_a, n_b) at a time."""

    def __init__(self, shape: tuple[int, int], device: torch.device, errors: bool) -> None:
        import torch

        self.count = 0
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.spread = torch.zeros_like(self.mean) if errors else None

    def add(self, value: torch.Tensor) -> None:
        if self.spread is None:  # a plain sum, divided at the end
            self.mean.add_(value.sum(0) if value.dim() == 3 else value)
            self.count += len(value) if value.dim() == 3 else 1
            return
        for one in (value if value.dim() == 3 else value[None]):
            self.count += 1
            delta = one - self.mean
            self.mean.add_(delta, alpha=1.0 / self.count)
            self.spread.addcmul_(delta, one - self.mean)

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        import torch

        if self.spread is None:
            return self.mean.div_(self.count), None
        n = self.count
        error = self.spread.div_((n - 1) * n).sqrt_() if n > 1 else \
            torch.full_like(self.mean, math.nan)
        return self.mean, error


def _nngp(kernel: EmpiricalNNGPKernel, model: _Model, xa: torch.Tensor, xb: torch.Tensor,
          same: bool, errors: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """mean_s mean_j f_sj(x) f_sj(x'): the mean alone by one GEMM per group of
    initialisations (their outputs side by side); with the errors, each one's matrix."""
    import torch

    k = model.n_outputs
    points = len(xa) + (0 if same else len(xb))
    per_init = max(points * model.units, len(xa) * len(xb) if errors else 0)
    total = _Welford((len(xa), len(xb)), xa.device, errors)
    for inits in model.groups(kernel.samples, per_init):
        params = model.parameters(kernel.seed, inits, xa.device)
        fa = model.outputs(params, xa)  # (G, n_a, k)
        fb = fa if same else model.outputs(params, xb)
        if errors:
            total.add(torch.bmm(fa, fb.mT).div_(k))
            continue
        side_a = fa.permute(1, 0, 2).reshape(len(xa), -1)  # (n_a, G k)
        side_b = side_a if same else fb.permute(1, 0, 2).reshape(len(xb), -1)
        total.mean.addmm_(side_a, side_b.T, alpha=1.0 / k)
        total.count += len(inits)
    return total.result()


def _ntk(kernel: EmpiricalNTKKernel, model: _Model, weights: dict[str, float],
         xa: torch.Tensor, xb: torch.Tensor, same: bool, errors: bool
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """mean_s of each initialisation's tangent kernel (``_tangent``)."""
    total = _Welford((len(xa), len(xb)), xa.device, errors)
    for inits in model.groups(kernel.samples, 0):
        group = model.parameters(kernel.seed, inits, xa.device)
        for g in range(len(inits)):
            params = {n: t[g] for n, t in group.items()}
            total.add(_tangent(model, params, weights, xa, xb, same))
    return total.result()


def _tangent(model: _Model, params: dict[str, torch.Tensor], weights: dict[str, float],
             xa: torch.Tensor, xb: torch.Tensor, same: bool) -> torch.Tensor:
    """One initialisation's tangent kernel, a block of points at a time (module doc)."""
    import torch

    width = model.n_outputs * sum(math.prod(model.shapes[model.names.index(n)])
                                  for n in weights)
    rows = max(1, BLOCK_ELEMENTS // max(width, model.n_outputs * model.units))
    out = torch.empty((len(xa), len(xb)), dtype=torch.float64, device=xa.device)
    blocks_a = [slice(i, min(i + rows, len(xa))) for i in range(0, len(xa), rows)]
    blocks_b = [slice(i, min(i + rows, len(xb))) for i in range(0, len(xb), rows)]
    for rb in blocks_b:
        fb = model.features(params, weights, xb[rb])
        for ra in blocks_a:
            fa = fb if same and ra == rb else model.features(params, weights, xa[ra])
            out[ra, rb] = fa @ fb.T
    return out
