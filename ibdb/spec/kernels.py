"""Kernels of the gp space: one model per kernel, each with its own fields, in a registry.

A gp space's ``kernel`` is a mapping whose ``kind`` picks the model (a tagged union,
:mod:`ibdb.spec.kinds`), e.g. ``kernel: {kind: matern, nu: 1.5, bandwidth: median}``. Each
:class:`KernelKind` entry names the function that computes the kernel matrix (in the run stage:
``runners/kernels.py``, ``runners/cnn_kernels.py``), called as
``matrix(kernel, a, b, bandwidth=..., image_shape=...)`` with ``bandwidth`` resolved by the
runner (a number, or None for a kernel without one) and ``image_shape`` the task's (or None);
an entry with ``input_shape=True`` also gets ``input_shape=``, one example's natural shape
(``TaskData.input_shape``). A new kernel is one model and one entry here (or
``KERNELS.register`` from anywhere) plus its function.

Conventions (``l`` the bandwidth, ``r = |x - x'|``):

- ``rbf``: ``exp(-r^2 / (2 l^2))``
- ``laplace``: ``exp(-r / l)`` (equal to ``matern`` with ``nu: 0.5``)
- ``matern``: Rasmussen & Williams' form with ``s = sqrt(2 nu) r / l``; ``nu`` is 0.5, 1.5 or
  2.5: ``exp(-s)``, ``(1 + s) exp(-s)``, ``(1 + s + s^2 / 3) exp(-s)``
- ``arccos``: the infinite-width ReLU network kernel (Cho & Saul, order 1) with a bias:
  ``2 E[relu(w.x + b) relu(w.x' + b)]`` for ``w ~ N(0, I / l^2)``, ``b ~ N(0, bias_variance)``.
- ``nngp`` / ``ntk``: the infinite-width limits (Lee et al. 2018; Jacot et al. 2018) of the
  ``mlp`` space with the same ``depth`` (hidden layers, >= 1), ``init_scale`` (default 1.0) and
  ``activation`` (relu, the only one supported): the output's covariance over random
  initialisations, and the tangent kernel in the NTK parametrisation (gradients with respect to
  each parameter over its initial standard deviation). Every weight and bias has the variance of
  ibdb's init, ``init_scale^2 / (3 fan_in)``; the first layer's fan_in is the input dimension,
  the hidden and output layers' biases (fan_in = width) vanish in the limit unless ``width`` is
  given: give the mlp's width to compare with it (at width 256, depth 2 those biases nearly
  double the kernel). No ``bandwidth``. See ``runners/kernels.py``.
- ``nngp`` / ``ntk`` with ``architecture: cnn``: the same limits (infinitely many channels) of
  the ``cnn`` space with the same ``layers``, ``kernel_size`` (odd, default 3), ``pooling``
  (``none`` or ``avg``, required: ``max`` has no closed form and is refused), ``init_scale`` and
  relu; ``channels`` keeps the hidden convolutions' and the readout's bias variances, as
  ``width`` does for the mlp. The task's inputs must be images (``TaskData.image_shape``). See
  ``runners/cnn_kernels.py``.

- ``empirical_nngp`` / ``empirical_ntk``: a user's own PyTorch model's kernels at
  initialisation, by Monte Carlo over ``samples`` random initialisations (seeded by ``seed``)
  of the module that ``model`` and ``model_args`` build, each parameter drawn from its
  initial law (PyTorch's default for its layer, or ``init``'s; :mod:`ibdb.spec.models`).
  ``empirical_nngp``: the covariance of the outputs, ``mean_s mean_j f_sj(x) f_sj(x')`` over
  initialisations s and outputs j. ``empirical_ntk``: the tangent kernel ``mean_s mean_j
  sum_p v_p df_sj(x)/dp df_sj(x')/dp`` with ``v_p`` the variance of parameter p's initial law
  (the NTK parametrisation: gradients with respect to each parameter over its initial
  standard deviation; constants, which have none, add nothing), or ``v_p = 1`` with
  ``parametrisation: standard``. Both are positive semi-definite (every matrix uses the same
  initialisations). No ``bandwidth``. The built module's fingerprint (its parameters' names,
  shapes and laws, and its sources) joins the run id. See ``runners/empirical_kernels.py``.

``bandwidth: median`` takes the median pairwise distance between training points as ``l``;
``marginal_likelihood`` chooses it by the evidence (``runners/evidence.py``).

A kernel's part of the run identity (:meth:`KernelSpec.identity`) is its fields as the gp space
wrote them flat before kernels had models of their own (``kernel: <kind>``, then each field
that is set), so that every stored run id stays what it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ibdb.core.references import Reference
from ibdb.spec.base import NonNegativeInt, PositiveFloat, PositiveInt, SpecModel
from ibdb.spec.kinds import KindRegistry
from ibdb.spec.models import ModelSpec

Bandwidth = PositiveFloat | Literal["median", "marginal_likelihood"]
_BANDWIDTH = Field(1.0, description="The length scale l (a number), 'median' (the median "
                   "distance between training points) or 'marginal_likelihood' (chosen by the "
                   "evidence).")


class KernelSpec(SpecModel):
    """The base of every kernel model: a ``kind`` and the kernel's own fields."""

    kind: str

    def identity(self) -> dict[str, Any]:
        """The kernel's part of a gp run's identity: ``kernel`` (its kind) and every field
        that is set (None means not set)."""
        fields = self.model_dump(mode="json", exclude={"kind"}, exclude_none=True)
        return {"kernel": self.kind, **fields}


