"""Hypothesis spaces in specs: the gp space (kernels, fit), network spaces (mlp, cnn, and any
PyTorch model: torch) with their optimisers and fit criteria, and the tagged union a spec's
``spaces`` list holds.

Field names carry their units where they have one; every model is strict and frozen
(:class:`ibdb.spec.base.SpecModel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, field_validator, model_validator

from ibdb.core.columns import LOSS_COLUMNS, REQUIRED_LOSSES
from ibdb.core.references import Reference
from ibdb.spec.base import Name, NonNegativeInt, PositiveFloat, PositiveInt
from ibdb.spec.base import SpecModel as _Spec
from ibdb.spec.kernels import KERNELS, ArcCosKernel, KernelSpec
from ibdb.spec.kinds import KindRegistry
from ibdb.spec.models import ModelSpec


class SpaceSpec(_Spec):
    """The base of every hypothesis space: a name (a label, not part of its identity) and a
    ``kind`` that picks its model and runner (:data:`SPACES`)."""

    name: Name
    kind: str

    def identity(self) -> dict[str, Any]:
        """What defines the space's hypotheses (its part of the run id): every field but its
        name. A space whose identity differs gets a new run id; nothing else does."""
        return self.model_dump(mode="json", exclude={"name"})


class GPFit(_Spec):
    """A gp space's fit criterion other than interpolation: the training MSE (over points and
    outputs, against one-hot targets, as the networks' ``train_mse`` criterion) is at most
    ``train_mse_max``. Hypotheses are the prior conditioned on that event, sampled exactly by
    rejection from a noisy-observation posterior of variance ``proposal_noise`` (``auto``: the
    one a pilot finds accepts most); rejected proposals are stored as not fitted, with no test
    losses (NULL in the store). See ``runners/conditioning.py``."""

    criterion: Literal["train_mse"] = "train_mse"
    train_mse_max: PositiveFloat
    proposal_noise: PositiveFloat | Literal["auto"] = Field(
        "auto", description="Variance s^2 of the proposal's observation noise; it changes how "
        "many proposals are accepted, not the law of the accepted ones.")


class GPSpace(SpaceSpec):
    """Functions drawn from a Gaussian process that interpolates the training data.

    ``kernel`` is one of the kernels of :mod:`ibdb.spec.kernels` (a mapping with its ``kind``
    and its own fields, e.g. ``{kind: matern, nu: 1.5, bandwidth: median}``); the older flat
    spelling, ``kernel: matern`` with ``nu`` and ``bandwidth`` beside it on the space, reads
    the same. The prior is ``amplitude * k``: it scales the posterior covariance, not the mean.
    ``marginal_likelihood`` chooses the amplitude (closed form), the kernel's bandwidth (a
    search from 1/32 to 32 times the median distance) or both by the evidence of the one-hot
    training targets; the run's info records them and the evidence (``runners/evidence.py``).
    ``jitter`` (times the amplitude) is added to the diagonal of the training kernel matrix
    before its Cholesky factorisation.

    Without ``fit`` a hypothesis interpolates the training data (the posterior given exact
    observations); ``fit`` (see :class:`GPFit`) conditions the prior on a training MSE at most
    ``train_mse_max`` instead, the event the networks' ``train_mse`` criterion keeps.
    """

    name: Name
    kind: Literal["gp"] = "gp"
    kernel: Annotated[KernelSpec, KERNELS.union()] = Field(
        description="The kernel: a mapping with its kind and that kernel's own fields, e.g. "
        "{kind: matern, nu: 1.5, bandwidth: median}.")
    amplitude: PositiveFloat | Literal["marginal_likelihood"] = Field(
        1.0, description="The prior variance scale a: the kernel is a * k (or "
        "'marginal_likelihood').")
    jitter: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 1e-8
    fit: GPFit | None = Field(
        None, description="Condition on train MSE <= train_mse_max instead of interpolating.")

    @model_validator(mode="before")
    @classmethod
    def _kernel_fields_into_kernel(cls, data: Any) -> Any:
        """The flat spelling (``kernel: <kind>`` or none, the kernel's fields on the space)
        as the kernel mapping; a kernel field that belongs to another kernel is named."""
        if not isinstance(data, dict) or isinstance(data.get("kernel"), dict | KernelSpec):
            return data
        kind = data.get("kernel", KERNELS.default)
        if not isinstance(kind, str) or kind not in KERNELS:
            return data  # (the kernel field's own error names it)
        own = set(KERNELS.get(kind).model.model_fields) - {"kind"}
        space = set(cls.model_fields)
        elsewhere = {key: [k.kind for k in KERNELS if key in k.model.model_fields]
                     for key in data if key not in space and key not in own}
        for key, kinds in elsewhere.items():
            if kinds:
                names = [repr(k) for k in kinds]
                which = f"kernel {names[0]}" if len(names) == 1 else \
                    f"kernels {', '.join(names[:-1])} and {names[-1]}"
                raise ValueError(f"{key} = {data[key]!r} applies to {which}, not to {kind!r}; "
                                 "remove it")
        kernel = {"kind": kind, **{k: v for k, v in data.items() if k in own}}
        rest = {k: v for k, v in data.items() if k not in own and k != "kernel"}
        return {**rest, "kernel": kernel}

    @model_validator(mode="after")
    def _evidence_can_choose(self) -> GPSpace:
        kernel = self.kernel
        if (isinstance(kernel, ArcCosKernel) and not kernel.bias_variance
                and kernel.bandwidth == self.amplitude == "marginal_likelihood"):
            raise ValueError("without bias_variance the arccos kernel's bandwidth only scales it "
                             "(k / l^2), so the evidence cannot choose it and the amplitude "
                             "together: give bias_variance > 0 or a numeric bandwidth")
        return self

    def identity(self) -> dict[str, Any]:
        """What defines the space's hypotheses: every field but its name, the kernel's written
        flat beside the others (as before kernels had their own models), the amplitude and
        fit only when set (as before they existed)."""
        out: dict[str, Any] = {"kind": self.kind, "jitter": self.jitter,
                               **self.kernel.identity()}
        if self.amplitude != 1.0:
            out["amplitude"] = self.amplitude
        if self.fit is not None:
            out["fit"] = self.fit.model_dump(mode="json")
        return out


Activation = Literal["relu", "tanh", "gelu", "sigmoid"]


class _OptimizerBase(_Spec):
    lr: PositiveFloat = Field(description="Learning rate.")
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        0.0, description="L2 penalty added to the gradient (as torch.optim's weight_decay).")
    epochs: PositiveInt = Field(
        description="The most epochs a network trains (fewer when fit.stop_when_fit stops it).")
    batch_size: PositiveInt | Literal["full"] = Field(
        description="Training points per step, or 'full' for full-batch gradient descent. Each "
        "network visits the training set in its own random order every epoch; the last batch of "
        "an epoch holds the remainder.")


class SGD(_OptimizerBase):
    """Stochastic gradient descent as ``torch.optim.SGD`` (momentum without dampening)."""

    kind: Literal["sgd"]
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0


class Adam(_OptimizerBase):
    """Adam as ``torch.optim.Adam`` (epsilon 1e-8; weight decay as an L2 gradient term)."""

    kind: Literal["adam"]
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]],
                     Field(min_length=2, max_length=2)] = Field(
        default=[0.9, 0.999], description="Decay rates of the first and second moments.")


Optimizer = Annotated[SGD | Adam, Field(discriminator="kind")]
OPTIMIZER_KINDS = ("sgd", "adam")


class FitCriterion(_Spec):
    """When a trained network counts as fitting the training set (the definition conditions on it).

    ``train_accuracy``: every training point's largest output is its class. ``train_mse``: the
    training MSE (over points and outputs, against one-hot targets) is at most ``train_mse_max``.
    The criterion is checked at the end of each epoch; with ``stop_when_fit`` a network stops
    training at the first epoch that meets it, otherwise every network trains all epochs and is
    judged at the end. Networks that never fit are stored with ``fitted = false``.
    """

    criterion: Literal["train_accuracy", "train_mse"] = "train_accuracy"
    train_mse_max: PositiveFloat | None = None
    stop_when_fit: bool = True

    @model_validator(mode="after")
    def _threshold_matches_criterion(self) -> FitCriterion:
        if self.criterion == "train_mse" and self.train_mse_max is None:
            raise ValueError("criterion 'train_mse' needs train_mse_max (e.g. 0.01)")
        if self.criterion == "train_accuracy" and self.train_mse_max is not None:
            raise ValueError(f"train_mse_max = {self.train_mse_max} applies only to criterion "
                             "'train_mse'; remove it or set criterion: train_mse")
        return self


class _TrainedSpace(SpaceSpec):
    optimizer: Optimizer
    fit: FitCriterion = FitCriterion()


class _NetworkSpace(_TrainedSpace):
    activation: Activation = "relu"
    init_scale: PositiveFloat = Field(
        1.0, description="Weights and biases start uniform on +-init_scale/sqrt(fan_in) "
        "(PyTorch's default initialisation at 1.0).")


class MLPSpace(_NetworkSpace):
    """Fully connected networks trained on the MSE against one-hot targets, from random inits.

    ``depth`` hidden layers of ``width`` units (depth 0 is a linear model), the activation after
    each hidden layer, a linear output layer with one unit per class.
    """

    kind: Literal["mlp"]
    width: PositiveInt
    depth: NonNegativeInt


class CNNSpace(_NetworkSpace):
    """Small convolutional networks for image tasks, trained like :class:`MLPSpace`.

    ``layers`` convolutions of ``channels`` output channels and a square ``kernel_size`` (odd,
    zero-padded to keep the image size), each followed by the activation and, unless ``pooling``
    is ``none``, a 2x2 pooling of stride 2; then a linear layer from the flattened feature maps
    to one output per class. The task's inputs must be images (see ``TaskData.image_shape``).
    """

    kind: Literal["cnn"]
    channels: PositiveInt
    layers: PositiveInt
    kernel_size: PositiveInt = 3
    pooling: Literal["max", "avg", "none"] = "max"

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("kernel_size must be odd, so that zero padding keeps the image size")
        return value


class TorchSpace(ModelSpec, _TrainedSpace):
    """Any PyTorch model, trained like :class:`MLPSpace` from random initialisations.

    ``model`` names a factory (``"package.module:callable"``) called with ``model_args`` as
    keyword arguments; it returns a ``torch.nn.Module`` that maps a batch of the task's examples
    in their natural shape (vectors (N, d), images (N, C, H, W), signals (N, C, L): each
    source's ``shape`` in :data:`ibdb.spec.sources.SOURCES`; digits, mnist, fashion-mnist,
    cifar10 and omniglot give images, mnist1d signals, npz its arrays' own shape, the others
    vectors) to (N, k) outputs, one per class. Training and
    recording are those of every network space: the MSE against one-hot targets with the
    space's optimiser, test and train MSE and 0-1 error. ``init`` overrides the laws of initial
    parameters by name pattern (:mod:`ibdb.spec.models`); a hypothesis is its standard-normal
    noise row (initial parameters, then data orders), see ``runners/torch_space.py``.

    The run id covers the factory's name and ``model_args``, ``init``, and the built module's
    fingerprint: its parameter names, shapes and laws, and the source of the factory and of
    every module class in it that is not torch's own. A changed model gets a new run id; a new
    label does not.
    """

    kind: Literal["torch"]

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.model_identity(),
                "optimizer": self.optimizer.model_dump(mode="json"),
                "fit": self.fit.model_dump(mode="json")}


@dataclass(frozen=True)
class SpaceKind:
    """One kind of hypothesis space: its model and the runner that samples it.

    ``runner`` names the runner class (``runners/``, the run stage, which resolves it). Bump
    ``version`` when a change alters any hypothesis's losses: it enters the run id. The other
    fields: tiny "sane" parameters that the runner contract test runs on CPU; the loss columns
    the runner's ``sample`` returns (names in ``ibdb.core.columns.LOSS_COLUMNS``); a torch-free
    check of a space against a loaded task (``check(space, data)`` raising SpecError) and its
    memory estimates (``sizes``, see ``runners/sizes.py``), which the plan calls before
    anything runs; whether a budget's splitting block may run on it (a
    hypothesis is a fixed transform of a standard-normal noise row: ``noise_dim`` and
    ``evaluate(noise)``, see ``runners/base.py``), and the version of that transform (level
    shards record it; a resume refuses other values)."""

    kind: str
    model: type[SpaceSpec]
    runner: Reference
    version: str
    sane_space: dict[str, Any] = field(default_factory=dict)
    loss_columns: tuple[str, ...] = REQUIRED_LOSSES
    check: Reference | None = None
    sizes: Reference | None = None  # sizes(space, data) -> runners.sizes.Sizes
    splitting: bool = False
    noise_version: str = "1"
    # facts(space, data) -> dict: what defines the hypotheses that only the built model can
    # tell (a torch model's parameters and sources); they join the space's part of the run id
    facts: Reference | None = None


# Tiny, but some networks fit before the last epoch, so that the contract test covers
# networks leaving a batch early.
_SANE_OPTIMIZER = {"kind": "adam", "lr": 0.01, "epochs": 4, "batch_size": 8}
_NETWORK_COLUMNS = tuple(LOSS_COLUMNS)  # trained networks record every loss column

# A space without `kind` is a gp space, as it was before networks existed.
SPACES: KindRegistry[SpaceKind] = KindRegistry("hypothesis space", [
    SpaceKind(
        kind="gp", model=GPSpace, runner="ibdb.runners.gp:GPRunner", version="1",
        sane_space={"name": "sane-gp", "kind": "gp", "kernel": {"kind": "rbf",
                                                                  "bandwidth": 1.0},
                    "jitter": 1e-8},
        # train_mse and fitted only when the space conditions on a train MSE (fit)
        loss_columns=(*REQUIRED_LOSSES, "train_mse", "fitted"),
        check="ibdb.runners.compatibility:check_gp",  # a cnn kernel needs image data
        sizes="ibdb.runners.sizes:gp_sizes", splitting=True,
        facts="ibdb.runners.empirical_kernels:gp_facts"),  # ({} but for a model's own kernel)
    SpaceKind(
        kind="mlp", model=MLPSpace, runner="ibdb.runners.mlp:MLPRunner", version="1",
        sane_space={"name": "sane-mlp", "kind": "mlp", "width": 8, "depth": 2,
                    "optimizer": _SANE_OPTIMIZER},
        loss_columns=_NETWORK_COLUMNS, check="ibdb.runners.compatibility:check_network",
        sizes="ibdb.runners.sizes:network_sizes", splitting=True,
        noise_version="2"),  # 2: the data orders are in the noise (1: held by a seed)
    SpaceKind(
        kind="cnn", model=CNNSpace, runner="ibdb.runners.cnn:CNNRunner", version="1",
        sane_space={"name": "sane-cnn", "kind": "cnn", "channels": 3, "layers": 2,
                    "kernel_size": 3, "pooling": "max",
                    "optimizer": {**_SANE_OPTIMIZER, "lr": 0.03, "epochs": 5}},
        loss_columns=_NETWORK_COLUMNS, check="ibdb.runners.compatibility:check_network",
        sizes="ibdb.runners.sizes:network_sizes", splitting=True,
        noise_version="2"),  # 2: the data orders are in the noise (1: held by a seed)
    SpaceKind(
        kind="torch", model=TorchSpace, runner="ibdb.runners.torch_space:TorchRunner",
        version="1",
        sane_space={"name": "sane-torch", "kind": "torch",
                    "model": "ibdb.runners.zoo:mlp",
                    "model_args": {"width": 8, "depth": 2, "n_outputs": 3},
                    "optimizer": _SANE_OPTIMIZER},
        loss_columns=_NETWORK_COLUMNS, check="ibdb.runners.torch_model:check_space",
        sizes="ibdb.runners.torch_model:space_sizes", splitting=True,
        facts="ibdb.runners.torch_model:space_facts"),
], default="gp")

HypothesisSpace = Annotated[SpaceSpec, SPACES.union()]
_SPACE_ADAPTER: TypeAdapter[Any] = TypeAdapter(HypothesisSpace)


def parse_space(data: dict[str, Any]) -> SpaceSpec:
    """Validate one hypothesis space given as a mapping (as in a spec's ``spaces`` list)."""
    return _SPACE_ADAPTER.validate_python(data)