class RBFKernel(KernelSpec):
    """The squared-exponential kernel ``exp(-r^2 / (2 l^2))``."""

    kind: Literal["rbf"]
    bandwidth: Bandwidth = _BANDWIDTH


class LaplaceKernel(KernelSpec):
    """The exponential kernel ``exp(-r / l)``."""

    kind: Literal["laplace"]
    bandwidth: Bandwidth = _BANDWIDTH


class MaternKernel(KernelSpec):
    """The Matern kernel of smoothness ``nu`` (0.5, 1.5 or 2.5)."""

    kind: Literal["matern"]
    nu: Literal[0.5, 1.5, 2.5] = Field(description="Smoothness: 0.5, 1.5 or 2.5.")
    bandwidth: Bandwidth = _BANDWIDTH


class ArcCosKernel(KernelSpec):
    """The infinite-width one-hidden-layer ReLU network kernel (Cho & Saul, order 1)."""

    kind: Literal["arccos"]
    bandwidth: Bandwidth = _BANDWIDTH
    bias_variance: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="Variance of the hidden units' bias (default 0).")


class NetworkKernel(KernelSpec):
    """The NNGP or NTK of ibdb's relu ``mlp`` space (``architecture: mlp``, the default) or
    ``cnn`` space (``architecture: cnn``, on image tasks)."""

    # the parameters of the cnn that the kernel with architecture cnn is the limit of
    CNN_FIELDS: ClassVar[tuple[str, ...]] = ("layers", "kernel_size", "pooling", "channels")

    kind: Literal["nngp", "ntk"]
    architecture: Literal["mlp", "cnn"] = Field(
        "mlp", description="The network the kernel is the limit of: mlp or cnn.")
    depth: PositiveInt | None = Field(
        None, description="Hidden layers of the mlp (required with architecture mlp, only "
        "with it).")
    init_scale: PositiveFloat = Field(
        1.0, description="The network's init scale: weights and biases of variance "
        "init_scale^2 / (3 fan_in) (PyTorch's default at 1.0).")
    width: PositiveInt | None = Field(
        None, description="Keep the mlp's hidden and output layers' bias variance "
        "init_scale^2 / (3 width) that the infinite width sends to 0 (architecture mlp only).")
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] = Field(
        "relu", description="The network's activation: relu, the only one supported.")
    layers: PositiveInt | None = Field(
        None, description="Convolutions of the cnn (required with architecture cnn, only "
        "with it).")
    kernel_size: PositiveInt | None = Field(
        None, description="The cnn's odd filter size (default 3; architecture cnn only).")
    pooling: Literal["max", "avg", "none"] | None = Field(
        None, description="The cnn's pooling after each convolution: none or avg (required "
        "with architecture cnn, only with it; max has no closed-form kernel).")
    channels: PositiveInt | None = Field(
        None, description="Keep the cnn's hidden convolutions' and readout's bias variances "
        "that infinitely many channels send to 0 (architecture cnn only).")

    @model_validator(mode="before")
    @classmethod
    def _cnn_kernel_size(cls, data: Any) -> Any:
        # the cnn space's default filter size, written out so that leaving it out and writing
        # it give one identity
        if isinstance(data, dict) and data.get("architecture") == "cnn" \
                and data.get("kernel_size") is None:
            data = {**data, "kernel_size": 3}
        return data

    @model_validator(mode="after")
    def _fields_match_architecture(self) -> NetworkKernel:
        if self.activation != "relu":
            raise ValueError(f"kernel {self.kind!r} is implemented for activation relu only "
                             f"(the arc-cosine recursion), not {self.activation!r}")
        if self.architecture == "cnn":
            self._check_cnn()
            return self
        for key in self.CNN_FIELDS:
            if getattr(self, key) is not None:
                raise ValueError(f"{key} = {getattr(self, key)} applies only to architecture "
                                 f"cnn (kernel {self.kind!r} is the limit of an mlp here); "
                                 "remove it or add architecture: cnn")
        if self.depth is None:
            raise ValueError(f"kernel {self.kind!r} needs depth: the hidden layers (>= 1) of "
                             "the mlp it is the limit of")
        return self

    def _check_cnn(self) -> None:
        what = f"kernel {self.kind!r} with architecture cnn"
        if self.depth is not None:
            raise ValueError(f"{what} takes layers (its convolutions), not depth = "
                             f"{self.depth}; remove depth")
        if self.width is not None:
            raise ValueError(f"{what} takes channels (the cnn's filters per layer), not width = "
                             f"{self.width}; remove width")
        if self.layers is None:
            raise ValueError(f"{what} needs layers: the convolutions (>= 1) of the cnn it is "
                             "the limit of")
        if self.pooling is None:
            raise ValueError(f"{what} needs pooling: none or avg (the cnn space's default, "
                             "max, has no closed-form kernel)")
        if self.pooling == "max":
            raise ValueError(f"{what}: pooling max has no closed-form infinite-width kernel "
                             "(the covariance of maxima of correlated Gaussians); use pooling "
                             "avg or none")
        if self.kernel_size is not None and self.kernel_size % 2 == 0:
            raise ValueError(f"{what}: kernel_size must be odd (as the cnn space's, so that "
                             f"zero padding keeps the image size); got {self.kernel_size}")

    def identity(self) -> dict[str, Any]:
        out = super().identity()
        if self.architecture == "mlp":
            del out["architecture"]  # (as before the cnn architecture existed)
        return out


class EmpiricalKernel(ModelSpec, KernelSpec):
    """A user's PyTorch model's own kernel at initialisation, by Monte Carlo (see the module
    doc and ``runners/empirical_kernels.py``): ``model``, ``model_args`` and ``init`` as the
    torch space's (:mod:`ibdb.spec.models`); ``samples`` initialisations drawn from ``seed``.
    The model maps (N, *input_shape) to (N, k) for any k >= 1: the kernel averages the k
    outputs."""

    seed: NonNegativeInt = Field(
        0, description="Seed of the initialisations (initialisation s draws its normals from "
        "SeedSequence([seed, s])).")


class EmpiricalNNGPKernel(EmpiricalKernel):
    """The model's NNGP: the covariance of its outputs over random initialisations,
    ``mean_s mean_j f_sj(x) f_sj(x')`` over ``samples`` initialisations s and the outputs j."""

    kind: Literal["empirical_nngp"]
    samples: PositiveInt = Field(256, description="Initialisations averaged.")


class EmpiricalNTKKernel(EmpiricalKernel):
    """The model's empirical neural tangent kernel at initialisation, averaged over
    ``samples`` initialisations s and the outputs j: ``mean_s mean_j sum_p v_p df_sj(x)/dp
    df_sj(x')/dp``. ``parametrisation: ntk`` (the default) weights parameter p by the variance
    ``v_p`` of its initial law (uniform on +-b: b^2 / 3; normal of std s: s^2; a constant: 0,
    so parameters that start constant, such as a norm layer's, add nothing), the NTK
    parametrisation of the closed-form ``ntk``; ``standard`` weights every parameter, constants
    included, by 1: the tangent kernel of the raw parameters, as gradient descent on them
    (ibdb's training) sees it."""

    kind: Literal["empirical_ntk"]
    samples: PositiveInt = Field(32, description="Initialisations averaged.")
    parametrisation: Literal["ntk", "standard"] = Field(
        "ntk", description="ntk: each parameter's gradient over its initial standard deviation "
        "(constants add nothing); standard: the raw parameters' gradients.")


@dataclass(frozen=True)
class KernelKind:
    """One kernel: its model, and the function computing its matrix (see the module doc)."""

    kind: str
    model: type[KernelSpec]
    matrix: Reference
    summary: str
    # a limit of a network space (nngp, ntk): runs record the network's parameters instead of
    # a bandwidth
    network: bool = False
    # the matrix function takes ``input_shape=`` (one example's natural shape) too
    input_shape: bool = False
    # run_info(kernel, x_train, input_shape=...) -> dict: what a gp run records about the
    # kernel (runs.runner_info) in place of a bandwidth; None: the runner's own fields
    run_info: Reference | None = None


KERNELS: KindRegistry[KernelKind] = KindRegistry("kernel", [
    KernelKind("rbf", RBFKernel, "ibdb.runners.kernels:rbf", "exp(-r^2 / (2 l^2))"),
    KernelKind("laplace", LaplaceKernel, "ibdb.runners.kernels:laplace", "exp(-r / l)"),
    KernelKind("matern", MaternKernel, "ibdb.runners.kernels:matern",
               "Matern of smoothness nu (0.5, 1.5, 2.5)"),
    KernelKind("arccos", ArcCosKernel, "ibdb.runners.kernels:arccos",
               "the infinite-width one-hidden-layer relu network kernel"),
    KernelKind("nngp", NetworkKernel, "ibdb.runners.kernels:network",
               "the NNGP of the mlp (or cnn) space", network=True),
    KernelKind("ntk", NetworkKernel, "ibdb.runners.kernels:network",
               "the NTK of the mlp (or cnn) space", network=True),
    KernelKind("empirical_nngp", EmpiricalNNGPKernel, "ibdb.runners.empirical_kernels:nngp",
               "a PyTorch model's output covariance over random initialisations",
               input_shape=True, run_info="ibdb.runners.empirical_kernels:run_info"),
    KernelKind("empirical_ntk", EmpiricalNTKKernel, "ibdb.runners.empirical_kernels:ntk",
               "a PyTorch model's tangent kernel at initialisation, averaged over them",
               input_shape=True, run_info="ibdb.runners.empirical_kernels:run_info"),
], default="rbf")


def has_bandwidth(kernel: KernelSpec) -> bool:
    """Whether the kernel is scaled by a bandwidth (which ``median`` and
    ``marginal_likelihood`` can choose)."""
    return "bandwidth" in type(kernel).model_fields
